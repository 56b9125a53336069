"""Drain N user events: the invalidator's consumer vs a raw redis-py loop, same run, same Redis.

Both drain the same stream, each in a fresh consumer group created at id 0, alternating
rounds; the figure of each is the median of its rounds.

- raw: `XREADGROUP COUNT 100`, `orjson.loads` of each entry, one pipeline of
  `DEL value lease` + `INCR generation` per event, one `XACK` per batch — the baseline.
- raw-1-incr: the same loop with one INCR per batch, as the invalidator does — so the
  second ratio isolates what the invalidator does beyond purging: validating every envelope,
  metrics, DLQ bookkeeping and, above all (profiled), the PUBLISH of one notice per event
  that no raw loop sends.
- invalidator: `shared.streams.StreamConsumer` + `invalidator.purge.Purger` (what the service
  runs): pydantic validation of every envelope, one purge pipeline per batch, one PUBLISH per
  event on the invalidation channel, the XACK, metrics.

Usage: .venv/bin/python bench/invalidator_drain.py [--events 50000] [--rounds 3]
(REDIS_URL to use a running server; else a private redis-server is started.) Note that other
work on this 2-core machine makes single figures noisy; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as `python bench/<file>.py`: the repository root (devtools) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devtools.redis_server import RedisServer
from invalidator.config import InvalidatorSettings
from invalidator.metrics import InvalidatorMetrics
from invalidator.purge import Purger
from shared.events import (
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.keys import Keys
from shared.settings import load_settings
from shared.streams import ConsumerConfig, StreamConsumer

BATCH = 100
TIME_LIMIT = 120.0  # seconds per drain: a bound, far above what a drain takes


def make_event(rng: random.Random, users: list[uuid.UUID]) -> bytes:
    uid = rng.choice(users)
    roll = rng.random()
    event: Any
    if roll < 0.25:
        payload = UserCreatedPayload(user_id=uid, email="u@example.com", name="U")
        event = UserCreated(source="bench", payload=payload)
    elif roll < 0.75:
        event = UserUpdated(source="bench", payload=UserUpdatedPayload(user_id=uid))
    elif roll < 0.9:
        event = UserDeleted(source="bench", payload=UserDeletedPayload(user_id=uid))
    else:
        payload_pw = UserPasswordChangedPayload(user_id=uid)
        event = UserPasswordChanged(source="bench", payload=payload_pw)
    return bytes(event.to_json())


async def publish(redis: Redis, stream: str, count: int) -> None:
    rng = random.Random(7)
    users = [uuid.uuid4() for _ in range(10_000)]
    for start in range(0, count, 1000):
        pipe = redis.pipeline(transaction=False)
        for _ in range(min(1000, count - start)):
            pipe.xadd(stream, {"data": make_event(rng, users)})  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()


async def drain_raw(
    redis: Redis, keys: Keys, group: str, count: int, *, coalesce: bool = False
) -> float:
    stream, gen = keys.user_events(), keys.user_list_gen()
    await redis.xgroup_create(stream, group, id="0")
    done, started = 0, time.perf_counter()
    while done < count and time.perf_counter() - started < TIME_LIMIT:
        reply: Any = await redis.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=100)
        entries = reply[0][1] if reply else []
        pipe = redis.pipeline(transaction=False)
        for _, fields in entries:
            event = orjson.loads(fields[b"data"])
            if event["type"] != "user.created":
                uid = event["payload"]["user_id"]
                pipe.delete(keys.user(uid), keys.user_lease(uid))  # type: ignore[unused-awaitable]  # queued
            if not coalesce:
                pipe.incr(gen)  # type: ignore[unused-awaitable]  # queued
        if coalesce and entries:
            pipe.incr(gen)  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()
        await redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    return time.perf_counter() - started


async def drain_invalidator(redis: Redis, keys: Keys, group: str, count: int) -> float:
    settings = load_settings(
        InvalidatorSettings, _env_file=None, key_prefix=keys.prefix, stream_block="100ms"
    )
    config = ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group=group,
        consumer="bench",
        dead_letters=keys.dead_letters(),
    )
    metrics = InvalidatorMetrics.create(CollectorRegistry())
    consumer = StreamConsumer(redis, config, Purger(redis, keys, metrics), metrics.stream)
    started = time.perf_counter()
    await consumer.prepare()  # creates the group at 0, as the service does at start
    handled = 0
    while handled < count and time.perf_counter() - started < TIME_LIMIT:
        handled += await consumer.read_new()
    elapsed = time.perf_counter() - started
    pending = (await redis.xpending(keys.user_events(), group))["pending"]
    if handled != count or pending:
        raise SystemExit(f"invalidator drained {handled}/{count}, {pending} pending")
    return elapsed


async def main(events: int, rounds: int, url: str) -> None:
    redis = Redis.from_url(url)
    keys = Keys(f"bench{uuid.uuid4().hex[:6]}")
    await publish(redis, keys.user_events(), events)
    results: dict[str, list[float]] = {"raw": [], "raw-1-incr": [], "invalidator": []}
    drains: dict[str, Callable[[Redis, Keys, str, int], Awaitable[float]]] = {
        "raw": drain_raw,
        "raw-1-incr": functools.partial(drain_raw, coalesce=True),
        "invalidator": drain_invalidator,
    }
    for n in range(rounds):
        for name, drain in drains.items():
            elapsed = await drain(redis, keys, f"{name}{n}", events)
            results[name].append(events / elapsed)
            print(f"round {n + 1} {name:12s} {events / elapsed:10,.0f} events/s")
    raw, raw1, inv = (statistics.median(results[k]) for k in drains)
    print(f"\nraw redis-py loop     {raw:10,.0f} events/s (median of {rounds})")
    print(f"raw, 1 INCR per batch {raw1:10,.0f} events/s (median of {rounds})")
    print(f"invalidator consumer  {inv:10,.0f} events/s (median of {rounds})")
    print(f"ratio invalidator/raw {inv / raw:10.2f}x   (target >= 0.80x)")
    print(f"ratio invalidator/raw with the same single INCR per batch {inv / raw1:.2f}x")
    await redis.delete(keys.user_events(), keys.user_list_gen())
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if url := os.environ.get("REDIS_URL"):
        asyncio.run(main(args.events, args.rounds, url))
    else:
        with RedisServer() as server:
            asyncio.run(main(args.events, args.rounds, server.url))
