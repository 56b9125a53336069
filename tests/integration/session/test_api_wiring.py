"""The api in-process with an in-process session service: the helper other api tests use."""

from __future__ import annotations

import uuid

from tests.integration.api.conftest import Api
from tests.integration.session.wiring import session_backend, sign_in

__all__ = ["Api"]


async def test_signed_in_patch_and_delete_in_process(api: Api) -> None:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ada", "password": "s3cret-pw"}
    user = (await api.client.post("/v1/users", json=body)).json()
    path = f"/v1/users/{user['id']}"
    assert (await api.client.patch(path, json={"name": "B"})).status_code == 401
    async with session_backend(api.state, api.settings):
        headers = await sign_in(api.client, body["email"], body["password"])
        assert (await api.client.get("/v1/users/me", headers=headers)).json() == user
        patched = await api.client.patch(path, json={"name": "B"}, headers=headers)
        assert patched.status_code == 200
        assert (await api.client.delete(path, headers=headers)).status_code == 204
        assert (await api.client.get("/v1/users/me", headers=headers)).status_code == 401
