"""Auto-pipelining on a private redis-server: coalescing, error isolation, failures, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from devtools.redis_server import RedisServer
from shared.autopipeline import AutoPipeline, auto_pipeline

CONCURRENT = 50


async def _stats(redis: Redis) -> tuple[int, int]:
    """(read events the server processed, GET calls): a round trip is one read event."""
    info: dict[str, Any] = await redis.info("all")
    gets = info.get("cmdstat_get", {}).get("calls", 0)
    return int(info["total_reads_processed"]), int(gets)


@pytest.fixture
def server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


async def test_concurrent_commands_share_round_trips(server: RedisServer) -> None:
    redis, observer = Redis.from_url(server.url), Redis.from_url(server.url)
    try:
        await redis.set("k", b"v")
        pipeline = auto_pipeline(redis)
        assert auto_pipeline(redis) is pipeline  # one per client: every user coalesces
        await observer.ping()
        reads_before, gets_before = await _stats(observer)
        replies = await asyncio.gather(*(pipeline.execute("GET", "k") for _ in range(CONCURRENT)))
        reads_after, gets_after = await _stats(observer)
        plain_before = reads_after
        await asyncio.gather(*(redis.get("k") for _ in range(CONCURRENT)))
        plain_after, _ = await _stats(observer)
    finally:
        await redis.aclose()
        await observer.aclose()
    assert replies == [b"v"] * CONCURRENT
    assert gets_after - gets_before == CONCURRENT  # every command ran on the server...
    # ...in a handful of round trips (the first alone, the rest together), where plain
    # redis-py calls make one each. The INFO calls add one read each.
    assert pipeline.batches <= 3
    assert reads_after - reads_before <= 3 + 1
    assert plain_after - plain_before >= CONCURRENT


async def test_an_error_reply_fails_only_its_own_command(server: RedisServer) -> None:
    redis = Redis.from_url(server.url)
    try:
        await redis.set("text", "not a number")
        pipeline = AutoPipeline(redis)
        results = await asyncio.gather(
            pipeline.execute("SET", "a", "1"),
            pipeline.execute("EVALSHA", "0" * 40, 0),
            pipeline.execute("INCR", "text"),
            pipeline.execute("INCR", "a"),
            pipeline.execute("GET", "a"),
            return_exceptions=True,
        )
        assert await pipeline.execute("GET", "a") == b"2"  # the connection stayed in sync
    finally:
        await redis.aclose()
    assert results[0] == b"OK"
    assert isinstance(results[1], NoScriptError)  # the limiter's EVAL fallback relies on it
    assert isinstance(results[2], ResponseError)
    assert list(results[3:]) == [2, b"2"]
    assert pipeline.batches <= 3


async def test_batches_are_bounded(server: RedisServer) -> None:
    redis = Redis.from_url(server.url)
    try:
        pipeline = AutoPipeline(redis, max_batch=4)
        replies = await asyncio.gather(*(pipeline.execute("INCR", "n") for _ in range(21)))
        total = await redis.get("n")
    finally:
        await redis.aclose()
    assert sorted(replies) == list(range(1, 22))
    assert total == b"21"
    assert pipeline.largest_batch == 4
    assert pipeline.batches >= 6  # 1 alone + ceil(20 / 4)


async def test_a_command_cancelled_before_its_batch_is_not_sent(server: RedisServer) -> None:
    redis = Redis.from_url(server.url)
    try:
        pipeline = AutoPipeline(redis)
        first = asyncio.create_task(pipeline.execute("INCR", "c"))
        second = asyncio.create_task(pipeline.execute("INCR", "c"))
        third = asyncio.create_task(pipeline.execute("INCR", "c"))
        await asyncio.sleep(0)  # `first` is on the wire; the other two wait for it
        second.cancel()
        assert await first == 1
        assert await third == 2
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await redis.get("c") == b"2"
    finally:
        await redis.aclose()


async def test_a_dead_server_fails_the_batch_and_a_restart_heals(server: RedisServer) -> None:
    redis = Redis.from_url(server.url, socket_timeout=2, retry=Retry(NoBackoff(), 1))
    try:
        pipeline = auto_pipeline(redis)
        assert await pipeline.execute("SET", "k", "v") == b"OK"
        server.kill()
        results = await asyncio.gather(
            *(pipeline.execute("GET", "k") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results), results
        server.restart()
        assert await pipeline.execute("SET", "k", "again") == b"OK"
        assert (
            await asyncio.gather(*(pipeline.execute("GET", "k") for _ in range(10)))
            == [b"again"] * 10
        )
    finally:
        await redis.aclose()


async def test_a_one_connection_pool_is_not_starved(server: RedisServer) -> None:
    # The dedicated connection would be the pool's only one: plain calls instead.
    redis = Redis.from_url(server.url, max_connections=1)
    try:
        pipeline = AutoPipeline(redis)
        assert await pipeline.execute("SET", "k", "v") in (True, b"OK")
        assert await asyncio.wait_for(redis.get("k"), timeout=5) == b"v"
        assert pipeline.batches == 0
    finally:
        await redis.aclose()
