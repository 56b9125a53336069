"""A session acknowledged just before its primary is killed (-9, by PID) survives the failover:
on a cluster (the primary that serves its owner) and on a Sentinel set.

The topologies are private (a primary dies here), so these tests run the same whatever
`--redis-mode` the run has.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server
from shared.keys import Keys
from tests.integration.session.conftest import SettingsFactory, serve
from tests.integration.session.test_replicas import acks

pytestmark = [
    pytest.mark.own_topology,
    pytest.mark.slow,
    pytest.mark.skipif(not find_redis_server(), reason="needs a redis-server binary"),
]

SESSIONS = 20


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local


@pytest.fixture
def sentinel_set() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


async def create(http: httpx.AsyncClient, user: str) -> str:
    response = await http.post("/v1/sessions", json={"user_id": user, "data": {"u": user}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def all_alive(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
    # The first call after a promotion may fail (503): redis-py 8.1's Sentinel connection
    # retries the dead master's address, and only the next checkout asks the sentinels
    # again. No pause: the call after it goes to the new master.
    first = next(iter(ids))
    for _ in range(3):  # not polling: immediate tries, no sleep
        if (await http.get(f"/v1/sessions/{first}")).status_code != 503:
            break
    for sid, user in ids.items():
        response = await http.get(f"/v1/sessions/{sid}")
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"u": user}


async def test_a_cluster_failover_keeps_every_acknowledged_session(
    session_settings: SettingsFactory, cluster: LocalCluster, key_prefix: str
) -> None:
    settings = session_settings(redis_mode="cluster", redis_url=cluster.url)
    keys = Keys(key_prefix)
    victim = cluster.primaries()[0]
    # Users whose sessions the victim serves (their owner's hash tag is in its slots).
    users = [str(uuid.uuid4()) for _ in range(200)]
    users = [u for u in users if cluster.primary_for(keys.user_sessions(u)) == victim]
    async with serve(settings) as http:
        ids = {await create(http, user): user for user in users[:SESSIONS]}
        cluster.kill(victim)  # the moment the last create was acknowledged
        promoted = cluster.wait_for_failover(victim)
        assert promoted.port != victim.port
        await all_alive(http, ids)
        # The promoted replica serves the slot: the owners' other operations work on it.
        user = users[0]
        assert (await http.post("/v1/sessions", json={"user_id": user})).status_code == 201
        listed = (await http.get(f"/v1/users/{user}/sessions")).json()["items"]
        assert len(listed) == 2
        metrics = (await http.get("/metrics")).text
    assert acks(metrics, "create", "confirmed") == len(ids)


async def test_a_sentinel_failover_keeps_every_acknowledged_session(
    session_settings: SettingsFactory, sentinel_set: LocalSentinel
) -> None:
    sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.addresses)
    settings = session_settings(
        redis_mode="sentinel", redis_url="redis://", redis_sentinels=sentinels
    )
    users = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    async with serve(settings) as http:
        ids = {await create(http, user): user for user in users}
        old = sentinel_set.kill_primary()  # the moment the last create was acknowledged
        sentinel_set.wait_for_promotion(old)
        await all_alive(http, ids)
        assert (await http.post("/v1/sessions", json={"user_id": users[0]})).status_code == 201
        metrics = (await http.get("/metrics")).text
    assert acks(metrics, "create", "confirmed") == len(ids)
