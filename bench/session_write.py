"""Session writes with and without waiting for a replica: what `WAIT 1` adds to create/rotate.

`RedisSessionStore.create` and `.rotate` (what `POST /v1/sessions` and `/rotate` do behind
HTTP) with `SESSION_REPLICA_WAIT` off (the baseline) and on (250 ms), on a primary with one
replica (the standalone / Sentinel code path: a pipeline of EVALSHA and WAIT) and on a local
cluster of 3 primaries with a replica each (EVALSHA and WAIT on one connection of the key's
primary). Off and on alternate in short chunks on the same client and servers, so noise
from other work lands on both. Sequential latency (p50, p99 per call) and, at `--tasks`
concurrent callers, throughput. Every waited write must come back `confirmed`.

    .venv/bin/python bench/session_write.py [--ops 2000] [--chunk 100] [--tasks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.settings import StackSettings
from session_service.adapters.store import RedisSessionStore
from shared.connections import RedisClient, make_redis
from shared.keys import Keys
from shared.settings import load_settings

DATA = {"role": "member", "locale": "en-GB", "mfa": True}
WAIT_MS = 250


def store(client: RedisClient, wait_ms: int) -> RedisSessionStore:
    return RedisSessionStore(
        client, Keys("bench"), idle_ms=3_600_000, absolute_ms=86_400_000,
        max_per_user=10, replica_wait_ms=wait_ms,
    )  # fmt: skip


async def create_then_rotate(sessions: RedisSessionStore, outcomes: Counter[str]) -> list[float]:
    """One create and one rotate of a fresh user's session: their durations in seconds."""
    started = time.perf_counter()
    created = await sessions.create(str(uuid.uuid4()), DATA)
    middle = time.perf_counter()
    rotated = await sessions.rotate(created.issued.session_id)
    ended = time.perf_counter()
    outcomes.update([created.replication.value, rotated.replication.value])
    return [middle - started, ended - middle]


async def sequential(
    client: RedisClient, ops: int, chunk: int
) -> dict[str, tuple[list[float], Counter[str]]]:
    contenders = {"off": store(client, 0), "on": store(client, WAIT_MS)}
    spent: dict[str, tuple[list[float], Counter[str]]] = {
        name: ([], Counter()) for name in contenders
    }
    for sessions in contenders.values():  # warm both paths (and the replica counts)
        await create_then_rotate(sessions, Counter())
    for _ in range(max(1, ops // chunk)):  # not polling: alternating chunks of load
        for name, sessions in contenders.items():
            times, outcomes = spent[name]
            for _ in range(chunk // 2):  # not polling: a chunk of load
                times.extend(await create_then_rotate(sessions, outcomes))
    return spent


async def concurrent(client: RedisClient, wait_ms: int, ops: int, tasks: int) -> float:
    """Creates + rotates per second with `tasks` callers."""
    sessions, outcomes = store(client, wait_ms), Counter[str]()
    per_task = max(1, ops // (2 * tasks))

    async def caller() -> None:
        for _ in range(per_task):  # not polling: a caller's load
            await create_then_rotate(sessions, outcomes)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    return 2 * per_task * tasks / (time.perf_counter() - started)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else values[0]


async def measure(label: str, client: RedisClient, ops: int, chunk: int, tasks: int) -> None:
    try:
        spent = await sequential(client, ops, chunk)
        rates = {"off": 0.0, "on": 0.0}
        for _ in range(2):  # not polling: two rounds in turns, best of each
            for name, wait_ms in (("off", 0), ("on", WAIT_MS)):
                rates[name] = max(rates[name], await concurrent(client, wait_ms, ops, tasks))
    finally:
        await client.aclose()
    off, on = spent["off"][0], spent["on"][0]
    print(f"{label}")
    for name, times in (("WAIT off", off), (f"WAIT 1 {WAIT_MS} on", on)):
        print(
            f"  {name:<16} p50 {quantile(times, 0.5) * 1e6:>7.0f} us  "
            f"p99 {quantile(times, 0.99) * 1e6:>7.0f} us  ({len(times)} calls)"
        )
    extra = (quantile(on, 0.5) - quantile(off, 0.5)) * 1e6
    extra99 = (quantile(on, 0.99) - quantile(off, 0.99)) * 1e6
    print(f"  WAIT adds        p50 {extra:>7.0f} us  p99 {extra99:>7.0f} us")
    print(f"  outcomes (on)    {dict(spent['on'][1])}")
    print(
        f"  {tasks} tasks       off {rates['off']:>7.0f} writes/s  on {rates['on']:>7.0f} "
        f"writes/s  ({rates['on'] / rates['off']:.2f}x)"
    )
    record_figures(label.partition(" (")[0], spent, rates, tasks)


def record_figures(
    topology: str,
    spent: dict[str, tuple[list[float], Counter[str]]],
    rates: dict[str, float],
    tasks: int,
) -> None:
    """What the wait costs (no target: decision 0033 accepts it), and the one thing the
    script requires of it: every waited write `confirmed`."""
    off, on = (quantile(spent[name][0], 0.5) * 1e6 for name in ("off", "on"))
    record(
        "session_write",
        figure=f"{topology}: create or rotate p50, WAIT on",
        value=on,
        unit="µs",
        baseline=f"WAIT off p50 {off:.0f} µs (the wait adds {on - off:.0f} µs)",
        ratio=on / off,
        target=None,
    )
    record(
        "session_write",
        figure=f"{topology}: writes/s at {tasks} tasks, WAIT on",
        value=rates["on"],
        unit="writes/s",
        baseline=f"WAIT off {rates['off']:.0f} writes/s",
        ratio=rates["on"] / rates["off"],
        target=None,
    )
    outcomes = spent["on"][1]
    total = sum(outcomes.values())
    record(
        "session_write",
        figure=f"{topology}: waited writes confirmed by a replica",
        value=outcomes["confirmed"],
        unit="writes",
        baseline=f"every sequential waited write ({total}): {dict(outcomes)}",
        ratio=outcomes["confirmed"] / total,
        target=">= 1",
    )


def settings(**values: Any) -> StackSettings:
    return load_settings(StackSettings, _env_file=None, app_env="test", **values)


async def run(ops: int, chunk: int, tasks: int, only: Callable[[str], bool]) -> None:
    if only("replica"):
        with LocalSentinel() as pair:
            pair_client = make_redis(pair.master().url, settings())
            label = "primary + 1 replica (standalone/Sentinel path)"
            await measure(label, pair_client, ops, chunk, tasks)
    if only("cluster"):
        with LocalCluster() as cluster:
            config = settings(redis_mode="cluster", redis_url=cluster.url)
            cluster_client = make_redis(config.redis_target, config)
            await measure("cluster, 3 primaries + 3 replicas", cluster_client, ops, chunk, tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--only", choices=["replica", "cluster"])
    args = parser.parse_args()

    def only(name: str) -> bool:
        return args.only in (None, name)

    asyncio.run(run(args.ops, args.chunk, args.tasks, only))


if __name__ == "__main__":
    main()
