"""The api as real processes: `uvicorn api.main:create_app --factory` on free ports.

Each process gets its environment explicitly (and runs in an empty directory, so no `.env`
leaks in); the database is migrated with `python -m api.migrate` first, as `make run` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from devtools.launcher import Launcher, ServiceProcess

ApiProcess = ServiceProcess
# As `make run` starts it: uvicorn must not rewrite the peer from X-Forwarded-For.
OPTIONS = ("--no-access-log", "--no-proxy-headers")


@pytest.fixture
def api_env(redis_env: dict[str, str], database_url: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        **redis_env,
        "DATABASE_URL": database_url,
        "KEY_PREFIX": f"e{uuid.uuid4().hex[:10]}",
        "APP_ENV": "test",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([sys.executable, "-m", "api.migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture
def start_api(launcher: Launcher) -> Callable[..., ApiProcess]:
    """`start_api(env, VAR=value, ...)`: an api process, returned once /health answers 200."""

    def start(env: dict[str, str], **extra: str) -> ApiProcess:
        return launcher.start_service("api.main:create_app", {**env, **extra}, options=OPTIONS)

    return start
