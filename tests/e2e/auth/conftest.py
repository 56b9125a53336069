"""The api and the session service as processes, sharing one Redis, one prefix and a token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.e2e.api.conftest import ApiProcess, api_env, start_api
from tests.e2e.session.processes import TOKEN, SessionProcess, start_session

__all__ = ["Stack", "StackFactory", "api_env", "make_stack", "stack", "start_api", "start_session"]


@dataclass
class Stack:
    api: ApiProcess
    session: SessionProcess
    env: dict[str, str]


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    api_env: dict[str, str],
    start_api: Callable[..., ApiProcess],
    start_session: Callable[..., SessionProcess],
) -> StackFactory:
    """`make_stack(VAR=value, ...)`: both services with these variables on top of the defaults."""

    def build(**extra: str) -> Stack:
        env = {
            **api_env,
            "SERVICE_TOKEN": TOKEN,
            "RATE_LIMIT_AUTH": "1000/minute",  # the tests sign in more than 5 times a minute
            "RATE_LIMIT_DEFAULT": "10000/minute",
            "LOG_LEVEL": "DEBUG",  # the most talkative the services get: ids must still not show
            "OUTBOX_POLL_INTERVAL": "200ms",
            **extra,
        }
        session = start_session(env)
        env["SESSION_SERVICE_URL"] = session.url
        return Stack(start_api(env), session, env)

    return build


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    return make_stack()
