"""The three services as processes on a PRIVATE Redis topology (a primary dies in the test)
and a private PostgreSQL database (so "every outbox row" means this test's rows only).

`stack_on(redis_env)` starts the session service, the api and the invalidator with both Redis
roles (data and cache) on the topology the variables name; the session-wide `redis_env` of
the run is never used, so these tests run the same whatever `--redis-mode` says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from devtools.launcher import Launcher, ServiceProcess
from devtools.postgres import create_database, drop_database
from tests.e2e.api.conftest import start_api
from tests.e2e.session.processes import TOKEN, start_session

__all__ = ["FailoverStack", "StackOn", "private_database", "stack_on", "start_api", "start_session"]


@dataclass
class FailoverStack:
    api: ServiceProcess
    session: ServiceProcess
    invalidator: ServiceProcess
    env: dict[str, str]
    database_url: str

    @property
    def key_prefix(self) -> str:
        return self.env["KEY_PREFIX"]


StackOn = Callable[[dict[str, str]], FailoverStack]


@pytest.fixture
def private_database(database_url: str) -> Iterator[str]:
    """A database of this test's own on the run's PostgreSQL (SQLite: the run's file)."""
    if not database_url.startswith("postgres"):
        yield database_url
        return
    admin = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    url = create_database(admin, "failover")
    try:
        yield url
    finally:
        drop_database(admin, url)


@pytest.fixture
def stack_on(
    private_database: str,
    launcher: Launcher,
    start_api: Callable[..., ServiceProcess],
    start_session: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> StackOn:
    """`stack_on(redis_env)`: session, api and invalidator on that Redis, once each is healthy."""

    def start(redis_env: dict[str, str]) -> FailoverStack:
        env = {
            "PATH": os.environ.get("PATH", ""),
            **redis_env,
            "DATABASE_URL": private_database,
            "KEY_PREFIX": f"f{uuid.uuid4().hex[:10]}",
            "APP_ENV": "test",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "WARNING",
            "SERVICE_TOKEN": TOKEN,
            # The load is one client IP and a few users: no policy may refuse it.
            "RATE_LIMIT_AUTH": "100000/minute",
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "RATE_LIMIT_USER": "100000/minute",
            "SESSION_MAX_PER_USER": "10000",  # no session is evicted by the cap
            "OUTBOX_POLL_INTERVAL": "200ms",
            "STREAM_BLOCK": "200ms",
            # An entry whose ack the failover took back is claimed again after this long
            # (default 30 s): the settle checks stay short.
            "STREAM_CLAIM_IDLE": "2s",
        }
        subprocess.run(
            [sys.executable, "-m", "api.migrate"], env=env, check=True, capture_output=True
        )
        session = start_session(env)
        api = start_api({**env, "SESSION_SERVICE_URL": session.url})
        invalidator = launcher.start_service(
            "invalidator.main:create_app",
            {**env, "STREAM_STATE_DIR": str(tmp_path / "invalidator-state")},
            name="invalidator",
        )
        return FailoverStack(api, session, invalidator, env, private_database)

    return start
