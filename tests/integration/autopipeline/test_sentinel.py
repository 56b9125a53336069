"""The auto-pipeline of a Sentinel master's client follows a promotion.

Its dedicated connection is re-made on error; the reconnect must ask the sentinels where the
master is now, not dial the address it had. Each test has a Sentinel set of its own (its
master is killed or failed over here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devtools.polling import eventually
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.autopipeline import AutoPipeline, auto_pipeline
from shared.connections import make_redis

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
    pytest.mark.slow,
]


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    local = LocalSentinel()
    try:  # not `with`: a start that times out must still kill what it started
        yield local.start()
    finally:
        local.stop()


def master_client(make_settings: Callable[..., StackSettings], local: LocalSentinel) -> Redis:
    sentinels = ",".join(f"{host}:{port}" for host, port in local.addresses)
    settings = make_settings(
        redis_mode="sentinel",
        redis_url="redis:///0",
        redis_sentinels=sentinels,
        redis_read_timeout=1,
        redis_max_retries=1,
    )
    client = make_redis(settings.redis_target, settings)
    assert isinstance(client, Redis)
    return client


async def _call(port: int, *args: object) -> Any:
    async with Redis(port=port, decode_responses=True) as direct:
        return await direct.execute_command(*args)  # type: ignore[no-untyped-call]  # unannotated


async def value_on(server: RedisServer, key: str) -> str | None:
    value: str | None = await _call(server.port, "GET", key)
    return value


async def is_replica(server: RedisServer) -> bool:
    return str((await _call(server.port, "ROLE"))[0]) == "slave"


async def once_it_answers(pipeline: AutoPipeline, *args: str, within: float) -> object:
    """The command's reply once it succeeds; the errors before it are the outage."""
    return await eventually(
        lambda: pipeline.execute(*args),
        f"the pipeline answering {args[0]}",
        within=within,
        ignoring=(RedisError,),
    )


async def test_a_killed_master_is_followed_to_the_promoted_replica(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel, key_prefix: str
) -> None:
    client = master_client(make_settings, sentinel_set)
    key = f"{key_prefix}:n"
    try:
        pipeline = auto_pipeline(client)
        assert isinstance(pipeline, AutoPipeline)
        assert await pipeline.execute("INCR", key) == 1
        old = await asyncio.to_thread(sentinel_set.kill_primary)
        with pytest.raises(RedisError):  # nothing answers until the promotion
            await pipeline.execute("INCR", key)
        new = await asyncio.to_thread(sentinel_set.wait_for_promotion, old)
        # The replica had the first INCR; the second reaches it, through the same pipeline.
        assert await once_it_answers(pipeline, "INCR", key, within=10) == 2
        assert await value_on(new, key) == "2"
        replies = await asyncio.gather(*(pipeline.execute("INCR", key) for _ in range(20)))
        assert sorted(replies) == list(range(3, 23))  # on one link again: shared round trips
        assert pipeline.batches < pipeline.commands
    finally:
        await client.aclose()


async def test_a_manual_failover_moves_the_pipeline_to_the_new_master(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel, key_prefix: str
) -> None:
    # SENTINEL FAILOVER demotes a live master: commands on it meet READONLY or a killed
    # connection, and either way the pipeline reconnects through the sentinels.
    client = master_client(make_settings, sentinel_set)
    key = f"{key_prefix}:n"
    try:
        pipeline = auto_pipeline(client)
        assert await pipeline.execute("INCR", key) == 1
        old = sentinel_set.master()
        await _call(
            sentinel_set.sentinels[0].port, "SENTINEL", "FAILOVER", sentinel_set.master_name
        )
        new = await asyncio.to_thread(sentinel_set.wait_for_promotion, old)
        # Demoted after the promotion, not with it.
        await eventually(lambda: is_replica(old), "the old master demoted", within=15)
        assert await once_it_answers(pipeline, "INCR", key, within=15) == 2
        assert await value_on(new, key) == "2"
    finally:
        await client.aclose()
