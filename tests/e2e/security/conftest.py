"""The services as processes (the launchers of the api and session e2e suites)."""

from __future__ import annotations

from tests.e2e.api.conftest import api_env, start_api
from tests.e2e.auth.conftest import make_stack, stack
from tests.e2e.session.processes import start_session

__all__ = ["api_env", "make_stack", "stack", "start_api", "start_session"]
