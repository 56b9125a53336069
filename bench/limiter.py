"""Our limiter vs `limits` 5.x, the seed's sorted set and a raw GET: checks/s and bytes of state.

    uv run --no-sync --with 'limits>=5,<6' python bench/limiter.py [--checks 12000] [--chunks 12]

`limits` declares `redis<8`, so it stays out of the project's lock: `--with` adds it to a
throw-away overlay on top of .venv (`--no-sync` leaves .venv as it is), and its async Redis
storage runs on our redis-py 8.1 with `implementation="redispy"` (its coredis default is
slower: docs/decisions/0029-benchmark-peers-outside-the-lock.md). Everything runs against
one private `redis-server` in this process, with the same client settings and the same
concurrency for every contender.

Contenders: ours (sliding-window counter, GCRA), `limits` moving window and sliding window
counter (`hit()` only — it needs a second round trip for the header figures that our single
call returns, so this is generous to it), the Go seed's sorted set (ZREMRANGEBYSCORE, ZADD,
ZCARD, EXPIRE in one MULTI pipeline), and three one-call ceilings: a raw redis-py GET, a raw
redis-py EVALSHA of a trivial script (`return 1`, same arguments as ours: the gap to it is
our script's cost, the gap from it to the GET is EVALSHA's own) and a raw GET through
`shared.autopipeline` (the client path our limiter uses: no pool checkout per call, and
concurrent calls share round trips — the gap to it is the script plus our wrapper).

Scenarios: sequential and 50 concurrent tasks; allow regime (limit out of reach, one
identifier) and reject regime (1 % admitted: 20 identifiers round-robin, each with a limit of
1 % of its checks, over an hour). Contenders take turns in short chunks on the same state, so
a burst of other work on the machine lands on all of them alike. Memory: MEMORY USAGE of all
the keys of one identifier after 10,000 allowed checks. Targets: sequential ≥ 1.3× moving
window and ≥ 1.1× sliding window counter; reject regime ≥ 3× both; ≤ 200 bytes per
identifier. Other helpers may be loading the 2 cores: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.redis_server import RedisServer
from shared.autopipeline import auto_pipeline
from shared.keys import Keys
from shared.limiter import DenialCache, Policy, RateLimiter
from shared.settings import RateAlgorithm

HOUR = 3600
TRIVIAL_SCRIPT = "return 1"
REJECT_IDS = 20
MEMORY_CHECKS = 10_000
Check = Callable[[str], Awaitable[Any]]
Factory = Callable[[int], Check]  # limit per hour -> check(identifier)


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    reject: bool


SCENARIOS = [
    Scenario("sequential, allow", 1, reject=False),
    Scenario("50 tasks, allow", 50, reject=False),
    Scenario("sequential, 99% rejected", 1, reject=True),
    Scenario("50 tasks, 99% rejected", 50, reject=True),
]


def contenders(redis: Redis, url: str) -> dict[str, Factory]:
    from limits import RateLimitItemPerHour
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    def ours(algorithm: RateAlgorithm) -> Factory:
        def make(limit: int) -> Check:
            limiter = RateLimiter(redis, Keys("ours"), denials=DenialCache())
            policy = Policy(algorithm.value, limit, HOUR, algorithm)
            return lambda ident: limiter.check(policy, ident)

        return make

    def peer(strategy: Any) -> Factory:
        # One storage (one connection pool) per strategy, as an application would hold it.
        limiter = strategy(RedisStorage(f"async+{url}", implementation="redispy"))

        def make(limit: int) -> Check:
            item = RateLimitItemPerHour(limit)
            return lambda ident: limiter.hit(item, ident)

        return make

    def sorted_set(limit: int) -> Check:
        members = itertools.count()

        async def check(ident: str) -> bool:
            key, now = f"seed:zset:{ident}", time.time()
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, 0, now - HOUR)  # type: ignore[unused-awaitable]  # queued
                pipe.zadd(key, {str(next(members)): now})  # type: ignore[unused-awaitable]  # queued
                pipe.zcard(key)  # type: ignore[unused-awaitable]  # queued
                pipe.expire(key, HOUR)  # type: ignore[unused-awaitable]  # queued
                _, _, count, _ = await pipe.execute()
            return int(count) <= limit

        return check

    def raw_get(limit: int) -> Check:
        del limit
        return lambda ident: redis.get(f"raw:get:{ident}")

    trivial = hashlib.sha1(TRIVIAL_SCRIPT.encode(), usedforsecurity=False).hexdigest()

    def raw_evalsha(limit: int) -> Check:
        # Loaded in main(); the same key and arguments as our check sends.
        return lambda ident: redis.evalsha(
            trivial, 1, f"raw:evalsha:{ident}", limit, HOUR * 1000, 1
        )

    def pipelined_get(limit: int) -> Check:
        del limit
        pipeline = auto_pipeline(redis)
        return lambda ident: pipeline.execute("GET", f"raw:get:{ident}")

    return {
        "ours sliding window": ours(RateAlgorithm.SLIDING_WINDOW),
        "ours GCRA": ours(RateAlgorithm.GCRA),
        "limits moving window": peer(MovingWindowRateLimiter),
        "limits sliding counter": peer(SlidingWindowCounterRateLimiter),
        "seed sorted set": sorted_set,
        "raw GET (ceiling)": raw_get,
        "raw EVALSHA return 1": raw_evalsha,
        "raw GET, auto-pipeline": pipelined_get,
    }


async def run(check: Check, identifiers: list[str], checks: int, concurrency: int) -> float:
    """Seconds for `checks` checks split across `concurrency` tasks."""
    queue = iter(range(checks))

    async def worker() -> None:
        for i in queue:
            await check(identifiers[i % len(identifiers)])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    factories: dict[str, Factory], scenario: Scenario, checks: int, chunks: int, tag: str
) -> dict[str, float]:
    """Checks/s of each contender; they take turns in `chunks` short runs on the same state."""
    if scenario.reject:
        ids = [f"s{tag}-{i}" for i in range(REJECT_IDS)]
        limit = max(1, checks // REJECT_IDS // 100)
    else:
        ids, limit = [f"s{tag}-0"], checks * 10
    checkers = {name: factory(limit) for name, factory in factories.items()}
    elapsed = dict.fromkeys(checkers, 0.0)
    for _ in range(chunks):
        for name, check in checkers.items():
            elapsed[name] += await run(check, ids, checks // chunks, scenario.concurrency)
    done = checks // chunks * chunks
    return {name: done / seconds for name, seconds in elapsed.items()}


async def state_bytes(redis: Redis, factories: dict[str, Factory], checks: int) -> dict[str, int]:
    """MEMORY USAGE of one identifier's state (all its keys) after `checks` admitted checks."""
    sizes: dict[str, int] = {}
    for n, (name, factory) in enumerate(factories.items()):
        if name.startswith("raw "):
            continue
        ident = f"memory-{n}"
        await run(factory(checks * 10), [ident], checks, 50)
        total = 0
        async for key in redis.scan_iter(match=f"*{ident}*"):
            total += int(await redis.memory_usage(key, samples=0) or 0)
        sizes[name] = total
    return sizes


def report(
    results: dict[str, dict[str, float]], sizes: dict[str, int], checks: int, memory_checks: int
) -> None:
    scenarios = list(results)
    names = list(results[scenarios[0]])
    width = max(len(s) for s in scenarios) + 2
    print(f"\nchecks/s ({checks:,} checks per contender and scenario, in turns)")
    print(f"{'':42}" + "".join(f"{s:>{width}}" for s in scenarios))
    for name in names:
        print(f"{name:42}" + "".join(f"{results[s][name]:>{width},.0f}" for s in scenarios))
    print("\nratios")
    for ours in ("ours sliding window", "ours GCRA"):
        for other in (
            "limits moving window",
            "limits sliding counter",
            "raw GET (ceiling)",
            "raw EVALSHA return 1",
            "raw GET, auto-pipeline",
        ):
            label = f"{ours.removeprefix('ours ')} / {other.removesuffix(' (ceiling)')}"
            cells = "".join(
                f"{results[s][ours] / results[s][other]:>{width}.2f}" for s in scenarios
            )
            print(f"{label:42}" + cells)
    print(f"\nbytes of one identifier's state after {memory_checks:,} allowed checks")
    for name, size in sizes.items():
        print(f"  {name:32}{size:>12,}")
    record_targets(results, sizes, memory_checks)


def record_targets(
    results: dict[str, dict[str, float]], sizes: dict[str, int], memory_checks: int
) -> None:
    """The figures the limiter is judged by, for each of our algorithms: sequential allow
    against each `limits` strategy, the rejected regime against the faster of the two (≥ 3×
    both), and the bytes of one identifier's state (an absolute target)."""
    peers = ("limits moving window", "limits sliding counter")
    allow = results["sequential, allow"]
    for ours in ("ours sliding window", "ours GCRA"):
        algorithm = ours.removeprefix("ours ")
        for peer, bound in zip(peers, ("1.3", "1.1"), strict=True):
            record(
                "limiter",
                figure=f"{algorithm}, sequential allow, ÷ {peer}",
                value=allow[ours],
                unit="checks/s",
                baseline=f"{peer} {allow[peer]:.0f} checks/s",
                ratio=allow[ours] / allow[peer],
                target=f">= {bound}",
            )
        for scenario in ("sequential, 99% rejected", "50 tasks, 99% rejected"):
            rates = results[scenario]
            faster = max(peers, key=lambda name: rates[name])
            record(
                "limiter",
                figure=f"{algorithm}, {scenario}, ÷ the faster limits strategy",
                value=rates[ours],
                unit="checks/s",
                baseline=f"{faster} {rates[faster]:.0f} checks/s",
                ratio=rates[ours] / rates[faster],
                target=">= 3",
            )
        record(
            "limiter",
            figure=f"{algorithm}, bytes of one identifier's state (absolute target)",
            value=sizes[ours],
            unit="B",
            baseline=(
                f"after {memory_checks:,} allowed checks; limits moving window "
                f"{sizes[peers[0]]:,} B, sliding counter {sizes[peers[1]]:,} B"
            ),
            ratio=sizes[ours],
            target="<= 200",
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checks", type=int, default=12_000, help="checks per contender and scenario"
    )
    parser.add_argument("--chunks", type=int, default=12, help="turns each contender takes")
    args = parser.parse_args()
    with RedisServer() as server:
        redis = Redis.from_url(server.url)
        try:
            await redis.script_load(TRIVIAL_SCRIPT)
            factories = contenders(redis, server.url)
            for factory in factories.values():  # open every pool's 50 connections first
                await run(factory(10**9), ["warm"], 500, 50)
            results = {}
            for n, scenario in enumerate(SCENARIOS):
                results[scenario.name] = await measure(
                    factories, scenario, args.checks, args.chunks, tag=str(n)
                )
            sizes = await state_bytes(redis, factories, MEMORY_CHECKS)
        finally:
            await redis.aclose()
    report(results, sizes, args.checks, MEMORY_CHECKS)


if __name__ == "__main__":
    asyncio.run(main())
