"""Sessions on a Redis Cluster: every script runs in its owner's one slot.

A script whose keys span slots is refused by redis-py before it is sent, and a key on
another node by the server; so every operation working for users whose sessions land on
every primary is the proof. Runs on the run's cluster with `--redis-mode=cluster`, else on
a private one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import RedisCluster

from devtools.redis_cluster import LocalCluster
from devtools.redis_server import find_redis_server
from devtools.settings import StackSettings
from shared.keys import Keys
from shared.settings import RedisMode
from tests.integration.session.conftest import SettingsFactory, serve

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

USERS = 24  # 3 primaries: every one gets users (checked below)


@pytest.fixture(scope="module")
def private_cluster(redis_mode: RedisMode) -> Iterator[LocalCluster | None]:
    if redis_mode is RedisMode.CLUSTER:
        yield None  # the run's own cluster
        return
    with LocalCluster() as local:
        yield local


@pytest.fixture
def on_cluster(
    session_settings: SettingsFactory, private_cluster: LocalCluster | None
) -> SettingsFactory:
    if private_cluster is None:
        return session_settings

    def build(**overrides: Any) -> StackSettings:
        return session_settings(redis_mode="cluster", redis_url=private_cluster.url, **overrides)

    return build


async def created(http: httpx.AsyncClient, user: str) -> str:
    response = await http.post("/v1/sessions", json={"user_id": user, "data": {"u": user}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def every_operation(http: httpx.AsyncClient, user: str) -> None:
    """Create past the cap (evicts), get, refresh, rotate, list, destroy, revoke-all."""
    first, second, third = [await created(http, user) for _ in range(3)]
    assert (await http.get(f"/v1/sessions/{first}")).status_code == 404  # evicted (cap 2)
    assert (await http.get(f"/v1/sessions/{second}")).json()["data"] == {"u": user}
    assert (await http.post(f"/v1/sessions/{second}/refresh")).status_code == 200
    rotated = await http.post(f"/v1/sessions/{second}/rotate")
    assert rotated.status_code == 201
    listed = (await http.get(f"/v1/users/{user}/sessions")).json()["items"]
    assert len(listed) == 2
    assert (await http.delete(f"/v1/sessions/{third}")).status_code == 204
    assert (await http.get(f"/v1/sessions/{third}")).status_code == 404
    revoked = await http.delete(f"/v1/users/{user}/sessions")
    assert revoked.json() == {"revoked": 1}  # the rotated one
    assert (await http.get(f"/v1/sessions/{rotated.json()['id']}")).status_code == 404


async def test_every_operation_for_users_on_every_primary(on_cluster: SettingsFactory) -> None:
    settings = on_cluster(session_max_per_user=2)
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    async with serve(settings) as http:
        await asyncio.gather(*(every_operation(http, user) for user in users))
        metrics = (await http.get("/metrics")).text
    client = RedisCluster.from_url(settings.redis_dsn)
    try:
        _ = await client.initialize()
        keys = Keys(settings.key_prefix)
        primaries = {client.get_node_from_key(keys.user_sessions(user)) for user in users}
        assert len(primaries) == len(client.get_primaries())  # the users span every primary
    finally:
        await client.aclose()
    # Every create, rotate, destroy and revoke waited for its primary's replica.
    assert 'outcome="confirmed"' in metrics
    for outcome in ("timed_out", "no_replica", "unchecked"):
        assert f'outcome="{outcome}"' not in metrics, outcome


async def test_concurrent_writes_for_one_user_keep_the_cap_and_the_index_true(
    on_cluster: SettingsFactory,
) -> None:
    # Creates at the cap and listings race for one index: the walking scripts are told of
    # sessions they did not declare and are called again with them (the last call leniently).
    user = str(uuid.uuid4())
    settings = on_cluster(session_max_per_user=3)

    async def listed(http: httpx.AsyncClient) -> int:
        response = await http.get(f"/v1/users/{user}/sessions")
        assert response.status_code == 200, response.text
        return len(response.json()["items"])

    async with serve(settings) as http:
        calls = [created(http, user) for _ in range(30)] + [listed(http) for _ in range(6)]
        await asyncio.gather(*calls)
        assert await listed(http) == 3
        assert (await http.delete(f"/v1/users/{user}/sessions")).json() == {"revoked": 3}
        assert await listed(http) == 0
        metrics = (await http.get("/metrics")).text
    assert 'sessions_destroyed_total{reason="evicted"} 27.0' in metrics
