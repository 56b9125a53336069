"""Auto-pipelining on a private redis-server: coalescing, error isolation, failures, bounds."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import uvloop
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from shared.autopipeline import AutoPipeline, auto_pipeline

CONCURRENT = 50


async def _stats(redis: Redis) -> tuple[int, int]:
    """(read events the server processed, GET calls): a round trip is one read event."""
    info: dict[str, Any] = await redis.info("all")
    gets = info.get("cmdstat_get", {}).get("calls", 0)
    return int(info["total_reads_processed"]), int(gets)


async def test_runs_on_each_loop(request: pytest.FixtureRequest) -> None:
    on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert on_uvloop == request.node.name.endswith("[uvloop]")


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


@pytest.mark.parametrize("connected", [False, True], ids=["connecting", "connected"])
async def test_a_command_cancelled_before_its_batch_is_not_sent(
    server: RedisServer, connected: bool
) -> None:
    redis = Redis.from_url(server.url)
    try:
        pipeline = AutoPipeline(redis)
        if connected:
            assert await pipeline.execute("PING") == b"PONG"
        sent = pipeline.commands
        first = asyncio.create_task(pipeline.execute("INCR", "c"))
        second = asyncio.create_task(pipeline.execute("INCR", "c"))
        third = asyncio.create_task(pipeline.execute("INCR", "c"))
        # Not a wait for time: one turn of the loop, in which each task runs to its first
        # suspension (no reply can arrive before the next turn). Connected, `first` is on the
        # wire and the other two are queued behind it; connecting, all three wait for the
        # connection.
        await asyncio.sleep(0)
        assert pipeline.commands == sent + (1 if connected else 0)
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


async def test_a_hung_server_times_out_the_batch_and_heals(server: RedisServer) -> None:
    # SIGSTOP: the socket stays open but nothing answers. The read timeout fails what is on
    # the wire and what queued behind it, without a timer per command; SIGCONT heals.
    redis = Redis.from_url(server.url, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    assert server.pid is not None
    try:
        pipeline = auto_pipeline(redis)
        assert await pipeline.execute("SET", "k", "v") == b"OK"
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(pipeline.execute("GET", "k") for _ in range(5)), return_exceptions=True
            )
            waited = time.monotonic() - started
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert 0.25 <= waited < 2.5  # the timeout, not forever (and not at once)
        assert await pipeline.execute("GET", "k") == b"v"  # a fresh connection, in step
    finally:
        await redis.aclose()


async def test_the_watchdog_does_not_fire_on_a_busy_healthy_connection(
    server: RedisServer,
) -> None:
    # Commands for three timeouts' worth of time, one after another: every batch is
    # answered well within the timeout, so none may fail however long the run.
    redis = Redis.from_url(server.url, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        pipeline = auto_pipeline(redis)
        deadline, done = time.monotonic() + 0.6, 0
        while time.monotonic() < deadline:  # not polling: commands for 0.6 s
            assert await pipeline.execute("INCR", "n") == done + 1
            done += 1
        # not a wait: idle past the timeout; with nothing pending, nothing fails
        await asyncio.sleep(0.3)
        assert await pipeline.execute("INCR", "n") == done + 1
    finally:
        await redis.aclose()


async def test_a_connection_killed_while_idle_is_replaced(server: RedisServer) -> None:
    redis, admin = Redis.from_url(server.url), Redis.from_url(server.url)
    try:
        pipeline = auto_pipeline(redis)
        await pipeline.execute("CLIENT", "SETNAME", "autopipeline")
        assert await admin.client_kill_filter(_type=None, skipme=True) >= 1  # not admin
        # Round trips on another connection let the loop read the close on the idle one.
        await eventually(lambda: _gone(admin, "autopipeline"), "the server closed it")
        assert await pipeline.execute("SET", "k", "v") == b"OK"
        assert await pipeline.execute("GET", "k") == b"v"
    finally:
        await redis.aclose()
        await admin.aclose()


async def _gone(admin: Redis, name: str) -> bool:
    return name not in [c.get("name") for c in await admin.client_list()]


async def _blocked_in_blpop(admin: Redis) -> None:
    async def blocked() -> bool:
        return any(c.get("cmd") == "blpop" for c in await admin.client_list())

    await eventually(blocked, "a client blocked in BLPOP", within=5, every=0.01)


async def test_a_connection_killed_mid_command_fails_it_and_heals(server: RedisServer) -> None:
    redis = Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
    admin = Redis.from_url(server.url)
    try:
        pipeline = auto_pipeline(redis)
        blocked = asyncio.create_task(pipeline.execute("BLPOP", "nothing", 5))
        queued = asyncio.create_task(pipeline.execute("GET", "k"))
        await _blocked_in_blpop(admin)
        await admin.client_kill_filter(_type=None, skipme=True)
        results = await asyncio.gather(blocked, queued, return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert await pipeline.execute("SET", "k", "after") == b"OK"
        assert await pipeline.execute("GET", "k") == b"after"
    finally:
        await redis.aclose()
        await admin.aclose()


async def test_a_killed_command_is_retried_under_the_clients_policy(server: RedisServer) -> None:
    # One retry allowed: the command that was on the killed connection is sent again.
    redis = Redis.from_url(server.url, retry=Retry(NoBackoff(), 1))
    admin = Redis.from_url(server.url)
    try:
        pipeline = auto_pipeline(redis)
        blocked = asyncio.create_task(pipeline.execute("BLPOP", "list", 5))
        await _blocked_in_blpop(admin)
        await admin.client_kill_filter(_type=None, skipme=True)
        await _blocked_in_blpop(admin)  # the retry, on the new connection
        await admin.rpush("list", "x")
        assert await asyncio.wait_for(blocked, 5) == [b"list", b"x"]
    finally:
        await redis.aclose()
        await admin.aclose()


async def test_decoded_clients_get_decoded_replies(server: RedisServer) -> None:
    redis = Redis.from_url(server.url, decode_responses=True)
    try:
        pipeline = auto_pipeline(redis)
        await pipeline.execute("SET", "k", "välue")
        assert await pipeline.execute("GET", "k") == "välue"
        with pytest.raises(ResponseError):
            await pipeline.execute("INCR", "k")
    finally:
        await redis.aclose()


async def test_closing_the_client_closes_the_dedicated_connection(server: RedisServer) -> None:
    redis, admin = Redis.from_url(server.url), Redis.from_url(server.url)
    try:
        pipeline = auto_pipeline(redis)
        await pipeline.execute("CLIENT", "SETNAME", "dedicated")
        names = [c.get("name") for c in await admin.client_list()]
        assert "dedicated" in names
        await asyncio.wait_for(redis.aclose(), timeout=5)  # and does not hang on it
        await eventually(lambda: _gone(admin, "dedicated"), "the dedicated connection closed")
    finally:
        await admin.aclose()


async def test_a_dropped_client_and_its_pipeline_are_freed(server: RedisServer) -> None:
    redis = Redis.from_url(server.url)
    pipeline = auto_pipeline(redis)
    assert await pipeline.execute("PING") == b"PONG"
    await redis.aclose()
    gone = weakref.ref(redis)
    del redis, pipeline
    gc.collect()
    assert gone() is None  # the registry does not keep clients alive


async def test_reconnecting_makes_one_attempt_per_retry_not_nested_retries(
    server: RedisServer,
) -> None:
    # redis-py's `connect()` retries under the client's policy, and the command's own retry
    # loop runs the same policy around it: (retries + 1)² attempts per failed command. The
    # auto-pipeline connects once per attempt of its own loop. A listener that accepts and
    # hangs up stands in for a Redis that is sick, counting the attempts.
    redis = Redis.from_url(server.url, retry=Retry(NoBackoff(), 3))
    accepted = 0

    def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    try:
        pipeline = auto_pipeline(redis)
        assert await pipeline.execute("PING") == b"PONG"
        server.kill()
        listener = await asyncio.start_server(hang_up, "127.0.0.1", server.port)
        try:
            with pytest.raises(RedisConnectionError):
                await pipeline.execute("GET", "k")
        finally:
            listener.close()
            await listener.wait_closed()
    finally:
        await redis.aclose()
    assert accepted == 4  # the first try and 3 retries, each one connection
