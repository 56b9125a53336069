"""Invalidation lag at a steady rate: occurred_at → purge done, invalidator vs a raw loop.

A publisher XADDs user.updated events at a steady RATE for a few seconds (occurred_at is
stamped just before each XADD). "Purge done" is when this script receives the event's
notice on `app:cache:invalidated`: the invalidator publishes it from the same script call
that follows the DELs, so the figure is the purge plus one pub/sub hop (slightly
pessimistic). Both consumers run as their own processes, one after the other, same Redis:

- invalidator: `uvicorn invalidator.main:create_app --factory` (the real service);
- raw: a redis-py loop (`XREADGROUP BLOCK COUNT 100`, orjson, one pipeline of DEL + INCR +
  PUBLISH per event, one XACK per batch) — the baseline.

Usage: .venv/bin/python bench/invalidator_lag.py [--rate 1000] [--seconds 3]
Other work on this 2-core machine shows up in the tail: read p99 next to the raw one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# Run as `python bench/<file>.py`: the repository root (devtools) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bench.results import record
from devtools.launcher import Launcher, Process, ServiceProcess
from devtools.polling import eventually
from devtools.redis_server import RedisServer
from shared.events import UserUpdated, UserUpdatedPayload
from shared.keys import INVALIDATOR_GROUP, Keys


async def raw_consumer(url: str, prefix: str) -> None:
    """The baseline loop (run in its own process via --raw-consumer)."""
    redis, keys = Redis.from_url(url), Keys(prefix)
    stream, gen, channel = keys.user_events(), keys.user_list_gen(), keys.cache_invalidated()
    await redis.xgroup_create(stream, INVALIDATOR_GROUP, id="0", mkstream=True)
    while True:
        reply: Any = await redis.xreadgroup(
            INVALIDATOR_GROUP, "raw", {stream: ">"}, count=100, block=1000
        )
        entries = reply[0][1] if reply else []
        if not entries:
            continue
        pipe = redis.pipeline(transaction=False)
        for _, fields in entries:
            event = orjson.loads(fields[b"data"])
            uid = event["payload"]["user_id"]
            pipe.delete(keys.user(uid), keys.user_lease(uid))  # type: ignore[unused-awaitable]  # queued
            pipe.incr(gen)  # type: ignore[unused-awaitable]  # queued
            notice = orjson.dumps({"keys": [], "event_id": event["id"]})
            pipe.publish(channel, notice)  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()
        await redis.xack(stream, INVALIDATOR_GROUP, *[entry_id for entry_id, _ in entries])


def start_consumer(launcher: Launcher, kind: str, url: str, prefix: str) -> Process:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": url,
        "KEY_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
        "STREAM_STATE_DIR": str(launcher.root / "state"),
    }
    if kind == "raw":
        command = [sys.executable, str(Path(__file__).resolve()), "--raw-consumer", url, prefix]
        return launcher.start("raw-consumer", command, env)
    return launcher.start_service(
        "invalidator.main:create_app", env, name="invalidator", wait=False
    )


async def wait_ready(redis: Redis, keys: Keys, consumer: Process) -> None:
    health = consumer.url if isinstance(consumer, ServiceProcess) else None
    async with httpx.AsyncClient(timeout=1) as client:

        async def ready() -> bool:
            consumer.ensure_alive()
            return await _ready(client, redis, keys, health)

        await eventually(ready, f"the {consumer.name} consumer is ready", within=30, every=0.05)
    # Not a wait for an event: time for the consumer to park in its blocking read.
    await asyncio.sleep(0.3)


async def _ready(client: httpx.AsyncClient, redis: Redis, keys: Keys, health: str | None) -> bool:
    try:
        if health is not None:
            return (await client.get(f"{health}/health")).status_code == 200
        # The raw loop creates its group, then blocks in XREADGROUP (Redis 7.0 registers the
        # consumer only once it is served, so the group is what can be seen).
        return bool(await redis.xinfo_groups(keys.user_events()))
    except (httpx.HTTPError, ResponseError):  # not up yet: no socket, no group
        return False


async def measure(redis: Redis, keys: Keys, rate: int, seconds: float) -> list[float]:
    received: dict[str, float] = {}
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    complete = asyncio.Event()
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.cache_invalidated())

    async def listen() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                received[orjson.loads(message["data"])["event_id"]] = time.time()
                if len(received) >= total:
                    complete.set()

    listener = asyncio.create_task(listen())
    started = time.perf_counter()
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event = UserUpdated(source="bench", payload=UserUpdatedPayload(user_id=uuid.uuid4()))
        sent[str(event.id)] = event.occurred_at.timestamp()
        await redis.xadd(keys.user_events(), {"data": event.to_json()})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), 10)
    listener.cancel()
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    if len(received) < total:
        print(f"  warning: {total - len(received)} notices never arrived")
    return [(received[i] - sent[i]) * 1000 for i in sent if i in received]


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


async def run(url: str, rate: int, seconds: float) -> None:
    redis = Redis.from_url(url)
    results: dict[str, list[float]] = {}
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="lagbench-")))
    for kind in ("raw", "invalidator"):
        keys = Keys(f"lag{uuid.uuid4().hex[:6]}")
        consumer = start_consumer(launcher, kind, url, keys.prefix)
        try:
            await wait_ready(redis, keys, consumer)
            results[kind] = await measure(redis, keys, rate, seconds)
        finally:
            consumer.stop()
        lags = results[kind]
        print(
            f"{kind:12s} {len(lags):5d} events at {rate}/s: p50 {statistics.median(lags):6.2f} ms"
            f"  p90 {quantile(lags, 0.9):6.2f} ms  p99 {quantile(lags, 0.99):6.2f} ms"
            f"  max {max(lags):6.2f} ms"
        )
    raw99, inv99 = (quantile(results[k], 0.99) for k in ("raw", "invalidator"))
    raw50, inv50 = (statistics.median(results[k]) for k in ("raw", "invalidator"))
    print(f"ratio invalidator/raw: p50 {inv50 / raw50:.2f}x, p99 {inv99 / raw99:.2f}x")
    print(f"invalidator p99 {inv99:.2f} ms (target <= 5 ms): {'met' if inv99 <= 5 else 'MISSED'}")
    record(
        "invalidator_lag",
        figure="occurred_at → notice, p99 (absolute target)",
        value=inv99,
        unit="ms",
        baseline=f"raw consumer p99 {raw99:.2f} ms",
        ratio=inv99,
        target="<= 5",
    )
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--raw-consumer", nargs=2, metavar=("URL", "PREFIX"))
    args = parser.parse_args()
    if args.raw_consumer:
        asyncio.run(raw_consumer(*args.raw_consumer))
        return
    if url := os.environ.get("REDIS_URL"):
        asyncio.run(run(url, args.rate, args.seconds))
        return
    with RedisServer() as server:
        asyncio.run(run(server.url, args.rate, args.seconds))


if __name__ == "__main__":
    main()
