"""A small, bounded load on the api: reads, renames, creates, logins, signed-in reads and
limiter checks, each request recorded as (kind, start, end, status or exception).

Every kind has a worker of its own (reads two), each an `httpx.AsyncClient` to 127.0.0.1 that
keeps no cookies (a login must not carry the last one: it would end that session). Workers
pace themselves and stop at `stop()`, after `MAX_REQUESTS` requests each, or `MAX_SECONDS`
after the start, whichever comes first.

What counts as a success, per kind:

- `read`    GET /v1/users/{id}                        200 (cache-aside; public)
- `rename`  PATCH /v1/users/{id} {name} as its owner   200 (a write: commit, outbox event)
- `create`  POST /v1/users                             201 (a write; policy `auth`)
- `login`   POST /v1/auth/login                        200 (a session made: acknowledged)
- `me`      GET /v1/users/me with a session            200 (the session service's read)
- `limiter` POST /v1/users with `{}`                   422: the `auth` policy fails closed,
  so a 422 (the body refused after the limiter let it through) says the shared limiter
  answered; 503 `SERVICE_UNAVAILABLE` says it could not be asked.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

KINDS: Final = ("read", "rename", "create", "login", "me", "limiter")
USER_KINDS: Final = ("read", "rename", "login", "me")  # one user's keys each (its hash tag)
SUCCESS: Final = {
    "read": 200,
    "rename": 200,
    "create": 201,
    "login": 200,
    "me": 200,
    "limiter": 422,
}
# Seconds between one worker's requests: 75-110 requests/s in all measured on a 2-core machine
# that also runs the three services, six Redis processes (or five) and PostgreSQL.
PACE: Final = {
    "read": 0.02,
    "rename": 0.05,
    "create": 0.25,
    "login": 0.1,
    "me": 0.05,
    "limiter": 0.05,
}
MAX_REQUESTS: Final = 4000  # per worker
MAX_SECONDS: Final = 75.0  # from the load's start: a hung run still ends
REQUEST_TIMEOUT: Final = 10.0
PASSWORD: Final = "failover-pw-1234"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    started: float  # the event loop's clock
    ended: float
    status: int | None  # None: no answer (see `error`)
    error: str | None = None  # the exception's class when there was no answer
    code: str | None = None  # the error body's `code`
    rate_headers: bool = False  # X-RateLimit-Limit was on the answer
    user: str | None = None  # the user whose keys the request touches, if any

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS[self.kind]

    @property
    def label(self) -> str:
        """How it failed: the exception class, or the status and the error code."""
        if self.error is not None:
            return self.error
        return f"{self.status} {self.code}" if self.code else str(self.status)


@dataclass
class Account:
    id: str
    email: str
    cookie: str  # a session of its own, for renames


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """A login answered 200: the session it made must survive."""

    user: str
    cookie: str
    at: float


@dataclass
class Load:
    url: str
    accounts: list[Account]
    outcomes: list[Outcome] = field(default_factory=list)
    sessions: list[Acknowledged] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _renames: int = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        workers = [
            self._worker("read", self._read),
            self._worker("read", self._read),
            self._worker("rename", self._rename),
            self._worker("create", self._create),
            self._worker("login", self._login),
            self._worker("me", self._me),
            self._worker("limiter", self._limiter),
        ]
        await asyncio.gather(*workers)

    def succeeded_since(
        self, moment: float, where: Callable[[str], bool] | None = None
    ) -> set[str]:
        """The kinds with a success among requests started at `moment` or later; with
        `where`, only requests for a user it accepts count (kinds without one never do)."""
        return {
            o.kind
            for o in self.outcomes
            if o.ok
            and o.started >= moment
            and (where is None or (o.user is not None and where(o.user)))
        }

    # -- the workers ------------------------------------------------------------------------

    async def _worker(
        self, kind: str, step: Callable[[httpx.AsyncClient], Awaitable[Outcome]]
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_SECONDS
        async with httpx.AsyncClient(base_url=self.url, timeout=REQUEST_TIMEOUT) as http:
            for _ in range(MAX_REQUESTS):  # not polling: load, bounded in count and time
                if self._stop.is_set() or loop.time() >= deadline:
                    return
                self.outcomes.append(await step(http))
                http.cookies.clear()  # the next request carries only what it sets itself
                await asyncio.sleep(PACE[kind])

    async def _send(
        self,
        http: httpx.AsyncClient,
        kind: str,
        method: str,
        path: str,
        *,
        user: str | None = None,
        cookie: str | None = None,
        body: Any = None,
    ) -> tuple[Outcome, httpx.Response | None]:
        loop = asyncio.get_running_loop()
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        started = loop.time()
        try:
            response = await http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(kind, started, loop.time(), None, type(exc).__name__, user=user), None
        ended = loop.time()
        code = None
        if response.status_code >= 400:
            try:
                code = str(response.json()["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = "?"
        limited = "x-ratelimit-limit" in response.headers
        outcome = Outcome(kind, started, ended, response.status_code, None, code, limited, user)
        return outcome, response

    async def _read(self, http: httpx.AsyncClient) -> Outcome:
        account = random.choice(self.accounts)
        outcome, _ = await self._send(
            http, "read", "GET", f"/v1/users/{account.id}", user=account.id
        )
        return outcome

    async def _rename(self, http: httpx.AsyncClient) -> Outcome:
        account = self.accounts[self._renames % len(self.accounts)]
        self._renames += 1
        outcome, _ = await self._send(
            http,
            "rename",
            "PATCH",
            f"/v1/users/{account.id}",
            user=account.id,
            cookie=account.cookie,
            body={"name": f"renamed {self._renames}"},
        )
        return outcome

    async def _create(self, http: httpx.AsyncClient) -> Outcome:
        body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Made", "password": PASSWORD}
        outcome, response = await self._send(http, "create", "POST", "/v1/users", body=body)
        if response is not None and outcome.ok:
            self.created.append(str(response.json()["id"]))
        return outcome

    async def _login(self, http: httpx.AsyncClient) -> Outcome:
        account = random.choice(self.accounts)
        body = {"email": account.email, "password": PASSWORD}
        outcome, response = await self._send(
            http, "login", "POST", "/v1/auth/login", user=account.id, body=body
        )
        if response is not None and outcome.ok:
            self.sessions.append(
                Acknowledged(account.id, response.cookies["session"], outcome.ended)
            )
        return outcome

    async def _me(self, http: httpx.AsyncClient) -> Outcome:
        account = random.choice(self.accounts)
        outcome, _ = await self._send(
            http, "me", "GET", "/v1/users/me", user=account.id, cookie=account.cookie
        )
        return outcome

    async def _limiter(self, http: httpx.AsyncClient) -> Outcome:
        outcome, _ = await self._send(http, "limiter", "POST", "/v1/users", body={})
        return outcome


async def sign_up(http: httpx.AsyncClient, count: int) -> list[Account]:
    """`count` users, each signed in once (its session is the one its renames use)."""
    accounts = []
    for index in range(count):
        email = f"{uuid.uuid4().hex}@example.com"
        created = await http.post(
            "/v1/users", json={"email": email, "name": f"user {index}", "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        http.cookies.clear()
        accounts.append(Account(str(created.json()["id"]), email, login.cookies["session"]))
    return accounts
