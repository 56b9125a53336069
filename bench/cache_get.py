"""Our cache's get-hit vs a raw redis-py GET + orjson decode, sequential, same client and key.

`Cache.get` adds the breaker check, hit/miss counters and a latency histogram to the raw
call; this measures what that costs. The two alternate in short chunks so drift on a shared
2-core machine hits both alike; total ops over total time of each is compared. Target: >= 0.9x.

    .venv/bin/python bench/cache_get.py [--ops 40000] [--chunk 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.redis_server import RedisServer
from shared.cache import Cache, CacheMetrics
from shared.keys import Keys

USER = {
    "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "created_at": "2026-11-25T10:00:00.123456Z",
    "updated_at": "2026-11-25T10:00:00.123456Z",
}


async def timed(get: Callable[[], Awaitable[Any]], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        await get()
    return time.perf_counter() - started


async def run(url: str, ops: int, chunk: int) -> tuple[float, float]:
    client = Redis.from_url(url)
    cache = Cache(client, metrics=CacheMetrics(CollectorRegistry()))
    key = Keys("bench").user(USER["id"])
    await cache.set(key, USER, ttl=600)

    async def ours() -> Any:
        return await cache.get(key)

    async def raw() -> Any:
        data = await client.get(key)
        return orjson.loads(data) if data is not None else None

    assert await ours() == await raw() == USER
    await timed(raw, chunk)  # warm the connection and the code paths
    spent = {"ours": 0.0, "raw": 0.0}
    for _ in range(ops // chunk):
        # Short alternating chunks: CPU noise from other work lands on both sides alike.
        spent["raw"] += await timed(raw, chunk)
        spent["ours"] += await timed(ours, chunk)
    await client.aclose()
    done = (ops // chunk) * chunk
    return done / spent["ours"], done / spent["raw"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=40_000)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args()
    with RedisServer() as server:
        ours, raw = asyncio.run(run(server.url, args.ops, args.chunk))
    print(f"raw redis-py GET + orjson.loads : {raw:>9.0f} ops/s")
    print(f"shared.cache.Cache.get (hit)    : {ours:>9.0f} ops/s")
    print(f"ratio ours / raw                : {ours / raw:.2f}x (target >= 0.9x)")
    record(
        "cache_get",
        figure="Cache.get on a hit, sequential",
        value=ours,
        unit="ops/s",
        baseline=f"raw redis-py GET + orjson.loads {raw:.0f} ops/s",
        ratio=ours / raw,
        target=">= 0.9",
    )


if __name__ == "__main__":
    main()
