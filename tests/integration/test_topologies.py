"""The client factory and health on a real cluster and a real Sentinel set, failovers included.

Each module-scoped topology is private (its nodes are killed here), so these tests run the
same whatever `--redis-mode` the run has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis, RedisCluster

from devtools.polling import eventually
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server, free_port
from devtools.settings import StackSettings
from shared.connections import make_redis, open_redis, redis_health
from shared.errors import RedisUnavailableError

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


def cluster_settings(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> StackSettings:
    more = ",".join(f"{host}:{port}" for host, port in cluster.seeds[1:3])
    return make_settings(redis_mode="cluster", redis_url=cluster.url, redis_cluster_nodes=more)


def sentinel_settings(
    make_settings: Callable[..., StackSettings], local: LocalSentinel
) -> StackSettings:
    sentinels = ",".join(f"{host}:{port}" for host, port in local.addresses)
    # The URL's host is ignored in sentinel mode: only credentials and the db count.
    return make_settings(redis_mode="sentinel", redis_url="redis:///2", redis_sentinels=sentinels)


async def test_cluster_mode_gives_a_cluster_client_that_sees_every_node(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    settings = cluster_settings(make_settings, cluster)
    client = await open_redis(settings.redis_target, settings)
    try:
        assert isinstance(client, RedisCluster)
        for key in ("a", "b", "c", "d"):  # four keys, more than one slot and node
            await client.set(f"{settings.key_prefix}:{key}", key)
            assert await client.get(f"{settings.key_prefix}:{key}") == key.encode()
        health = await redis_health(client)
        assert health.status == "ok"
        roles = sorted(node.role for node in health.nodes)
        assert roles == ["primary"] * 3 + ["replica"] * 3
        assert all(node.reachable for node in health.nodes)
        assert {node.address for node in health.nodes} == {
            f"127.0.0.1:{port}" for _, port in cluster.seeds
        }
        assert health.as_dict()["nodes"]
    finally:
        await client.aclose()


async def test_a_cold_cluster_client_queues_a_burst_instead_of_failing_it(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    # redis-py alone: a fresh client routes its first commands before it has the slot map,
    # and its nodes fail a command past max_connections instead of making it wait.
    settings = cluster_settings(make_settings, cluster).model_copy(update={"redis_pool_size": 4})
    client = make_redis(settings.redis_target, settings)  # no I/O yet: cold
    keys = [f"{settings.key_prefix}:burst:{i}" for i in range(200)]
    try:
        await asyncio.gather(*(client.set(key, key) for key in keys))
        assert await asyncio.gather(*(client.get(key) for key in keys)) == [
            key.encode() for key in keys
        ]
    finally:
        await client.aclose()


async def test_pipelines_and_commands_share_a_small_pool_without_failing(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    # redis-py alone: a pipeline that finds its node's pool full fails, and that failure
    # closes every connection of the client under the commands in flight.
    small = {"redis_pool_size": 2, "redis_max_retries": 0}  # no retry to hide a failure
    settings = cluster_settings(make_settings, cluster).model_copy(update=small)
    client = await open_redis(settings.redis_target, settings)
    prefix = settings.key_prefix

    async def write_pair(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        _ = pipe.set(f"{prefix}:p:{{{i}}}:a", i)  # queued: nothing to await until execute()
        _ = pipe.set(f"{prefix}:p:{{{i}}}:b", i)
        assert await pipe.execute() == [True, True]

    async def read(i: int) -> None:
        await client.get(f"{prefix}:p:{{{i}}}:a")

    try:
        await asyncio.gather(*(write_pair(i) if i % 2 else read(i) for i in range(300)))
    finally:
        await client.aclose()


async def test_a_standalone_url_still_gives_a_plain_client_and_health_without_nodes(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    client = make_redis(cluster.url, make_settings())
    try:
        assert type(client) is Redis
        assert "nodes" not in (await redis_health(client)).as_dict()
    finally:
        await client.aclose()


async def test_cluster_without_any_answering_seed_names_the_seeds(
    make_settings: Callable[..., StackSettings],
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    settings = make_settings(redis_mode="cluster", redis_url=dead, redis_max_retries=0)
    with pytest.raises(RedisUnavailableError) as caught:
        await open_redis(settings.redis_target, settings)
    assert str(caught.value).startswith(f"failed to connect to Redis at cluster via {dead[8:]}")


@pytest.mark.slow
async def test_cluster_health_names_a_dead_primary_until_its_replica_takes_over(
    make_settings: Callable[..., StackSettings], cluster: LocalCluster
) -> None:
    settings = cluster_settings(make_settings, cluster)
    client = await open_redis(settings.redis_target, settings)
    key = f"{settings.key_prefix}:kept"
    try:
        await client.set(key, "v")
        victim = cluster.primary_for(key)
        cluster.kill(victim)
        down = await redis_health(client)
        assert down.status == "down"
        assert f"127.0.0.1:{victim.port}" in str(down.error)
        dead = [node for node in down.nodes if not node.reachable]
        assert [(node.address, node.role) for node in dead] == [
            (f"127.0.0.1:{victim.port}", "primary")
        ]

        promoted = cluster.wait_for_failover(victim)
        assert await client.get(key) == b"v"  # replicated before the kill
        healed = await redis_health(client)
        assert healed.status == "ok"
        assert f"127.0.0.1:{promoted.port}" in {
            node.address for node in healed.nodes if node.role == "primary"
        }
    finally:
        await client.aclose()
        cluster.restart(victim)


async def test_sentinel_mode_follows_the_master_the_sentinels_name(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel
) -> None:
    settings = sentinel_settings(make_settings, sentinel_set)
    client = await open_redis(settings.redis_target, settings)
    try:
        assert isinstance(client, Redis)
        await client.set(f"{settings.key_prefix}:k", "v")
        master = sentinel_set.master()
        async with Redis(port=master.port, db=2) as direct:  # db 2, from the URL
            assert await direct.get(f"{settings.key_prefix}:k") == b"v"
        health = await redis_health(client)
        assert health.status == "ok"
        by_role = {node.role: node for node in health.nodes}
        assert by_role["primary"].address == f"127.0.0.1:{master.port}"
        assert by_role["replica"].reachable
        assert sum(node.role == "sentinel" and node.reachable for node in health.nodes) == 3
    finally:
        await client.aclose()


async def test_the_sentinel_pool_waits_for_a_connection_like_the_standalone_one(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel
) -> None:
    settings = sentinel_settings(make_settings, sentinel_set)
    client = make_redis(settings.redis_target, settings, pool_size=1)
    key = f"{settings.key_prefix}:list"
    try:
        # Two commands, one connection: the second waits for the first instead of failing.
        blocked = asyncio.ensure_future(client.blpop([key], timeout=0.3))
        async with Redis(port=sentinel_set.master().port) as admin:

            async def in_blpop() -> bool:
                return any(c.get("cmd") == "blpop" for c in await admin.client_list())

            await eventually(in_blpop, "the first command blocked in BLPOP", every=0.01)
        assert await client.rpush(key, "x") == 1
        assert blocked.done()
        assert await blocked is None  # it held the connection until its own timeout
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_sentinel_client_survives_a_failover(
    make_settings: Callable[..., StackSettings], sentinel_set: LocalSentinel
) -> None:
    settings = sentinel_settings(make_settings, sentinel_set)
    client = await open_redis(settings.redis_target, settings)
    key = f"{settings.key_prefix}:kept"
    try:
        await client.set(key, "v")
        assert await client.wait(1, 1000) == 1  # the replica holds it before the kill
        old = sentinel_set.kill_primary()
        assert (await redis_health(client)).status == "down"
        new = sentinel_set.wait_for_promotion(old)
        assert await client.get(key) == b"v"
        health = await redis_health(client)
        assert health.status == "ok"
        primary = next(node for node in health.nodes if node.role == "primary")
        assert primary.address == f"127.0.0.1:{new.port}"
        assert any(
            node.address == f"127.0.0.1:{old.port}" and not node.reachable for node in health.nodes
        )
    finally:
        await client.aclose()
        sentinel_set.restart(old)


@pytest.mark.parametrize("topology", [LocalCluster, LocalSentinel])
def test_a_local_topology_whose_start_times_out_leaves_no_process_behind(
    topology: type[LocalCluster] | type[LocalSentinel], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = topology()
    start = local.start
    # The first wait, once its servers are started, never sees what it waits for.
    first_wait = "_all_met" if isinstance(local, LocalCluster) else "_replica_linked"
    monkeypatch.setattr(local, first_wait, lambda: False)
    monkeypatch.setattr(local, "start", lambda: start(timeout=0.2))
    with pytest.raises(TimeoutError), local:
        pytest.fail("started without any time to wait")
    servers = local.nodes if isinstance(local, LocalCluster) else [*local.servers, *local.sentinels]
    assert [server.process for server in servers] == [None] * len(servers)
