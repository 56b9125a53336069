"""Sign-in across real processes: api ⇄ session service ⇄ Redis stream ⇄ session consumer."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import httpx

from devtools.polling import eventually
from tests.e2e.auth.conftest import Stack

LAG_BOUND = 10.0  # outbox relay poll (200 ms) + stream read (100 ms block), loaded 2 cores


def new_user() -> dict[str, str]:
    return {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ann", "password": "password-1"}


async def register(http: httpx.AsyncClient, body: dict[str, str]) -> dict[str, Any]:
    response = await http.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def login(http: httpx.AsyncClient, body: dict[str, str], **cookies: str) -> httpx.Response:
    credentials = {"email": body["email"], "password": body["password"]}
    headers = carrying(cookies["session"]) if cookies else None
    return await http.post("/v1/auth/login", json=credentials, headers=headers)


async def signed_in(http: httpx.AsyncClient, body: dict[str, str]) -> str:
    response = await login(http, body)
    assert response.status_code == 200, response.text
    return str(response.cookies["session"])


async def me(http: httpx.AsyncClient, cookie: str) -> int:
    return (await http.get("/v1/users/me", headers=carrying(cookie))).status_code


async def until_signed_out(http: httpx.AsyncClient, cookie: str) -> None:
    async def signed_out() -> bool:
        return await me(http, cookie) == 401

    await eventually(signed_out, "the session is revoked", within=LAG_BOUND, every=0.05)


def client(stack: Stack) -> httpx.AsyncClient:
    """A client that keeps no cookies: each request says which session it carries."""
    http = httpx.AsyncClient(base_url=stack.api.url, timeout=10.0)

    async def forget(_: httpx.Response) -> None:
        http.cookies.clear()

    http.event_hooks["response"] = [forget]
    return http


def carrying(cookie: str) -> dict[str, str]:
    return {"Cookie": f"session={cookie}"}


async def test_register_login_me_logout(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        assert "password" not in user
        assert (await http.post("/v1/auth/register", json=body)).status_code == 409

        response = await login(http, body)
        assert response.status_code == 200
        assert response.json()["user"] == user
        header = response.headers["set-cookie"].lower()
        for part in ("session=", "httponly", "samesite=lax", "path=/", "expires="):
            assert part in header, part
        assert "secure" not in header  # APP_ENV=test; production sets Secure
        cookie = str(response.cookies["session"])

        assert (await http.get("/v1/users/me")).status_code == 401
        mine = await http.get("/v1/users/me", headers=carrying(cookie))
        assert mine.status_code == 200
        assert mine.json() == user

        out = await http.post("/v1/auth/logout", headers=carrying(cookie))
        assert out.status_code == 204
        assert (
            'session=""' in out.headers["set-cookie"]
            or "max-age=0" in out.headers["set-cookie"].lower()
        )
        assert await me(http, cookie) == 401
        assert (await http.post("/v1/auth/logout", headers=carrying(cookie))).status_code == 204


async def test_login_with_a_carried_cookie_issues_a_new_id(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        first = await signed_in(http, body)
        again = await login(http, body, session=first)
        second = str(again.cookies["session"])
        assert second != first
        assert await me(http, first) == 401  # the carried id is dead: no fixation
        assert await me(http, second) == 200
        # An id the attacker chose, well formed for this very user: never becomes the session.
        planted = uuid.UUID(user["id"]).hex + "A" * 43
        third = str((await login(http, body, session=planted)).cookies["session"])
        assert third != planted


async def test_same_answer_and_time_for_unknown_email_and_wrong_password(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        await register(http, body)
        unknown = {"email": f"{uuid.uuid4().hex}@example.com", "password": body["password"]}
        wrong = {"email": body["email"], "password": "not-the-password"}
        timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
        answers = set()
        for _ in range(8):  # alternate, so load on the machine hits both alike
            for name, attempt in (("unknown", unknown), ("wrong", wrong)):
                started = time.perf_counter()
                response = await http.post("/v1/auth/login", json=attempt)
                timings[name].append(time.perf_counter() - started)
                assert response.status_code == 401
                answers.add(response.text)
        assert len(answers) == 1
        a, b = (statistics.median(timings[k]) for k in ("unknown", "wrong"))
        # Without the dummy hash an unknown email skips argon2 and answers ~10x faster.
        assert 0.5 < a / b < 2.0, timings


async def test_only_the_signed_in_user_may_change_or_delete_an_account(stack: Stack) -> None:
    mine, theirs = new_user(), new_user()
    async with client(stack) as http:
        me_user = await register(http, mine)
        other = await register(http, theirs)
        cookie = await signed_in(http, mine)
        jar = carrying(cookie)
        assert (
            await http.patch(f"/v1/users/{me_user['id']}", json={"name": "X"})
        ).status_code == 401
        assert (await http.delete(f"/v1/users/{me_user['id']}")).status_code == 401
        forbidden = await http.patch(f"/v1/users/{other['id']}", json={"name": "X"}, headers=jar)
        assert forbidden.status_code == 403
        assert (await http.delete(f"/v1/users/{other['id']}", headers=jar)).status_code == 403
        renamed = await http.patch(f"/v1/users/{me_user['id']}", json={"name": "Bo"}, headers=jar)
        assert renamed.status_code == 200
        assert renamed.json()["name"] == "Bo"
        assert "set-cookie" not in renamed.headers  # no privilege change, no rotation


async def test_password_change_rotates_this_session_and_ends_the_others(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        here, elsewhere = await signed_in(http, body), await signed_in(http, body)
        changed = await http.patch(
            f"/v1/users/{user['id']}",
            json={"password": "new-password-2"},
            headers=carrying(here),
        )
        assert changed.status_code == 200
        rotated = str(changed.cookies["session"])
        assert rotated != here
        assert await me(http, here) == 401  # the old id of this session is gone at once
        await until_signed_out(http, elsewhere)  # the other device, by the event
        assert await me(http, rotated) == 200  # and this one survived the event
        assert (await login(http, body)).status_code == 401
        assert (await login(http, {**body, "password": "new-password-2"})).status_code == 200


async def test_deleting_a_user_signs_out_all_its_sessions(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        cookies = [await signed_in(http, body) for _ in range(3)]
        deleted = await http.delete(f"/v1/users/{user['id']}", headers=carrying(cookies[0]))
        assert deleted.status_code == 204
        assert await me(http, cookies[0]) == 401
        for cookie in cookies[1:]:
            await until_signed_out(http, cookie)


async def test_session_service_down_fails_closed_public_routes_unaffected(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        cookie = await signed_in(http, body)
        stack.session.kill()
        jar = carrying(cookie)
        for response in (
            await http.get("/v1/users/me", headers=jar),
            await http.patch(f"/v1/users/{user['id']}", json={"name": "Z"}, headers=jar),
            await login(http, body),
        ):
            assert response.status_code == 503, response.text
        assert (await http.get(f"/v1/users/{user['id']}")).status_code == 200
        assert (await http.post("/v1/users", json=new_user())).status_code == 201
        assert (await http.get("/health")).status_code == 200


async def test_no_session_id_in_any_log(stack: Stack) -> None:
    body = new_user()
    async with client(stack) as http:
        user = await register(http, body)
        cookies = [await signed_in(http, body) for _ in range(2)]
        for cookie in cookies:
            assert await me(http, cookie) == 200
        changed = await http.patch(
            f"/v1/users/{user['id']}",
            json={"password": "other-pass-3"},
            headers=carrying(cookies[0]),
        )
        cookies.append(str(changed.cookies["session"]))
        await until_signed_out(http, cookies[1])
    logs = stack.session.output() + stack.api.output()
    assert "revoked" in logs  # the services did log (at DEBUG) while we watched
    for cookie in cookies:
        assert cookie not in logs
