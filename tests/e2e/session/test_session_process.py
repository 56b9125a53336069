"""The session service as a process: its HTTP contract, and what its log never holds."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from tests.e2e.session.processes import TOKEN, SessionProcess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def env(redis_env: dict[str, str], key_prefix: str) -> dict[str, str]:
    return {
        **redis_env,
        "KEY_PREFIX": key_prefix,
        "APP_ENV": "test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }


async def test_lifecycle_over_http_and_no_id_in_the_log(
    redis_env: dict[str, str], key_prefix: str, start_session: Callable[..., SessionProcess]
) -> None:
    # Access log left on, as a careless deployment would: the ids are in request paths.
    service = start_session(env(redis_env, key_prefix), access_log=True)
    user = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=service.url, headers=AUTH, timeout=5) as http:
        assert (
            await http.post(
                "/v1/sessions", json={"user_id": user}, headers={"Authorization": "Bearer x"}
            )
        ).status_code == 401
        ids = [
            (await http.post("/v1/sessions", json={"user_id": user})).json()["id"] for _ in range(3)
        ]
        assert (await http.get(f"/v1/sessions/{ids[0]}")).status_code == 200
        assert (await http.post(f"/v1/sessions/{ids[0]}/refresh")).status_code == 200
        rotated = (await http.post(f"/v1/sessions/{ids[1]}/rotate")).json()["id"]
        assert (await http.get(f"/v1/sessions/{ids[1]}")).status_code == 404
        assert (await http.delete(f"/v1/sessions/{ids[2]}")).status_code == 204
        assert (await http.delete(f"/v1/sessions/{ids[2]}")).status_code == 204
        listed = await http.get(f"/v1/users/{user}/sessions")
        assert len(listed.json()["items"]) == 2
        revoked = await http.delete(f"/v1/users/{user}/sessions")
        assert revoked.json() == {"revoked": 2}
        for sid in (ids[0], rotated):
            assert (await http.get(f"/v1/sessions/{sid}")).status_code == 404
    service.stop()
    log = service.output()
    assert "revoked 2 sessions" in log  # the service did log while we watched
    for sid in [*ids, rotated]:
        assert sid not in log
        assert sid not in listed.text
