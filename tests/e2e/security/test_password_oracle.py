"""No sign-in answer depends on whether the password was right, in any failure mode.

Black box: the api and the session service as processes on a Redis of their own, which the
test kills (by PID). A right and a wrong password, tried alternately, must get identical
answers (status and error code) while sessions cannot be made; and an attacker must not
get more than the `auth` policy's count of attempts past the in-process limiter.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

import httpx
import pytest

from devtools.redis_server import RedisServer
from tests.e2e.auth.conftest import Stack, StackFactory

# Exact counts of sliding-window admissions: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("clear_of_a_minute_edge")

PASSWORD = "right-password-1"


def register(stack: Stack) -> str:
    email = f"{uuid.uuid4().hex}@example.com"
    body = {"email": email, "name": "Victim", "password": PASSWORD}
    response = httpx.post(f"{stack.api.url}/v1/auth/register", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return email


def answers(stack: Stack, email: str, attempts: int) -> list[tuple[str, int, str]]:
    """(which password, status, error code) of `attempts` logins, right and wrong in turn."""
    out = []
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        for which in itertools.islice(itertools.cycle(["right", "wrong"]), attempts):
            password = PASSWORD if which == "right" else "wrong-password-1"
            response = client.post("/v1/auth/login", json={"email": email, "password": password})
            code = response.json().get("error", {}).get("code", "") if response.content else ""
            out.append((which, response.status_code, code))
    return out


def same_for_both_passwords(seen: list[tuple[str, int, str]]) -> set[tuple[int, str]]:
    """The answers, checked to be the same set whichever password was sent."""
    right = {(status, code) for which, status, code in seen if which == "right"}
    wrong = {(status, code) for which, status, code in seen if which == "wrong"}
    assert right == wrong, seen
    return right


def test_with_redis_dead_and_auth_failing_closed_every_login_is_the_same_503(
    make_stack: StackFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    stack = make_stack(REDIS_URL=server.url, REDIS_MODE="standalone", RATE_LIMIT_AUTH="5/minute")
    email = register(stack)
    server.kill()
    outcomes = same_for_both_passwords(answers(stack, email, 20))
    assert outcomes == {(503, "SERVICE_UNAVAILABLE")}


def test_with_redis_dead_and_auth_in_process_at_most_the_policy_gets_through(
    make_stack: StackFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    stack = make_stack(
        REDIS_URL=server.url,
        REDIS_MODE="standalone",
        RATE_LIMIT_AUTH="5/minute",
        RATE_LIMIT_FAIL_CLOSED="",
    )
    email = register(stack)
    server.kill()
    seen = answers(stack, email, 20)
    # Past the in-process limiter, both passwords get the session service's 503 (its Redis
    # is dead too): a wrong one is not told apart. The rest are refused before any check.
    admitted = [(which, status, code) for which, status, code in seen if status != 429]
    assert same_for_both_passwords(admitted) == {(503, "SESSION_SERVICE_UNAVAILABLE")}
    assert {code for _, status, code in seen if status == 429} == {"RATE_LIMITED"}
    assert 2 <= len(admitted) <= 5  # the auth policy's count (register used one of them)
    assert stack.api.metric("ratelimit_fallback_active") == 1


def test_with_the_session_service_down_right_and_wrong_passwords_look_alike(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(RATE_LIMIT_AUTH="100/minute")
    email = register(stack)
    stack.session.kill()
    outcomes = same_for_both_passwords(answers(stack, email, 12))
    assert outcomes == {(503, "SESSION_SERVICE_UNAVAILABLE")}
