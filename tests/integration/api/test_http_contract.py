"""HTTP details the published contract promises, checked one by one (in-process, real Redis
and database); tests/e2e/api/test_contract.py fuzzes the whole document."""

from __future__ import annotations

import uuid

import pytest

from .conftest import Api, ApiFactory


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/users", "GET, POST"),
        (f"/v1/users/{uuid.uuid4()}", "DELETE, GET, PATCH"),
        ("/v1/users/me", "GET"),
        ("/v1/auth/login", "POST"),
    ],
)
async def test_405_lists_every_method_of_the_resource(api: Api, path: str, allowed: str) -> None:
    response = await api.client.request("TRACE", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_writes_to_me_are_405_not_a_bad_id(api: Api, method: str) -> None:
    response = await api.client.request(method, "/v1/users/me", json={"name": "x"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "spelling",
    [
        "{5a785c8e-7f5e-4c4f-9d2b-1e8d5c6f7a8b}",
        "urn:uuid:5a785c8e-7f5e-4c4f-9d2b-1e8d5c6f7a8b",
        "5a785c8e-7f5e-4c4f-9d2b-1e8d5c6f7a8b%0A",
    ],
)
async def test_only_hyphenated_or_hex_ids_are_ids(api: Api, spelling: str) -> None:
    user = await api.create_user()
    for accepted in (user["id"], user["id"].upper(), uuid.UUID(user["id"]).hex):
        assert (await api.client.get(f"/v1/users/{accepted}")).status_code == 200
    refused = await api.client.get(f"/v1/users/{spelling}")
    assert refused.status_code == 422
    errors = refused.json()["error"]["details"]
    assert [e["loc"] for e in errors] == [["path", "user_id"]]  # reported once


async def test_a_body_that_is_not_utf8_is_a_documented_400(api: Api) -> None:
    response = await api.client.post(
        "/v1/users", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_REQUEST"
    operation = (await api.client.get("/openapi.json")).json()["paths"]["/v1/users"]["post"]
    assert {"400", "413"} <= set(operation["responses"])


async def test_the_document_describes_bodies_security_and_limits(make_api: ApiFactory) -> None:
    async with make_api(rate_limit_enabled=True) as api:
        document = (await api.client.get("/openapi.json")).json()
    paths = document["paths"]
    ok = paths["/v1/users/{user_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/UserPublic")  # a body, not {"type": "string"}
    scheme = document["components"]["securitySchemes"]["sessionCookie"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "cookie", "session")
    assert paths["/v1/users/me"]["get"]["security"] == [{"sessionCookie": []}]
    assert paths["/v1/users/{user_id}"]["patch"]["security"] == [{"sessionCookie": []}]
    assert "security" not in paths["/v1/users/{user_id}"]["get"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path not in {"/health", "/metrics"}:
                assert "429" in operation["responses"], (method, path)
