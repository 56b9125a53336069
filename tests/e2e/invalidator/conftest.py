"""The invalidator as real processes: `uvicorn invalidator.main:create_app --factory`.

Started by the one launcher (devtools/launcher.py): an explicit environment, an empty
directory (no `.env`); stopped, paused or SIGKILLed by PID, every one still alive stopped at
the end. `start_invalidator` does not wait for /health: a test may start one while Redis is
down, and awaits `wait_healthy_async()` itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.launcher import Launcher, ServiceProcess

InvalidatorProcess = ServiceProcess
StartInvalidator = Callable[..., InvalidatorProcess]


@pytest.fixture
def start_invalidator(
    launcher: Launcher, redis_env: dict[str, str], key_prefix: str, tmp_path: Path
) -> StartInvalidator:
    """Start an invalidator process; keyword arguments become environment variables."""

    def start(**env_overrides: str) -> InvalidatorProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            **redis_env,
            "KEY_PREFIX": key_prefix,
            "APP_ENV": "test",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "WARNING",
            "STREAM_BLOCK": "200ms",
            # Shared by every process of the test: a restart gets its consumer name back.
            "STREAM_STATE_DIR": str(tmp_path / "consumer-state"),
        }
        env.update({k.upper(): v for k, v in env_overrides.items()})
        return launcher.start_service(
            "invalidator.main:create_app", env, name="invalidator", wait=False
        )

    return start
