"""The hot path on a 3-primary Redis Cluster vs one standalone server, in the same run.

Three levels, each sequential and at 50 tasks, each through the standalone auto-pipeline
(today's path, the baseline) and through the cluster auto-pipeline (`auto_pipeline` of the
services' cluster client: one link per primary, routed by slot):

- a bare GET of a 200-byte value;
- the cache's hit path: `shared.cache.Cache.get_bytes` (breaker, metrics, the GET);
- the limiter: `shared.limiter.RateLimiter.check` (GCRA, allow regime: one EVALSHA).

Beside them, for the GET only: the standalone auto-pipeline split over three links picked by
slot (the control: the cluster's split, on one server), and redis-py's own `RedisCluster`
GET (the services' cluster client without the auto-pipeline). Target: the cluster path
≥ 0.9× the standalone auto-pipeline. Contenders take turns over a few rounds and each reports
its best round, so a burst of other work on the shared 2-core machine does not land on one
side only. The cluster's redis-server processes share those cores: a machine-bound ratio,
not a client-bound one; the CPU per operation (client / servers) is steadier than the rates.

Both topologies get the same replicas per primary (`--replicas`, default 1): a write (each
limiter check) costs its replica's CPU too, and a cluster with replicas against a server
without would charge that to the cluster path.

    .venv/bin/python bench/cluster_hotpath.py [--ops 20000] [--rounds 3] [--replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from redis import Redis as SyncRedis
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer
from shared.autopipeline import auto_pipeline
from shared.cache import Cache, CacheMetrics
from shared.connections import RedisClient, open_redis
from shared.keys import Keys
from shared.limiter import Policy, RateLimiter
from shared.settings import CommonSettings, RateAlgorithm, load_settings

VALUE = b"x" * 200
KEYS = [f"bench:user:{{{i}}}".encode() for i in range(1000)]  # spread over every slot range
CACHE_KEYS = [key.decode() for key in KEYS]  # the cache takes text keys, as the api's
IDENTIFIERS = [f"client-{i}" for i in range(1000)]  # limiter keys, spread likewise
# Allow regime: a limit out of reach, so every check runs the script and writes.
POLICY = Policy("bench", limit=1_000_000_000, period=3600, algorithm=RateAlgorithm.GCRA)
TASKS = 50
Op = Callable[[int], Awaitable[Any]]  # the i-th operation of a worker


@dataclass
class Contender:
    name: str
    op: Op
    servers: list[Redis]  # every server of its topology, for their CPU time

    async def server_cpu(self) -> float:
        infos = [await server.info("cpu") for server in self.servers]
        return sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos)


@dataclass
class Sample:
    rate: float  # ops/s
    client_us: float  # this process's CPU per op
    server_us: float  # the servers' CPU per op


async def measure(contender: Contender, ops: int, tasks: int) -> Sample:
    per_task = ops // tasks
    op = contender.op

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await op(offset + i)

    server_before, client_before = await contender.server_cpu(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(t * 37) for t in range(tasks)))
    elapsed = time.perf_counter() - started
    client = time.process_time() - client_before
    server = await contender.server_cpu() - server_before
    done = per_task * tasks
    return Sample(done / elapsed, client / done * 1e6, server / done * 1e6)


async def pool_overflow(cluster_url: str, pool_size: int, ops: int) -> Counter[str]:
    """Failures at 50 tasks from redis-py's own RedisCluster with a small per-node pool."""
    client = RedisCluster.from_url(cluster_url, max_connections=pool_size)
    _ = await client.initialize()  # a cold client has a race of its own (shared.connections)
    failures: Counter[str] = Counter()

    async def get(i: int) -> Any:
        try:
            return await client.get(KEYS[i % len(KEYS)])
        except Exception as exc:
            failures[type(exc).__name__] += 1
            return None

    await measure(Contender("", get, []), ops, TASKS)
    await client.aclose()
    return failures


def hot_path(label: str, client: RedisClient, servers: list[Redis]) -> list[Contender]:
    """The three levels of the hot path on one client, through its auto-pipeline."""
    pipe = auto_pipeline(client)
    cache = Cache(client, metrics=CacheMetrics(CollectorRegistry()))
    limiter = RateLimiter(client, Keys("bench"), denials=None)

    def get(i: int) -> Awaitable[Any]:
        return pipe.execute("GET", KEYS[i % len(KEYS)])

    def cached(i: int) -> Awaitable[Any]:
        return cache.get_bytes(CACHE_KEYS[i % len(CACHE_KEYS)])

    def check(i: int) -> Awaitable[Any]:
        return limiter.check(POLICY, IDENTIFIERS[i % len(IDENTIFIERS)])

    return [
        Contender(f"{label} auto-pipeline GET", get, servers),
        Contender(f"{label} Cache.get_bytes hit", cached, servers),
        Contender(f"{label} RateLimiter.check", check, servers),
    ]


async def run(standalone: list[RedisServer], local: LocalCluster, ops: int, rounds: int) -> None:
    primary = standalone[0]
    plain = Redis.from_url(primary.url, max_connections=TASKS + 1)  # +1: the link's own
    # The services' cluster client (shared.connections): a waiting pool of 50 per node.
    settings = load_settings(
        CommonSettings,
        _env_file=None,
        redis_mode="cluster",
        redis_url=local.url,
        redis_pool_size=TASKS,
    )
    cluster = await open_redis(settings.redis_target, settings)
    assert isinstance(cluster, RedisCluster)
    for key in KEYS:
        await plain.set(key, VALUE)
        await cluster.set(key, VALUE)
    # The control: three links to the one standalone server, picked by slot as the cluster's
    # primaries are. It splits each burst in three as the cluster does, on one server.
    thirds = [Redis.from_url(primary.url, max_connections=2) for _ in range(3)]
    links = [auto_pipeline(client) for client in thirds]

    def by_thirds(i: int) -> Awaitable[Any]:
        key = KEYS[i % len(KEYS)]
        return links[key_slot(key) * 3 // 16384].execute("GET", key)

    def cluster_get(i: int) -> Awaitable[Any]:
        return cluster.get(KEYS[i % len(KEYS)])

    one = [Redis(port=server.port) for server in standalone]
    nodes = [Redis(port=port) for _, port in local.seeds]
    contenders = [
        *hot_path("standalone", plain, one),
        *hot_path("cluster", cluster, nodes),
        Contender("standalone, 3 links by slot (control)", by_thirds, one),
        Contender("cluster redis-py RedisCluster GET", cluster_get, nodes),
    ]
    for contender in contenders:  # every path warm (scripts loaded, links made)
        for i in (0, len(KEYS) - 1):
            assert await contender.op(i) is not None
    best: dict[tuple[str, int], Sample] = {}
    for _ in range(rounds):
        for tasks, count in ((1, ops // 5), (TASKS, ops)):
            for contender in contenders:
                sample = await measure(contender, count, tasks)
                kept = best.get((contender.name, tasks))
                if kept is None or sample.rate > kept.rate:
                    best[contender.name, tasks] = sample
    report(best)
    routed = auto_pipeline(cluster)
    print(
        f"\ncluster auto-pipeline: {routed.commands} commands in {routed.batches} round trips "
        f"on {len(routed.links)} links, {routed.fallbacks} through RedisCluster, "
        f"{routed.redirects} MOVED followed"
    )
    overflow = await pool_overflow(local.url, 10, ops // 4)
    print(f"redis-py's RedisCluster, max_connections=10 per node, 50 tasks, {ops // 4} GETs: "
          f"failures {dict(overflow) or 'none'}")  # fmt: skip
    for client in [*one, *nodes, *thirds]:
        await client.aclose()
    await cluster.aclose()
    await plain.aclose()


PAIRS = [
    ("cluster auto-pipeline GET", "standalone auto-pipeline GET"),
    ("cluster Cache.get_bytes hit", "standalone Cache.get_bytes hit"),
    ("cluster RateLimiter.check", "standalone RateLimiter.check"),
    ("standalone, 3 links by slot (control)", "standalone auto-pipeline GET"),
    ("cluster auto-pipeline GET", "standalone, 3 links by slot (control)"),
    ("cluster redis-py RedisCluster GET", "standalone auto-pipeline GET"),
]


def report(best: dict[tuple[str, int], Sample]) -> None:
    names = list(dict.fromkeys(name for name, _ in best))
    print("200 B values; best round of each: ops/s, then CPU µs per op (client / servers)")
    print(f"{'':<40} {'sequential':>22} {'50 tasks':>24}")
    for name in names:
        cells = [
            f"{s.rate:>8.0f} {s.client_us:>6.1f}/{s.server_us:<5.1f}"
            for s in (best[name, 1], best[name, TASKS])
        ]
        print(f"{name:<40} {cells[0]:>22} {cells[1]:>24}")
    print("\nratios of ops/s (target: cluster path >= 0.9x the standalone auto-pipeline)")
    for ours, base in PAIRS:
        seq, conc = (best[ours, n].rate / best[base, n].rate for n in (1, TASKS))
        print(f"  {ours} / {base}: {seq:.2f}x sequential, {conc:.2f}x at 50 tasks")
    # Recorded without a target: the >= 0.9x target is judged where it applies, at the api's
    # hit path (api_read.py --cluster); a bare command also pays the split of each burst over
    # three links and the cluster's extra server processes (docs/scaling.md).
    for ours, base in PAIRS[:3] + PAIRS[-1:]:
        for tasks, mode in ((1, "sequential"), (TASKS, "50 tasks")):
            mine, theirs = best[ours, tasks], best[base, tasks]
            record(
                "cluster_hotpath",
                figure=f"{ours} ÷ {base}, {mode}",
                value=mine.rate,
                unit="ops/s",
                baseline=f"{base} {theirs.rate:.0f} ops/s",
                ratio=mine.rate / theirs.rate,
                target=None,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per 50-task round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="per primary, in both")
    args = parser.parse_args()
    with ExitStack() as stack:
        # A replica's first sync would wait 5 s for others to share it: none will.
        primary = stack.enter_context(RedisServer(extra_args=("--repl-diskless-sync-delay", "0")))
        standalone = [primary]
        for _ in range(args.replicas):
            replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
            standalone.append(stack.enter_context(replica))
        cluster = stack.enter_context(LocalCluster(replicas=args.replicas))
        wait_for_replicas(standalone)
        asyncio.run(run(standalone, cluster, args.ops, args.rounds))


def wait_for_replicas(servers: list[RedisServer], timeout: float = 30) -> None:
    """Until each replica of the standalone primary reports its link up."""
    deadline = time.monotonic() + timeout
    for replica in servers[1:]:
        with SyncRedis(port=replica.port, decode_responses=True) as client:
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica on port {replica.port} never linked")
                time.sleep(0.05)


if __name__ == "__main__":
    main()
