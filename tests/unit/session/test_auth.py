"""The service-token middleware on a bare ASGI app: no Redis, no sockets."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from session_service.auth import ServiceTokenMiddleware


async def ok(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/health", ok), Route("/v1/sessions", ok)])
    guarded = ServiceTokenMiddleware(app, token="s3cret")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t")


async def test_right_token_passes_anything_else_is_401() -> None:
    async with client() as http:
        # RFC 7235: the scheme is case-insensitive; the token is not.
        for scheme in ("Bearer", "bearer", "BEARER"):
            ok = await http.get("/v1/sessions", headers={"Authorization": f"{scheme} s3cret"})
            assert ok.text == "ok", scheme
        for value in (
            None,
            "",
            "Bearer",
            "Bearer s3cre",
            "Bearer S3CRET",
            "Basic s3cret",
            "s3cret",
        ):
            headers = {} if value is None else {"Authorization": value}
            response = await http.get("/v1/sessions", headers=headers)
            assert response.status_code == 401, value
            assert response.json() == {
                "error": {"code": "UNAUTHORIZED", "message": "a valid service token is required",
                          "details": None}
            }  # fmt: skip


async def test_health_is_open() -> None:
    async with client() as http:
        assert (await http.get("/health")).text == "ok"
