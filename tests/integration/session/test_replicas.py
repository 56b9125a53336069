"""Session writes and replicas: each create, rotate, destroy and revoke is counted by what a
replica confirmed; one no replica confirms is acknowledged all the same (decision 0033)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import find_redis_server
from shared.settings import RedisMode
from tests.integration.session.conftest import SettingsFactory, serve


def acks(metrics: str, operation: str, outcome: str) -> float:
    line = f'sessions_replica_acks_total{{operation="{operation}",outcome="{outcome}"}} '
    found = [row for row in metrics.splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


async def every_write(http: httpx.AsyncClient) -> None:
    user = str(uuid.uuid4())
    sid = (await http.post("/v1/sessions", json={"user_id": user})).json()["id"]
    rotated = (await http.post(f"/v1/sessions/{sid}/rotate")).json()["id"]
    assert (await http.delete(f"/v1/sessions/{rotated}")).status_code == 204
    await http.post("/v1/sessions", json={"user_id": user})
    assert (await http.delete(f"/v1/users/{user}/sessions")).json() == {"revoked": 1}


async def test_writes_are_counted_by_what_a_replica_confirmed(
    client: httpx.AsyncClient, redis_mode: RedisMode
) -> None:
    await every_write(client)
    metrics = (await client.get("/metrics")).text
    # The run's cluster and Sentinel set have a replica per primary; a lone server none.
    expected = "no_replica" if redis_mode is RedisMode.STANDALONE else "confirmed"
    for operation, count in (("create", 2), ("rotate", 1), ("destroy", 1), ("revoke", 1)):
        assert acks(metrics, operation, expected) == count, (operation, metrics)


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[LocalSentinel]:
    if not find_redis_server():
        pytest.skip("needs a redis-server binary")
    with LocalSentinel() as local:
        yield local


async def test_a_session_no_replica_confirms_is_acknowledged_and_counted(
    session_settings: SettingsFactory, sentinel_set: LocalSentinel
) -> None:
    sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.addresses)
    settings = session_settings(
        redis_mode="sentinel", redis_url="redis://", redis_sentinels=sentinels,
        session_replica_wait="300ms",
    )  # fmt: skip
    user = str(uuid.uuid4())
    replica = sentinel_set.replica
    assert replica.pid is not None
    async with serve(settings) as http:
        assert (await http.post("/v1/sessions", json={"user_id": user})).status_code == 201
        os.kill(replica.pid, signal.SIGSTOP)  # by PID: the replica holds its link, answers nothing
        try:
            started = time.perf_counter()
            created = await http.post("/v1/sessions", json={"user_id": user})
            waited = time.perf_counter() - started
            again = await http.post("/v1/sessions", json={"user_id": user})
            quick = time.perf_counter() - started - waited
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # Acknowledged, not refused: the session is on the primary, which serves every read.
        assert created.status_code == 201
        assert (await http.get(f"/v1/sessions/{created.json()['id']}")).status_code == 200
        assert waited >= 0.3  # it did wait for the replica, the whole timeout
        assert again.status_code == 201
        assert quick < 0.3  # then trusted the count: not waited for again until it is redone
        metrics = (await http.get("/metrics")).text
    assert acks(metrics, "create", "confirmed") == 1
    assert acks(metrics, "create", "timed_out") == 1
    assert acks(metrics, "create", "no_replica") == 1
