"""/health without a database, the OpenAPI document, and the SQLite path of the migrations."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from api.main import create_app
from api.migrate import upgrade
from devtools.redis_server import free_port
from devtools.settings import StackSettings


async def test_health_is_503_only_when_the_database_is_down(
    make_settings: Callable[..., StackSettings],
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(make_settings(database_url=dead))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["components"]["database"]["status"] == "down"
    assert body["components"]["redis"]["status"] == "ok"


def test_openapi_documents_every_response(make_settings: Callable[..., StackSettings]) -> None:
    document = create_app(make_settings()).openapi()
    operations = {
        (method.upper(), path): spec
        for path, item in document["paths"].items()
        for method, spec in item.items()
    }
    expected = {
        ("POST", "/v1/users"): {"201", "409", "422"},
        ("GET", "/v1/users"): {"200", "422"},
        ("GET", "/v1/users/{user_id}"): {"200", "404", "422"},
        ("PATCH", "/v1/users/{user_id}"): {"200", "404", "409", "422"},
        ("DELETE", "/v1/users/{user_id}"): {"204", "404", "422"},
        ("GET", "/health"): {"200", "503"},
    }
    for operation, statuses in expected.items():
        responses = operations[operation]["responses"]
        assert statuses <= set(responses), operation
        for status in statuses - {"204"}:
            assert "application/json" in responses[status]["content"], (operation, status)
    schemas = document["components"]["schemas"]
    assert set(schemas["UserPublic"]["properties"]) == {"id", "name", "created_at", "updated_at"}
    assert set(schemas["UserOwn"]["properties"]) == {
        "id",
        "email",
        "name",
        "created_at",
        "updated_at",
    }
    error = operations[("GET", "/v1/users/{user_id}")]["responses"]["404"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


async def test_migrations_and_crud_on_sqlite(make_settings: Callable[..., StackSettings]) -> None:
    path = Path(tempfile.mkdtemp(prefix="api-sqlite-")) / "nested" / "app.db"
    url = f"sqlite+aiosqlite:///{path}"
    for _ in range(2):  # a second run is a no-op; Alembic runs its own loop, so in a thread
        await asyncio.to_thread(upgrade, url)
    app = create_app(make_settings(database_url=url, near_cache_size=0))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            body = {"email": "Sq@Example.com", "name": "Lite", "password": "password1"}
            created = await client.post("/v1/users", json=body)
            assert created.status_code == 201
            path_ = f"/v1/users/{created.json()['id']}"
            fetched = await client.get(path_)
            assert fetched.json() == {k: v for k, v in created.json().items() if k != "email"}
            assert fetched.json()["created_at"].endswith("Z")
            assert (await client.post("/v1/users", json=body)).status_code == 409
            listed = await client.get("/v1/users")
            assert listed.json()["total"] == 1
