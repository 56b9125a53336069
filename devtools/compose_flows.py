"""End-to-end flows against the running compose stack, through the proxy's published port.

Every assertion talks to the stack the way its users and operators do: HTTP through nginx, and
the two Redis servers (published on 127.0.0.1 by the test override only) for what an operator
would look at — stream groups, pending entries, keys. Every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from redis.asyncio import Redis

from devtools import client_ns, polling
from devtools.compose_stack import Stack
from devtools.docker_engine import Log
from shared.keys import INVALIDATOR_GROUP, SESSION_GROUP, Keys

PASSWORD: Final = "compose-test-password-1"  # noqa: S105 - a throw-away stack's users


class FlowError(AssertionError):
    """A flow or fault step found the stack not doing what it must."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise FlowError(message)


async def eventually(
    probe: Callable[[], Awaitable[object]], what: str, within: float = 30, every: float = 0.2
) -> float:
    """Poll until `probe()` is truthy (errors count as not yet); seconds it took."""
    started = time.monotonic()
    try:
        await polling.eventually(
            probe, what, within=within, every=every, ignoring=(httpx.HTTPError, OSError)
        )
    except polling.WaitTimeoutError as error:
        raise FlowError(str(error)) from None
    return time.monotonic() - started


@dataclass
class Account:
    id: str
    email: str
    cookie: dict[str, str] = field(default_factory=dict)


@dataclass
class Probe:
    """What the flows hold: the stack, an HTTP client on the proxy, both Redis servers."""

    stack: Stack
    log: Log
    http: httpx.AsyncClient
    data: Redis
    cache: Redis
    keys: Keys = field(default_factory=Keys)

    async def reconnect(self) -> None:
        """Fresh Redis clients (after a restart the old connections are dead)."""
        await self.data.aclose()
        await self.cache.aclose()
        self.data, self.cache = _redis(self.stack.redis_port), _redis(self.stack.cache_port)

    async def register(self, tag: str) -> Account:
        body = {
            "email": f"{tag}-{uuid.uuid4().hex[:12]}@example.com",
            "name": tag,
            "password": PASSWORD,
        }
        answer = await self.http.post("/v1/auth/register", json=body)
        check(answer.status_code == 201, f"register: {answer.status_code} {answer.text[:200]}")
        return Account(id=answer.json()["id"], email=body["email"])

    async def login(self, account: Account) -> Account:
        body = {"email": account.email, "password": PASSWORD}
        answer = await self.http.post("/v1/auth/login", json=body)
        check(answer.status_code == 200, f"login: {answer.status_code} {answer.text[:200]}")
        # The cookie is Secure (APP_ENV=production) and this is plain HTTP: send it by hand.
        account.cookie = {"Cookie": f"session={answer.cookies['session']}"}
        self.http.cookies.clear()
        return account

    async def me_status(self, account: Account) -> int:
        return (await self.http.get("/v1/users/me", headers=account.cookie)).status_code

    async def pending(self, group: str) -> int:
        summary: dict[str, Any] = await self.data.xpending(self.keys.user_events(), group)
        return int(summary["pending"])

    async def purged(self, ids: list[uuid.UUID]) -> bool:
        return int(await self.cache.exists(*[self.keys.user(i) for i in ids])) == 0


def _redis(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


@contextlib.asynccontextmanager
async def open_probe(stack: Stack, log: Log) -> AsyncIterator[Probe]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        probe = Probe(stack, log, http, _redis(stack.redis_port), _redis(stack.cache_port))
        try:
            yield probe
        finally:
            await probe.data.aclose()
            await probe.cache.aclose()


async def end_to_end(p: Probe) -> None:
    """Register, log in, read through the cache, write, list, log out — through nginx."""
    health = await p.http.get("/health")
    check(health.status_code == 200 and health.json()["status"] == "ok", f"health: {health.text}")
    account = await p.login(await p.register("flow"))
    me = await p.http.get("/v1/users/me", headers=account.cookie)
    check(me.status_code == 200 and me.json()["email"] == account.email, f"me: {me.text}")
    first = await p.http.get(f"/v1/users/{account.id}")
    second = await p.http.get(f"/v1/users/{account.id}")
    check(first.status_code == second.status_code == 200, "GET user")
    check(
        second.headers.get("x-cache") == "HIT",
        f"second read X-Cache {second.headers.get('x-cache')}",
    )
    patched = await p.http.patch(
        f"/v1/users/{account.id}", json={"name": "renamed"}, headers=account.cookie
    )
    check(patched.status_code == 200, f"PATCH: {patched.status_code}")

    async def renamed() -> bool:
        # Either replica answers; the other one's near cache is dropped by the invalidator.
        return bool((await p.http.get(f"/v1/users/{account.id}")).json()["name"] == "renamed")

    took = await eventually(renamed, "the rename seen through the proxy", within=15)
    page = await p.http.get("/v1/users", params={"limit": 10})
    check(page.status_code == 200 and page.json()["total"] >= 1, f"list: {page.text[:200]}")
    check(
        (await p.http.post("/v1/auth/logout", headers=account.cookie)).status_code == 204, "logout"
    )
    check(await p.me_status(account) == 401, "the session outlived its logout")
    await _streams_consumed(p)
    p.log(f"register/login/me/read (MISS→HIT)/rename (seen after {took:.1f} s)/list/logout: ok")


async def _streams_consumed(p: Probe) -> None:
    for group in (INVALIDATOR_GROUP, SESSION_GROUP):
        await eventually(functools.partial(drained, p, group), f"group {group} acks everything")
    consumers = await p.data.xinfo_consumers(p.keys.user_events(), INVALIDATOR_GROUP)
    names = {c["name"] for c in consumers}
    check(len(names) >= 2, f"two invalidator consumers with distinct names, saw {names}")
    length = await p.data.xlen(p.keys.user_events())
    p.log(f"stream: {length} entries, groups drained, invalidator consumers {sorted(names)}")


async def drained(p: Probe, group: str) -> bool:
    return await p.pending(group) == 0


def only_the_proxy_is_published(stack: Stack) -> None:
    """The session service (and everything but nginx) has no host port; the session
    service refuses a call without the token, from inside the stack's network."""
    for service in ("api", "session", "invalidator", "postgres", "migrate"):
        check(not stack.published(service), f"{service} publishes {stack.published(service)}")
    check(len(stack.published("proxy")) >= 1, "the proxy publishes its port")
    probe = (
        "import urllib.request, urllib.error, uuid\n"
        "url = f'http://127.0.0.1:8001/v1/users/{uuid.uuid4()}/sessions'\n"
        "try:\n    urllib.request.urlopen(url, timeout=5)\nexcept urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    status = stack.compose("exec", "-T", "session", "python", "-c", probe).strip()
    check(status == "401", f"session service without a token answered {status}")


async def client_identity(p: Probe) -> None:
    """Two clients behind the proxy have two rate-limit identities; a client's own
    X-Forwarded-For changes nothing (nginx overwrites it; the api trusts only nginx)."""
    reason = client_ns.unavailable()
    if reason is not None:
        p.log(f"SKIPPED client identity: {reason}")
        return
    path = f"/v1/users/{uuid.uuid4()}"  # a 404, still rate limited (policy `default`)
    a, b = client_ns.CLIENT_ADDRESSES
    forged = ["", "203.0.113.9", f"{b}", "127.0.0.1, 10.0.0.1", "203.0.113.10"]
    with client_ns.client_namespace():
        seen_a = await asyncio.to_thread(client_ns.get_from, a, p.stack.http_port, path, forged)
        seen_b = await asyncio.to_thread(client_ns.get_from, b, p.stack.http_port, path, [""])
    check(all(r["status"] == "404" for r in seen_a + seen_b), f"answers: {seen_a + seen_b}")
    left_a = [int(r["remaining"]) for r in seen_a]
    left_b = int(seen_b[0]["remaining"])
    # One bucket for A whatever it forged: its remaining count only goes down. (Not by
    # exactly one each time: a sliding window weighs in the previous minute's count.)
    steady = all(x >= y for x, y in itertools.pairwise(left_a))
    check(steady and left_a[-1] < left_a[0], f"A's remaining {left_a}")
    # B, even after A forged B's own address, starts from a full bucket.
    check(left_b == left_a[0], f"B's first remaining {left_b}, A's first {left_a[0]}")
    p.log(f"client {a}: remaining {left_a} while forging X-Forwarded-For; client {b}: {left_b}")
