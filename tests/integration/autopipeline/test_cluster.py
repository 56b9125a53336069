"""The auto-pipeline on a real local Redis Cluster: routing, batching, errors, MOVED/ASK, failover.

The cluster is private to this module (slots are moved and primaries killed here), so these
tests run the same whatever `--redis-mode` the run has.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError

from devtools import slot_migration
from devtools.redis_cluster import LocalCluster, open_cluster
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.autopipeline import auto_pipeline
from shared.cache import Cache, CacheMetrics
from shared.clusterpipeline import ClusterAutoPipeline
from shared.keys import Keys
from shared.limiter import Policy, RateLimiter
from shared.settings import RateAlgorithm

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]


def running(local: LocalCluster) -> Iterator[LocalCluster]:
    try:  # not `with`: a start that times out must still kill what it started
        yield local.start()
    finally:
        local.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running(LocalCluster())


def node_name(server: RedisServer) -> str:
    return f"127.0.0.1:{server.port}"


def keys_per_primary(local: LocalCluster, prefix: str, count: int = 1) -> dict[str, list[str]]:
    """`count` keys served by each primary, by the primary's node name."""
    found: dict[str, list[str]] = {node_name(p): [] for p in local.primaries()}
    i = 0
    while any(len(keys) < count for keys in found.values()):
        key = f"{prefix}:{i}"
        keys = found[node_name(local.primary_for(key))]
        if len(keys) < count:
            keys.append(key)
        i += 1
    return found


@pytest.fixture
async def client(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> AsyncIterator[RedisCluster]:
    client = await open_cluster(make_settings, cluster)
    yield client
    await client.aclose()


async def test_auto_pipeline_of_a_cluster_client_routes_by_slot(client: RedisCluster) -> None:
    pipeline = auto_pipeline(client)
    assert isinstance(pipeline, ClusterAutoPipeline)
    assert auto_pipeline(client) is pipeline  # one per client, as for a Redis
    assert pipeline.slot_of(("GET", "user:{42}:x")) == key_slot(b"42")
    assert pipeline.slot_of((b"EVALSHA", b"f" * 40, b"1", b"k", b"arg")) == key_slot(b"k")
    assert pipeline.slot_of(("EVAL", "return 1", 0)) is None  # no key: any primary
    assert pipeline.slot_of(("PING", "x")) is None  # not derived: the cluster client's call
    with pytest.raises(RedisClusterException, match="same key slot"):
        pipeline.slot_of(("EVAL", "return 1", 2, "a", "b"))


async def test_commands_go_to_every_primary_on_its_own_link(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    by_node = keys_per_primary(cluster, key_prefix, count=3)
    for keys in by_node.values():
        for key in keys:
            assert await pipeline.execute("SET", key, f"v-{key}") == b"OK"
    for keys in by_node.values():
        for key in keys:
            assert await pipeline.execute("GET", key) == f"v-{key}".encode()
            assert await client.get(key) == f"v-{key}".encode()  # where redis-py looks too
    assert pipeline.links == dict.fromkeys(by_node, True)
    assert pipeline.fallbacks == 0
    assert pipeline.commands == 18


async def test_concurrent_commands_share_round_trips_per_primary(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    keys = [key for group in keys_per_primary(cluster, key_prefix, 4).values() for key in group]
    await asyncio.gather(*(pipeline.execute("GET", key) for key in keys))  # links made
    before = pipeline.batches
    rounds = 25
    replies = await asyncio.gather(
        *(pipeline.execute("INCR", key) for _ in range(rounds) for key in keys)
    )
    assert sorted(Counter(replies).items()) == [(n, len(keys)) for n in range(1, rounds + 1)]
    for key in keys:
        assert await client.get(key) == str(rounds).encode()
    sent = len(keys) * rounds
    # Three links, each with a lone first command and the rest in a few batches.
    assert pipeline.batches - before < sent / 10
    assert pipeline.largest_batch > 10


async def test_an_error_reply_fails_only_its_own_command(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    a, b, c = (group[0] for group in keys_per_primary(cluster, key_prefix).values())
    await client.set(a, "text")
    results = await asyncio.gather(
        pipeline.execute("SET", b, "1"),
        pipeline.execute("EVALSHA", "0" * 40, 1, c),
        pipeline.execute("INCR", a),
        pipeline.execute("INCR", b),
        pipeline.execute("GET", b),
        return_exceptions=True,
    )
    assert results[0] == b"OK"
    assert isinstance(results[1], NoScriptError)  # the limiter's EVAL fallback relies on it
    assert isinstance(results[2], ResponseError)
    assert list(results[3:]) == [2, b"2"]
    assert pipeline.fallbacks == 0
    # A keyless script and a command without a derived key go through the cluster client.
    assert await pipeline.execute("EVAL", "return 7", 0) == 7
    assert await pipeline.execute("STRLEN", a) == 4
    assert pipeline.fallbacks == 2


async def test_a_batch_is_one_write_per_primary_with_each_reply_in_its_place(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    by_node = keys_per_primary(cluster, key_prefix, count=4)
    keys = [key for group in by_node.values() for key in group]
    await asyncio.gather(*(pipeline.execute("SET", key, "1") for key in keys))  # links made
    batches, commands = pipeline.batches, pipeline.commands
    replies = await pipeline.execute_batch(
        [("INCR", key) for key in keys] + [("DEL", f"{{{key}}}:a", key) for key in keys]
    )
    assert replies == [2] * len(keys) + [1] * len(keys)
    assert (pipeline.batches - batches, pipeline.commands - commands) == (3, 2 * len(keys))
    assert pipeline.fallbacks == 0
    a, b, c = (group[0] for group in by_node.values())
    await client.set(a, "text")
    replies = await pipeline.execute_batch(
        [
            ("INCR", a),  # an error reply, in its place
            ("SET", b, "x"),
            ("DEL", a, b, c),  # keys of three slots: refused, not sent
            ("EVAL", "return 7", 0),  # no key: the cluster client
            ("EVAL", "return 1", 2, a, b),  # keys of two slots: refused, not sent
            ("GET", c),
        ]
    )
    assert isinstance(replies[0], ResponseError)
    assert replies[1] == b"OK"
    assert isinstance(replies[2], RedisClusterException)
    assert replies[3] == 7
    assert isinstance(replies[4], RedisClusterException)
    assert replies[5] is None  # deleted by the first batch
    assert pipeline.fallbacks == 1
    assert await pipeline.execute_batch([]) == []


async def test_a_script_is_loaded_on_each_primary_by_its_eval_fallback(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    source = "return redis.call('INCR', KEYS[1])"
    sha = await client.script_load(source)  # on every primary
    await client.script_flush()  # on every primary
    keys = [group[0] for group in keys_per_primary(cluster, key_prefix).values()]
    for key in keys:
        with pytest.raises(NoScriptError):
            await pipeline.execute(b"EVALSHA", sha.encode(), b"1", key.encode())
        assert await pipeline.execute(b"EVAL", source.encode(), b"1", key.encode()) == 1
        assert await pipeline.execute(b"EVALSHA", sha.encode(), b"1", key.encode()) == 2


def identifiers_per_primary(local: LocalCluster, keys: Keys, policy: str) -> list[str]:
    """One limiter identifier whose key each primary serves."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(local.primaries()):
        identifier = f"client-{i}"
        found.setdefault(local.primary_for(keys.ratelimit(policy, identifier)).port, identifier)
        i += 1
    return list(found.values())


@pytest.mark.parametrize("algorithm", list(RateAlgorithm))
async def test_the_limiter_checks_on_every_primary_and_reloads_its_script_on_each(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str, algorithm: RateAlgorithm
) -> None:
    keys = Keys(key_prefix)
    limiter = RateLimiter(client, keys, denials=None)
    policy = Policy("cluster", limit=3, period=60, algorithm=algorithm)
    identifiers = identifiers_per_primary(cluster, keys, policy.name)
    await client.script_flush()  # on every primary: each check meets NOSCRIPT, then EVAL
    for _ in range(2):
        decisions = await asyncio.gather(*(limiter.check(policy, i) for i in identifiers))
        assert [d.allowed for d in decisions] == [True] * 3
    decisions = await asyncio.gather(
        *(limiter.check(policy, i) for i in identifiers for _ in range(3))
    )
    assert sum(d.allowed for d in decisions) == 3  # one more for each, then refused
    pipeline = auto_pipeline(client)
    assert list(pipeline.links.values()) == [True] * 3
    assert pipeline.fallbacks == 0  # NOSCRIPT was answered on the link, EVAL went there too
    for identifier in identifiers:  # the state is where redis-py looks for it
        assert await client.exists(keys.ratelimit(policy.name, identifier)) == 1


async def test_the_cache_reads_through_the_links(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    cache = Cache(client, metrics=CacheMetrics(CollectorRegistry()))
    by_node = keys_per_primary(cluster, key_prefix, 2)
    keys = [key for group in by_node.values() for key in group]
    for key in keys:
        await cache.set(key, {"key": key}, ttl=30)
    values = await asyncio.gather(*(cache.get(key) for key in keys))
    assert values == [{"key": key} for key in keys]
    assert await cache.get(f"{key_prefix}:absent", "miss") == "miss"
    assert cache.metrics.value("get", "hit") == len(keys)
    assert list(auto_pipeline(client).links.values()) == [True] * 3


async def test_ask_falls_back_and_moved_is_followed_on_the_new_owners_link(
    client: RedisCluster, cluster: LocalCluster, key_prefix: str
) -> None:
    pipeline = auto_pipeline(client)
    key = f"{key_prefix}:migrating"
    slot = key_slot(key.encode())
    source = cluster.primary_for(key)
    target = next(p for p in cluster.primaries() if p.port != source.port)
    await client.set(key, "moving")
    assert await pipeline.execute("GET", key) == b"moving"  # its link is the source's
    primaries = cluster.primaries()
    await slot_migration.begin(slot, source, target)
    try:
        # ASK: the source has let the key go; the cluster client follows the redirect.
        assert await pipeline.execute("GET", key) == b"moving"
        assert (pipeline.fallbacks, pipeline.redirects) == (1, 0)
        await slot_migration.finish(slot, target, primaries)
        # MOVED: the map is patched (redis-py's own) and the command goes to the target.
        assert await pipeline.execute("GET", key) == b"moving"
        assert (pipeline.fallbacks, pipeline.redirects) == (1, 1)
        assert client.nodes_manager.slots_cache[slot][0].name == node_name(target)
        assert await pipeline.execute("SET", key, "moved") == b"OK"  # straight there now
        assert (pipeline.fallbacks, pipeline.redirects) == (1, 1)
        assert pipeline.links[node_name(target)]
    finally:  # give the slot back, for the other tests
        await slot_migration.give_back(slot, source, target, primaries, finished=True)
    assert await slot_migration.call(source.port, "GET", key) == "moved"


async def test_closing_the_cluster_client_closes_the_links(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster, key_prefix: str
) -> None:
    client = await open_cluster(make_settings, cluster)
    pipeline = auto_pipeline(client)
    keys = [group[0] for group in keys_per_primary(cluster, key_prefix).values()]
    await asyncio.gather(*(pipeline.execute("GET", key) for key in keys))
    assert list(pipeline.links.values()) == [True] * 3
    await asyncio.wait_for(client.aclose(), timeout=5)
    assert list(pipeline.links.values()) == [False] * 3


# What a caller may see while a primary is down: the node unreachable, the cluster down.
UNAVAILABLE = {"ConnectionError", "TimeoutError", "ClusterDownError", "ClusterError"}


@pytest.fixture
def private_cluster() -> Iterator[LocalCluster]:
    yield from running(LocalCluster())


@pytest.mark.slow
async def test_a_killed_primary_fails_commands_only_until_its_replica_is_promoted(
    make_settings: Callable[..., StackSettings], private_cluster: LocalCluster, key_prefix: str
) -> None:
    local = private_cluster
    client = await open_cluster(make_settings, local, redis_read_timeout=1)
    pipeline = auto_pipeline(client)
    by_node = keys_per_primary(local, key_prefix, 2)
    keys = [key for group in by_node.values() for key in group]
    for key in keys:
        await pipeline.execute("SET", key, "v")
    outcomes: list[tuple[float, str, str]] = []  # (sent at, key, "ok" or the error's class)
    stop = asyncio.Event()
    unexpected: list[Exception] = []

    async def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():  # not polling: steady traffic through the failover
            key = keys[i % len(keys)]
            i += 1
            sent = time.monotonic()
            try:
                reply = await pipeline.execute("GET", key)
            except Exception as exc:  # every failure is recorded, and judged below
                outcomes.append((sent, key, type(exc).__name__))
                if type(exc).__name__ not in UNAVAILABLE:
                    unexpected.append(exc)
                await asyncio.sleep(0.02)
            else:
                outcomes.append((sent, key, "ok" if reply == b"v" else repr(reply)))
                await asyncio.sleep(0.002)

    victim = local.primary_for(keys[0])
    workers = [asyncio.create_task(worker(n)) for n in range(20)]
    try:
        await asyncio.sleep(0.3)  # not a wait: traffic on every link before the kill
        killed_at = time.monotonic()
        await asyncio.to_thread(local.kill, victim)
        promoted = await asyncio.to_thread(local.wait_for_failover, victim)
        promoted_at = time.monotonic()
        await asyncio.sleep(1.5)  # not a wait: traffic after the promotion, to judge
    finally:
        stop.set()
        try:
            await asyncio.gather(*workers)
        finally:
            links = pipeline.links
            await client.aclose()
    errors = [(at, key, kind) for at, key, kind in outcomes if kind != "ok"]
    assert errors, "the kill went unnoticed"
    kinds = Counter(kind for _, _, kind in errors)
    first = "".join(traceback.format_exception(unexpected[0])) if unexpected else ""
    assert set(kinds) <= UNAVAILABLE, (kinds, first)  # no wrong reply, nothing else
    # (sent a moment before the kill, a command may still be on the wire when it lands)
    assert all(killed_at - 0.2 <= at < promoted_at for at, _, _ in errors), errors[-5:]
    after = [key for at, key, kind in outcomes if at > promoted_at and kind == "ok"]
    assert set(after) == set(keys)  # every key answers again, the victim's too
    assert links.get(node_name(promoted)) is True  # a link to the new primary
    assert node_name(victim) not in links  # the dead one's was dropped
    assert list(links.values()) == [True] * 3
    assert pipeline.commands > len(outcomes) / 2  # most went on links, not the fallback
