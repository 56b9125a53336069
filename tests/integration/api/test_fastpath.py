"""The near-cache fast path of `GET /v1/users/{id}` (api.fastpath) on real Redis+PostgreSQL.

A spy on `UserService.get` tells a fast-path answer (the router never ran) from a routed one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from api.fastpath import UserFastPath
from api.usecases import UserService
from devtools.polling import eventually
from shared.cache import Lookup
from shared.keys import Keys

from .conftest import Api, ApiFactory, public

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")

HIGH_LIMIT = "1000000/minute"
LIMIT = 8
# Headers whose value differs per request by design.
PER_REQUEST = {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit"}


class RoutedSpy:
    """Counts the requests that reached the routed handler's use case."""

    def __init__(self, service: UserService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original: Callable[[uuid.UUID], Awaitable[Lookup]] = service.get

        async def get(user_id: uuid.UUID) -> Lookup:
            self.calls += 1
            return await original(user_id)

        monkeypatch.setattr(service, "get", get)


def _sample(api: Api, name: str, labels: dict[str, str]) -> float:
    return api.state.metrics.registry.get_sample_value(name, labels) or 0.0


def _near_hits(api: Api) -> float:
    return _sample(api, "near_cache_lookups_total", {"result": "hit"})


async def _warm(api: Api, user_id: str) -> None:
    """Read until the near cache holds the user (the echo of an earlier purge on the channel
    may bump the epoch between a read's fetch and its put, which then keeps nothing)."""
    near = api.state.near
    key = Keys(api.settings.key_prefix).user(user_id)
    await eventually(lambda: near.live, "the near cache is subscribed")

    async def held() -> bool:
        response = await api.client.get(f"/v1/users/{user_id}")
        assert response.status_code == 200
        return near.peek(key) is not None

    await eventually(held, "the near cache holds the user", within=5)


async def test_fast_path_answers_exactly_as_the_routed_hit(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = {"rate_limit_enabled": True, "rate_limit_default": HIGH_LIMIT}
    async with (
        make_api(near_cache_size=0, **limits) as routed_api,
        make_api(near_cache_ttl="30s", **limits) as api,
    ):
        user = await api.create_user()
        path = f"/v1/users/{user['id']}"
        await _warm(api, user["id"])
        routed = await routed_api.client.get(path)  # a Redis HIT through the router
        spy = RoutedSpy(api.state.users, monkeypatch)
        hits, misses = _near_hits(api), _sample(api, "near_cache_lookups_total", {"result": "miss"})
        labels = {"method": "GET", "route": "/v1/users/{user_id}", "status": "200"}
        requests = _sample(api, "http_requests_total", labels)
        assert requests >= 1  # the routed warm-up reads, under the route template
        fast = await api.client.get(path)

        assert spy.calls == 0  # answered before the router
        assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
        assert fast.json() == public(user)
        assert fast.headers["x-cache"] == routed.headers["x-cache"] == "HIT"
        assert sorted(fast.headers.keys()) == sorted(routed.headers.keys())
        for name in set(routed.headers.keys()) - PER_REQUEST:
            assert fast.headers[name] == routed.headers[name], name
        assert fast.headers["x-request-id"]
        # Counted once as a near hit (no miss) and as a request to the route template.
        assert _near_hits(api) == hits + 1
        assert _sample(api, "near_cache_lookups_total", {"result": "miss"}) == misses
        assert _sample(api, "http_requests_total", labels) == requests + 1


async def test_everything_else_goes_to_the_router(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api(near_cache_ttl="30s") as api:
        user = await api.create_user()
        uid = user["id"]
        await _warm(api, uid)
        spy = RoutedSpy(api.state.users, monkeypatch)
        hits = _near_hits(api)

        # Other spellings of the same id: the router parses them and answers from the cache.
        for spelling in (uid.upper(), uuid.UUID(uid).hex):
            response = await api.client.get(f"/v1/users/{spelling}")
            assert (response.status_code, response.json()) == (200, public(user))
        assert spy.calls == 2
        query = await api.client.get(f"/v1/users/{uid}?x=1")
        assert (query.status_code, query.json(), spy.calls) == (200, public(user), 3)
        assert _near_hits(api) == hits + 3  # counted by the router's lookup, once each

        invalid = await api.client.get("/v1/users/not-a-uuid")
        assert invalid.status_code == 422
        slash = await api.client.get(f"/v1/users/{uid}/")
        assert slash.status_code != 200 or "x-cache" not in slash.headers
        head = await api.client.head(f"/v1/users/{uid}")
        assert "x-cache" not in head.headers
        delete = await api.client.delete(f"/v1/users/{uid}")
        assert delete.status_code == 401  # the router's auth, not a cached answer
        absent = str(uuid.uuid4())
        for _ in range(2):  # the second time the negative entry is cached
            missing = await api.client.get(f"/v1/users/{absent}")
            assert missing.status_code == 404
        assert spy.calls == 5


async def test_no_fast_path_without_a_near_cache(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api(near_cache_size=0) as api:
        installed: list[object] = [m.cls for m in api.app.user_middleware]
        assert UserFastPath not in installed
        user = await api.create_user()
        spy = RoutedSpy(api.state.users, monkeypatch)
        for _ in range(3):
            response = await api.client.get(f"/v1/users/{user['id']}")
            assert response.status_code == 200
        assert spy.calls == 3


async def test_rate_limits_apply_to_fast_path_hits(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api(
        near_cache_ttl="30s", rate_limit_enabled=True, rate_limit_default=f"{LIMIT}/minute"
    ) as api:
        user = await api.create_user()
        await _warm(api, user["id"])
        spy = RoutedSpy(api.state.users, monkeypatch)
        responses = []
        for _ in range(LIMIT):
            responses.append(await api.client.get(f"/v1/users/{user['id']}"))
            if responses[-1].status_code == 429:
                break
        allowed = len(responses) - 1
        assert allowed >= 1  # the warm-up left some of the limit for fast-path hits
        assert [r.status_code for r in responses] == [200] * allowed + [429]
        remaining = [int(r.headers["x-ratelimit-remaining"]) for r in responses]
        assert remaining == [*range(allowed - 1, -1, -1), 0]
        assert all(r.headers["x-ratelimit-limit"] == str(LIMIT) for r in responses)
        refused = responses[-1]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert spy.calls == 0  # the 200s were fast-path hits; the 429 never got inside


async def test_a_write_purges_so_the_next_read_is_routed(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_api(near_cache_ttl="30s") as api, api.sessions():
        user = await api.create_user("Before")
        headers = await api.sign_in(user)
        path = f"/v1/users/{user['id']}"
        await _warm(api, user["id"])
        spy = RoutedSpy(api.state.users, monkeypatch)
        assert (await api.client.get(path)).json()["name"] == "Before"
        assert spy.calls == 0

        patched = await api.client.patch(path, json={"name": "After"}, headers=headers)
        assert patched.status_code == 200
        again = await api.client.get(path)
        # Routed (the near cache dropped it), and a hit: the writer stored the new value.
        assert (again.json()["name"], again.headers["x-cache"], spy.calls) == ("After", "HIT", 1)

        async def fast_hit() -> bool:
            # The routed read refills the near cache (once no purge echo is in flight).
            calls = spy.calls
            cached = await api.client.get(path)
            assert (cached.content, cached.headers["x-cache"]) == (again.content, "HIT")
            return spy.calls == calls

        await eventually(fast_hit, "a hit served by the fast path", within=5)
