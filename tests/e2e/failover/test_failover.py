"""kill -9 of a Redis primary under load, with the three services as processes on it.

A private topology each (a primary dies here), so these run the same whatever `--redis-mode`
the run has: a Redis Cluster of 3 primaries and 3 replicas, and a Sentinel set (a primary, its
replica, 3 sentinels). Both Redis roles (data and cache) of every service are on it.

While a bounded load runs (reads, renames, creates, logins, signed-in reads, limiter checks:
`load.py`), the primary is killed by PID and its replica takes over. The load goes on until
every kind of request has succeeded again after the promotion, and a little longer. Then:

- no read answered 5xx or went unanswered;
- every outbox row is published and its event is in the stream;
- both groups have read every entry and have nothing pending; nothing was dead-lettered;
- no user's cached value is older than its row;
- every acknowledged session (every login that answered 200) still signs its user in.

The figures (time from the kill to the first success of each kind, errors by kind and status
or exception) are printed and written as JSON under the test's tmp dir (`report.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.polling import WaitTimeoutError, eventually
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server
from shared.connections import RedisClient, make_redis
from shared.keys import Keys
from shared.settings import CommonSettings, RedisMode, load_settings
from tests.conftest import RedisTopology
from tests.e2e.failover.checks import (
    Database,
    groups_behind,
    lost_sessions,
    stale_cache,
    unpublished,
)
from tests.e2e.failover.conftest import FailoverStack, StackOn
from tests.e2e.failover.load import KINDS, USER_KINDS, Load, sign_up
from tests.e2e.failover.report import Run
from tests.e2e.session.processes import TOKEN

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.slow,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

USERS = 20
BEFORE_KILL = 3.0  # seconds of load after every kind has succeeded once
RECOVERY = 30.0  # every kind must succeed again within this after the promotion
TAIL = 2.0  # seconds of load after the last kind recovered
SETTLE = 20.0  # seconds for the stream, the groups and the cache to catch up


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


@asynccontextmanager
async def redis_of(env: dict[str, str]) -> AsyncIterator[RedisClient]:
    """The test's own client of the topology the services use."""
    names = ("REDIS_MODE", "REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS")
    values = {name.lower(): env[name] for name in names if name in env}
    settings = load_settings(CommonSettings, _env_file=None, app_env="test", **values)
    client = make_redis(settings.redis_target, settings)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_cluster_primary_killed_under_load(
    cluster: LocalCluster, stack_on: StackOn, tmp_path: Path
) -> None:
    seeds = ",".join(f"{host}:{port}" for host, port in cluster.seeds)
    env = {
        **RedisTopology(RedisMode.CLUSTER, cluster.url).environment(),
        "REDIS_CLUSTER_NODES": seeds,
    }
    stack = stack_on(env)
    keys = Keys(stack.key_prefix)
    # The primary of the stream's slot: it carries every event (the outbox's XADDs, both
    # groups' reads and acks), so its death tests the event path, not only the cache and
    # sessions of a third of the users.
    victim = cluster.primary_for(keys.user_events())
    slots_of_victim: dict[str, bool] = {}

    def on_victim(user: str) -> bool:
        if user not in slots_of_victim:  # asked before the kill (see `exercise`)
            slots_of_victim[user] = cluster.primary_for(keys.user(user)) == victim
        return slots_of_victim[user]

    # The per-IP limiter keys (policies default and auth) share the hash tag {127.0.0.1}.
    limiter_on_victim = cluster.primary_for(keys.ratelimit("auth", "127.0.0.1")) == victim
    run = await exercise(
        stack,
        topology="cluster (3 primaries, 3 replicas, cluster-node-timeout 2000 ms)",
        killed=f"127.0.0.1:{victim.port}, the primary of {keys.user_events()}",
        kill=lambda: cluster.kill(victim),
        promote=lambda: cluster.wait_for_failover(victim),
        on_victim=on_victim,
    )
    run.extra["limiter_keys_on_victim"] = limiter_on_victim
    await judge(run, stack, env, tmp_path / "failover-cluster.json")


async def test_a_sentinel_master_killed_under_load(
    sentinel_set: LocalSentinel, stack_on: StackOn, tmp_path: Path
) -> None:
    sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.addresses)
    env = RedisTopology(RedisMode.SENTINEL, "redis://", sentinels).environment()
    stack = stack_on(env)
    master = sentinel_set.master()
    run = await exercise(
        stack,
        topology="sentinel (a primary, 1 replica, 3 sentinels, down-after 1000 ms)",
        killed=f"127.0.0.1:{master.port}, the master",
        kill=sentinel_set.kill_primary,
        promote=lambda: sentinel_set.wait_for_promotion(master),
    )
    await judge(run, stack, env, tmp_path / "failover-sentinel.json")


async def exercise(
    stack: FailoverStack,
    *,
    topology: str,
    killed: str,
    kill: Callable[[], object],
    promote: Callable[[], object],
    on_victim: Callable[[str], bool] | None = None,
) -> Run:
    """Users, the load, the kill and the promotion under it; returns once the load stopped."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=10.0) as http:
        accounts = await sign_up(http, USERS)
    if on_victim is not None:
        for account in accounts:
            on_victim(account.id)  # the slot map before the kill
    load = Load(stack.api.url, accounts)
    run = Run(topology, killed, load, started=loop.time(), on_victim=on_victim)
    running = asyncio.create_task(load.run())
    try:
        await _every_kind_succeeds(load, running, since=run.started, within=20.0)
        await asyncio.sleep(BEFORE_KILL)  # not a wait: load before the kill
        await asyncio.to_thread(kill)
        run.killed_at = loop.time()
        await asyncio.to_thread(promote)
        run.promoted_at = loop.time()
        try:
            await _every_kind_succeeds(
                load, running, since=run.promoted_at, within=RECOVERY, on_victim=on_victim
            )
        except AssertionError as error:  # judged with the rest, once the figures are written
            run.extra["not_recovered"] = str(error)
        else:
            await asyncio.sleep(TAIL)  # not a wait: load after the recovery
    finally:
        load.stop()
        await running
        run.stopped_at = loop.time()
    return run


async def _every_kind_succeeds(
    load: Load,
    running: asyncio.Task[None],
    *,
    since: float,
    within: float,
    on_victim: Callable[[str], bool] | None = None,
) -> None:
    """Every kind has succeeded since `since`; with `on_victim` (a cluster), every kind that
    touches one user's keys has also succeeded for a user whose slot the victim served."""

    def missing() -> set[str]:
        if running.done():
            running.result()  # a worker failed: its exception, now
            raise AssertionError("the load stopped early")
        lacking = set(KINDS) - load.succeeded_since(since)
        if on_victim is not None:
            on_shard = load.succeeded_since(since, on_victim)
            lacking |= {f"{kind} (victim shard)" for kind in USER_KINDS if kind not in on_shard}
        return lacking

    try:
        await eventually(
            lambda: not missing(), "a success of every kind", within=within, every=0.05
        )
    except WaitTimeoutError as error:
        raise AssertionError(f"{error}; missing {sorted(missing())}") from None


async def judge(run: Run, stack: FailoverStack, env: dict[str, str], summary: Path) -> None:
    """Settle, check, write the figures, then assert."""
    keys = Keys(stack.key_prefix)
    db = Database(stack.database_url)
    stream = keys.user_events()
    problems: dict[str, list[str]] = {}
    settled: dict[str, float | None] = {}
    async with redis_of(env) as redis:
        checks: dict[str, Callable[[], Awaitable[list[str]]]] = {
            "outbox rows published and in the stream": lambda: unpublished(db, redis, stream),
            "both groups caught up, nothing pending": lambda: groups_behind(redis, stream),
            "no cached user older than its row": lambda: stale_cache(db, redis, keys),
        }
        for what, check in checks.items():
            settled[what], problems[what] = await _settle(what, check)
        letters = int(await redis.xlen(keys.dead_letters()))
        entries = int(await redis.xlen(stream))
    acknowledged = [(a.id, a.cookie) for a in run.load.accounts]
    acknowledged += [(s.user, s.cookie) for s in run.load.sessions]
    problems["acknowledged sessions alive"] = await lost_sessions(stack.api.url, acknowledged)
    problems["every kind recovered"] = (
        [str(run.extra.pop("not_recovered"))] if ("not_recovered" in run.extra) else []
    )
    problems["nothing dead-lettered"] = [f"{letters} dead letters"] if letters else []
    problems["no error before the kill"] = [
        f"{o.kind}: {o.label}" for o in run.load.outcomes if not o.ok and o.ended < run.killed_at
    ]
    reads = [o for o in run.load.outcomes if o.kind == "read"]
    problems["no read answered 5xx or went unanswered"] = [
        f"{o.label} at {o.started - run.killed_at:+.3f}s"
        for o in reads
        if o.status is None or o.status >= 500
    ]
    run.extra.update(
        settle_s={k: None if v is None else round(v, 3) for k, v in settled.items()},
        stream_entries=entries,
        outbox_rows=len(await db.outbox()),
        sessions_checked=len(acknowledged),
        api_metrics=await _metrics(stack.api.url, _API_METRICS),
        session_metrics=await _metrics(stack.session.url, _SESSION_METRICS, TOKEN),
        problems={k: v[:20] for k, v in problems.items() if v},
    )
    run.write(summary)
    assert not any(problems.values()), {k: v[:10] for k, v in problems.items() if v}


async def _settle(
    what: str, check: Callable[[], Awaitable[list[str]]]
) -> tuple[float | None, list[str]]:
    """Seconds until `check` finds nothing wrong (None: not within SETTLE), and what it last
    found."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last: list[str] = []

    async def fine() -> bool:
        last[:] = await check()
        return not last

    try:
        await eventually(fine, what, within=SETTLE, every=0.2)
    except WaitTimeoutError:
        return None, last
    return loop.time() - started, []


_API_METRICS = (
    "ratelimit_decisions_total",
    "degraded_decisions_total",
    "outbox_replica_acks_total",
    "outbox_publish_errors_total",
    "outbox_published_total",
    "cache_operations_total",
)
_SESSION_METRICS = ("sessions_replica_acks_total", "sessions_created_total")


async def _metrics(url: str, names: tuple[str, ...], token: str | None = None) -> dict[str, Any]:
    """The samples called one of `names`, by name and labels (`name{k=v,...}`)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in names and sample.value:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] = sample.value
    return found
