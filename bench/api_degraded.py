"""GET /v1/users/{id} while the api's Redis is dead, against the database-only read.

The claim (docs/architecture.md, "When something fails"): with Redis killed mid-run, reads still
answer 200 from the database and their p99 stays under 2x the database-only p99, because the
circuit breaker stops paying the Redis failure (connection refused, then the client's retries
with backoff) on every request; after Redis returns, reads are HITs again by themselves.

The baseline, "database-only", is the same api process (middleware, routing, DB pool, query,
JSON encoding, uvicorn flags) with `UserCache.user` replaced by the database load + encode:
exactly the work a read does when the cache is skipped, and no Redis on the request path (the
rate limiter is off there: it would need a Redis). Two configurations that look like a
baseline are not one: a live Redis with the key always missing pays GET + lease SET NX + the
store script on top of the database (it flatters the ratio), and an api started with Redis
already dead *is* the degraded path (a ratio of 1 by construction).

In one run, each server a `uvicorn --workers 1 --loop uvloop --http httptools` process on
127.0.0.1 (bench/api_read.py's helpers), one database (a fresh PostgreSQL database on
127.0.0.1:5432, dropped at the end; SQLite when PostgreSQL is absent), near cache off:
  db-only      the baseline above (its own Redis, never killed, serves only its outbox)
  degraded     the real api, rate limiter off: the same request path plus the cache breaker
  degraded+rl  the real api with the rate limiter on (production default): a second breaker
Each round: both real apis answer HIT; their private redis-server is killed by PID; the first
requests (those that trip the breakers) are timed one by one; then the three endpoints take
turns in chunks, sequentially (or --concurrency workers), bounded in count and time; /health
is read; Redis is restarted and the time until `X-Cache: HIT` returns is measured.
Prints p50/p99 per endpoint and round, and degraded p99 / db-only p99 (target < 2x) as a
range over rounds. The machine has 2 cores shared with other work: compare ratios of one run.

    .venv/bin/python bench/api_degraded.py [--requests 800] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.adapters.user_cache import Loader, UserCache
from api.main import create_app
from bench.api_read import api_env, seed_user, start_server
from bench.results import record
from devtools.launcher import Launcher
from devtools.postgres import create_database, drop_database, server_answers
from devtools.redis_server import RedisServer, describe_redis_server
from shared.cache import Lookup, encode

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BASELINE, DEGRADED, LIMITED = "db-only", "degraded", "degraded+rl"
TRIP_REQUESTS = 8
CHUNK = 50
RECOVERY_TIMEOUT = 15.0
DEGRADED_METRIC = 'degraded_decisions_total{operation="user_read"}'


def database_only_app() -> FastAPI:
    """The real api whose user read goes straight to the database (`uvicorn --factory`)."""

    async def from_database(self: UserCache, user_id: uuid.UUID, load: Loader) -> Lookup:
        value = await load()
        return Lookup(None if value is None else encode(value), hit=False)

    # Only this benchmark's baseline process runs this factory; every other layer is the api's.
    UserCache.user = from_database  # type: ignore[method-assign]  # the baseline's one change
    return create_app()


Reply = tuple[float, int, str]  # milliseconds, status, X-Cache


@dataclass
class Round:
    replies: dict[str, list[Reply]]
    trips: dict[str, list[float]]
    health: str
    degraded_reads: dict[str, float]
    recovery: dict[str, float | None] = field(default_factory=dict)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def timed_get(client: httpx.AsyncClient, url: str) -> Reply:
    started = time.perf_counter()
    response = await client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, response.status_code, response.headers.get("x-cache", "-")


async def first_ms(client: httpx.AsyncClient, url: str) -> float:
    return (await timed_get(client, url))[0]


async def burst(client: httpx.AsyncClient, url: str, count: int, workers: int) -> list[Reply]:
    replies: list[Reply] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            replies.append(await timed_get(client, url))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return replies


async def take_turns(
    client: httpx.AsyncClient, urls: dict[str, str], args: argparse.Namespace
) -> dict[str, list[Reply]]:
    """Endpoints alternate in chunks, so a burst of other work lands on all of them; the
    order rotates each pass, so none is always the first after another's chunk."""
    replies: dict[str, list[Reply]] = {name: [] for name in urls}
    order = list(urls)
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline and any(len(r) < args.requests for r in replies.values()):
        for name in order:
            count = min(CHUNK, args.requests - len(replies[name]))
            replies[name] += await burst(client, urls[name], count, args.concurrency)
        order = order[1:] + order[:1]
    return replies


async def until_hit(client: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, float | None]:
    """Seconds from now until each URL answers `X-Cache: HIT` (None: not within the bound)."""
    started = time.perf_counter()
    found: dict[str, float | None] = dict.fromkeys(urls)
    while time.perf_counter() - started < RECOVERY_TIMEOUT:
        for name in [n for n, t in found.items() if t is None]:
            _, status, cache = await timed_get(client, urls[name])
            if status == 200 and cache == "HIT":
                found[name] = time.perf_counter() - started
        if all(t is not None for t in found.values()):
            break
        await asyncio.sleep(0.01)  # bounded polling: RECOVERY_TIMEOUT
    return found


async def degraded_reads(client: httpx.AsyncClient, base: str) -> float:
    for line in (await client.get(f"{base}/metrics")).text.splitlines():
        if line.startswith(DEGRADED_METRIC):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def one_round(
    redis: RedisServer, bases: dict[str, str], path: str, args: argparse.Namespace
) -> Round:
    urls = {name: f"{base}{path}" for name, base in bases.items()}
    real = {name: urls[name] for name in (DEGRADED, LIMITED)}
    async with httpx.AsyncClient(timeout=10.0) as client:
        if None in (await until_hit(client, real)).values():
            raise RuntimeError("the apis do not serve HITs with Redis up")
        before = {n: await degraded_reads(client, bases[n]) for n in real}
        redis.kill()
        # The requests that meet the dead Redis before each breaker opens, one by one.
        trips = {
            n: [await first_ms(client, u) for _ in range(TRIP_REQUESTS)] for n, u in real.items()
        }
        replies = await take_turns(client, urls, args)
        health = (await client.get(f"{bases[DEGRADED]}/health")).json()
        after = {n: await degraded_reads(client, bases[n]) for n in real}
        # On the loop's own thread, not to_thread: redis-server dies with the thread that
        # started it (PR_SET_PDEATHSIG), and the executor's threads end with asyncio.run.
        redis.start()
        recovery = await until_hit(client, real)
    status = f"{health['status']} (redis {health['components']['redis']['status']})"
    counted = {n: after[n] - before[n] for n in real}
    return Round(replies, trips, status, counted, recovery)


def print_round(number: int, result: Round) -> None:
    baseline_p99 = quantile([r[0] for r in result.replies[BASELINE]], 0.99)
    print(f"round {number}")
    print(f"  {'endpoint':<12} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-200':>8}"
          f" {'>2x base':>8}  x-cache")  # fmt: skip
    for name, replies in result.replies.items():
        ms = [r[0] for r in replies]
        bad = sum(r[1] != 200 for r in replies)
        slow = sum(m > 2 * baseline_p99 for m in ms)
        caches = ",".join(sorted({r[2] for r in replies}))
        print(f"  {name:<12} {len(ms):>5} {quantile(ms, 0.5):>8.2f} {quantile(ms, 0.99):>8.2f}"
              f" {max(ms):>8.2f} {bad:>8} {slow:>8}  {caches}")  # fmt: skip
    for name, trips in result.trips.items():
        shown = " ".join(f"{m:.1f}" for m in trips)
        print(f"  first {TRIP_REQUESTS} reads after the kill, {name} (ms): {shown}")
    reads = ", ".join(f"{n} +{v:.0f}" for n, v in result.degraded_reads.items())
    print(f"  /health while down: {result.health}; degraded user reads counted: {reads}")
    never = f"not within {RECOVERY_TIMEOUT:.0f} s"
    back = ", ".join(
        f"{n} {never if t is None else f'{t:.2f} s'}" for n, t in result.recovery.items()
    )
    print(f"  back to HIT after Redis restarted: {back}")


def summarise(rounds: list[Round], reset_timeout: str) -> None:
    def p(name: str, q: float) -> list[float]:
        return [quantile([r[0] for r in rd.replies[name]], q) for rd in rounds]

    def span(values: list[float], unit: str = "") -> str:
        return f"{min(values):.2f}-{max(values):.2f}{unit} (median {statistics.median(values):.2f})"

    print(f"summary over {len(rounds)} round(s), min-max:")
    for name in (BASELINE, DEGRADED, LIMITED):
        print(f"  {name:<12} p50 {span(p(name, 0.5), ' ms')}   p99 {span(p(name, 0.99), ' ms')}")
    for name in (DEGRADED, LIMITED):
        for q, label in ((0.99, "p99"), (0.5, "p50")):
            ratios = [d / b for d, b in zip(p(name, q), p(BASELINE, q), strict=True)]
            target = " (target < 2x)" if q == 0.99 else ""
            print(f"  {name} {label} / {BASELINE} {label} = {span(ratios, 'x')}{target}")
            if q == 0.99:
                record(
                    "api_degraded",
                    figure=f"{name} p99, Redis killed (worst round)",
                    value=max(p(name, q)),
                    unit="ms",
                    baseline=f"{BASELINE} p99 (database only)",
                    ratio=max(ratios),
                    target="< 2",
                )
    times = [t for rd in rounds for t in rd.recovery.values() if t is not None]
    missing = sum(t is None for rd in rounds for t in rd.recovery.values())
    if times:
        late = f"; {missing} never within {RECOVERY_TIMEOUT:.0f} s" if missing else ""
        print(f"  back to HIT: {span(times, ' s')}, BREAKER_RESET_TIMEOUT={reset_timeout}{late}")


def database(stack: ExitStack) -> tuple[str, str]:
    """A fresh PostgreSQL database (dropped at exit), else a SQLite file."""
    if server_answers(MACHINE_POSTGRES):
        url = create_database(MACHINE_POSTGRES, "bench")
        stack.callback(drop_database, MACHINE_POSTGRES, url)
        return url, f"PostgreSQL, fresh database on 127.0.0.1:5432 ({url.rsplit('/', 1)[1]})"
    path = Path(tempfile.mkdtemp(prefix="bench-degraded-")) / "bench.db"
    return f"sqlite+aiosqlite:///{path}", "SQLite (no PostgreSQL on 127.0.0.1:5432)"


def start_apis(stack: ExitStack, redis: RedisServer, aside: RedisServer, db: str) -> dict[str, str]:
    def env(redis_url: str, prefix: str, limiter: bool) -> dict[str, str]:
        # ERROR: the relay's "Redis is down" warnings would bury the figures.
        return {**api_env(redis_url, db, near=False), "KEY_PREFIX": prefix, "LOG_LEVEL": "ERROR",
                "RATE_LIMIT_ENABLED": "true" if limiter else "false"}  # fmt: skip

    specs = {
        BASELINE: ("bench.api_degraded:database_only_app", env(aside.url, "bench-db", False)),
        DEGRADED: ("api.main:create_app", env(redis.url, "bench-a", False)),
        LIMITED: ("api.main:create_app", env(redis.url, "bench-b", True)),
    }
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-servers-"))))
    return {name: start_server(launcher, app, app_env) for name, (app, app_env) in specs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=800, help="per endpoint per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="bound of a measured phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="workers per endpoint")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-degraded-"))
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(data_dir=workdir / "redis"))
        aside = stack.enter_context(RedisServer(data_dir=workdir / "aside"))
        db, described = database(stack)
        migrate = [sys.executable, "-m", "api.migrate"]
        subprocess.run(migrate, env=api_env(redis.url, db, near=False), check=True)
        bases = start_apis(stack, redis, aside, db)
        path = f"/v1/users/{seed_user(bases[DEGRADED])}"
        print(f"database: {described}; {describe_redis_server(redis.binary)}")
        print(
            f"load: {args.requests} reads per endpoint per round (bound {args.seconds:.0f} s),"
            f" concurrency {args.concurrency}, chunks of {CHUNK}; breaker defaults"
            " (3 failures, BREAKER_RESET_TIMEOUT 2s); other work may share the 2 cores"
        )
        rounds = []
        for number in range(1, args.rounds + 1):
            rounds.append(asyncio.run(one_round(redis, bases, path, args)))
            print_round(number, rounds[-1])
    summarise(rounds, "2s")


if __name__ == "__main__":
    main()
