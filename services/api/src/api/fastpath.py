"""A pure-ASGI answer for near-cache hits of `GET /v1/users/{id}`, ahead of FastAPI's router.

Why: with the near cache on, a hit costs no I/O at all, yet the api still served fewer
requests/s than a bare FastAPI endpoint doing a Redis GET (bench/api_read.py: 0.92×). A
profile under wrk put ~80 % of per-request CPU in FastAPI's routing and dependency solving
(a dozen routes, the auth router first, `Users`/resources dependencies) and ~12 % in our
middleware and the limiter's Redis call; the near cache only saved the Redis GET.

What it bypasses, for a fresh near-cache entry only: route matching, path-parameter
validation, dependency resolution, the handler and Starlette's `Response`. What still
applies exactly as for the routed request: every middleware outside it — the rate limiter
(limits, X-RateLimit-*/RateLimit headers, 429s), request ids, request metrics (labelled with
the same route template: we set `scope["route"]`) — and the near-cache hit metric.

Anything it is not sure about falls through to the router untouched: other methods (HEAD
too), a query string, a root path, a trailing slash, any id spelling but the canonical
lowercase hyphenated one (the router then accepts or 422s it as before), a near-cache miss
or the cached `null` of an absent user (the router fills the near cache / answers 404).
The body and headers are those of the routed HIT response (routes/users.py `_cached`).
A miss on a key whose refresh-ahead read is in flight (`shared.nearcache`: a purge notice
dropped it a moment ago) waits for that read, then answers from the near cache if it kept
the value: right after a write, the next read is then a hit instead of a full miss path.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import api_state
from shared.errors import InvalidIdentifierError
from shared.keys import user_id

PREFIX: Final = "/v1/users/"
ROUTE_PATH: Final = "/v1/users/{user_id}"
_ID_LENGTH: Final = 36  # the canonical hyphenated UUID; the 32-hex spelling goes to the router


class UserFastPath:
    """Answers `GET /v1/users/<canonical uuid>` from the near cache; otherwise the app."""

    def __init__(self, app: ASGIApp, route: BaseRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope) if scope["type"] == "http" else None
        data = None if key is None else await self._hit(scope, key)
        if data is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the metrics middleware labels by route template
        headers = [
            (b"x-cache", b"HIT"),
            (b"content-length", str(len(data)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _key(self, scope: Scope) -> str | None:
        """The near-cache key of a request this path may answer; None for the router's."""
        path: str = scope["path"]
        if (
            scope["method"] != "GET"
            or len(path) != len(PREFIX) + _ID_LENGTH
            or not path.startswith(PREFIX)
            or scope.get("query_string")
            or scope.get("root_path")
        ):
            return None
        text = path[len(PREFIX) :]
        try:
            if user_id(text) != text:  # upper case: the router's, not ours
                return None
        except InvalidIdentifierError:
            return None
        state = api_state(scope)
        return state.keys.user(text) if state.near.enabled else None

    async def _hit(self, scope: Scope, key: str) -> bytes | None:
        near = api_state(scope).near
        data = near.peek(key)
        if data is None and near.refreshing(key) is not None:
            # A purge notice dropped it a moment ago and its new value is being read back
            # (refresh-ahead): waiting for that read beats starting the miss path beside it.
            data = await near.settled(key)
        if data is None or data == b"null":
            return None  # the router's lookup counts the miss (or answers 404)
        near.metrics.hit.inc()
        return data


def user_route(router: APIRouter) -> BaseRoute:
    """The routed `GET /v1/users/{user_id}`, whose template the fast path reports."""
    for route in router.routes:
        if (
            isinstance(route, APIRoute)
            and route.path == ROUTE_PATH
            and "GET" in (route.methods or ())
        ):
            return route
    raise LookupError(f"no GET {ROUTE_PATH} route to stand in for")
