"""`shared.replication` on real primaries and replicas: a write it calls confirmed is on a
replica the moment it returns; a lone server is never waited for; a paused replica (SIGSTOP
by PID) costs one timeout, then none until the next count (except to a write that insists);
a cluster write waits on its own primary, and follows a slot that moved.

The topologies are private (their processes are paused and their roles swapped here), so
these tests run the same whatever `--redis-mode` the run has.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from devtools.polling import eventually
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.connections import make_redis
from shared.replication import Replication, ReplicaWait

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

SET = "redis.call('SET', KEYS[1], ARGV[1]); return ARGV[1]"


@pytest.fixture(scope="module")
def pair() -> Iterator[LocalSentinel]:
    """A primary and its replica (the sentinels watch; nothing here fails over)."""
    with LocalSentinel() as local:
        yield local


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """SIGSTOP by PID: the process holds its sockets open and answers nothing."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def new_key(prefix: str = "repl") -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


async def timed(wait: ReplicaWait, script: AsyncScript, key: str) -> tuple[Replication, float]:
    started = time.perf_counter()
    acked = await wait.run(script, [key], [key])
    assert acked.reply == key.encode()
    return acked.replication, time.perf_counter() - started


async def test_a_lone_server_is_never_waited_for(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    async with Redis.from_url(redis_server_factory().url) as client:
        wait = ReplicaWait(client, 2000)
        replication, took = await timed(wait, client.register_script(SET), new_key())
    assert replication is Replication.NO_REPLICA
    assert took < 1.0  # a WAIT for a replica that is not there would block its 2 s


async def test_a_confirmed_write_is_on_the_replica_when_it_returns(pair: LocalSentinel) -> None:
    async with Redis(port=pair.master().port) as client, Redis(port=pair.replica.port) as replica:
        wait, script = ReplicaWait(client, 1000), client.register_script(SET)
        for _ in range(50):
            key = new_key()
            assert (await timed(wait, script, key))[0] is Replication.CONFIRMED
            assert await replica.get(key) == key.encode()  # read the moment it was acked
        await client.script_flush()  # NOSCRIPT: loaded again, still on one connection
        assert (await timed(wait, script, new_key()))[0] is Replication.CONFIRMED


async def test_a_paused_replica_costs_one_timeout_until_the_next_count(
    pair: LocalSentinel,
) -> None:
    async with Redis(port=pair.master().port) as client:
        wait, script = ReplicaWait(client, 300, recheck=1.0), client.register_script(SET)
        assert (await timed(wait, script, new_key()))[0] is Replication.CONFIRMED
        with paused(pair.replica):
            replication, took = await timed(wait, script, new_key())
            assert replication is Replication.TIMED_OUT
            assert took >= 0.3
            replication, took = await timed(wait, script, new_key())
            assert replication is Replication.NO_REPLICA  # trusted count: not asked again
            assert took < 0.3
        await asyncio.sleep(1.0)  # not a wait: lets the replica count's trust (1 s) run out
        assert (await timed(wait, script, new_key()))[0] is Replication.CONFIRMED


async def test_a_write_that_insists_is_waited_for_on_a_stalled_replica_every_time(
    pair: LocalSentinel,
) -> None:
    # `wait_stalled=True` (the lock's acquisition): never NO_REPLICA while one is counted.
    async with Redis(port=pair.master().port) as client:
        wait, script = ReplicaWait(client, 200, recheck=60), client.register_script(SET)

        async def insisting(key: str) -> tuple[Replication, float]:
            started = time.perf_counter()
            acked = await wait.run(script, [key], [key], wait_stalled=True)
            return acked.replication, time.perf_counter() - started

        with paused(pair.replica):
            assert (await timed(wait, script, new_key()))[0] is Replication.TIMED_OUT
            assert (await timed(wait, script, new_key()))[0] is Replication.NO_REPLICA
            for _ in range(2):
                replication, took = await insisting(new_key())
                assert replication is Replication.TIMED_OUT
                assert took >= 0.2

        async def confirms() -> bool:
            return (await insisting(new_key()))[0] is Replication.CONFIRMED

        await eventually(confirms, "the resumed replica confirming an insisting write")
        # Confirmed: the others are waited for again, well before the next count (60 s).
        assert (await timed(wait, script, new_key()))[0] is Replication.CONFIRMED


async def test_waiting_off_sends_no_wait(pair: LocalSentinel) -> None:
    async with Redis(port=pair.master().port) as client:
        wait = ReplicaWait(client, 0)
        assert (await timed(wait, client.register_script(SET), new_key()))[0] is Replication.OFF


def cluster_client(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> RedisCluster:
    settings = make_settings(redis_mode="cluster", redis_url=cluster.url)
    client = make_redis(settings.redis_target, settings)
    assert isinstance(client, RedisCluster)
    return client


def keys_on_every_primary(cluster: LocalCluster) -> dict[int, str]:
    """One key per primary, by the primary's port."""
    found: dict[int, str] = {}
    while len(found) < len(cluster.primaries()):
        key = new_key("{" + uuid.uuid4().hex + "}")
        found.setdefault(cluster.primary_for(key).port, key)
    return found


async def on_replica(cluster: LocalCluster, key: str) -> bytes | None:
    replica = cluster.replica_of(cluster.primary_for(key))
    async with Redis(port=replica.port) as direct:
        await direct.readonly()  # a cluster replica serves reads only after READONLY
        value = await direct.get(key)
        assert not isinstance(value, str)
        return value


async def test_a_cluster_write_waits_on_its_own_primary(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    client = cluster_client(make_settings, cluster)
    try:
        wait, script = ReplicaWait(client, 500), client.register_script(SET)
        spread = keys_on_every_primary(cluster)
        assert len(spread) == 3
        for key in spread.values():
            assert (await timed(wait, script, key))[0] is Replication.CONFIRMED
            assert await on_replica(cluster, key) == key.encode()
        # One primary's replica paused: only the writes to that primary go unconfirmed.
        stalled, *others = spread.values()
        with paused(cluster.replica_of(cluster.primary_for(stalled))):
            assert (await timed(wait, script, stalled))[0] is Replication.TIMED_OUT
            for key in others:
                assert (await timed(wait, script, key))[0] is Replication.CONFIRMED
    finally:
        await client.aclose()


async def test_a_cluster_write_follows_a_slot_that_moved(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    client = cluster_client(make_settings, cluster)
    try:
        wait, script = ReplicaWait(client, 1000, recheck=60), client.register_script(SET)
        key = new_key("{moving}")
        old = cluster.primary_for(key)
        assert (await timed(wait, script, key))[0] is Replication.CONFIRMED
        new = cluster.replica_of(old)
        cluster.fail_over(new)  # roles swap; the client still maps the slot to `old`
        # `old` answers MOVED; the write goes to `new` and waits for `new`'s replica.
        assert (await timed(wait, script, key))[0] is Replication.CONFIRMED
        node = client.get_node_from_key(key)
        assert node is not None
        assert node.port == new.port  # the client's map was patched from the MOVED
        assert await on_replica(cluster, key) == key.encode()
    finally:
        await client.aclose()
