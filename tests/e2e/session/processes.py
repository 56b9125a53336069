"""The session service as a real process: `uvicorn session_service.main:create_app --factory`.

Started by the one launcher (devtools/launcher.py): an explicit environment, an empty
directory (no `.env`), a free port unless one is given; stopped or SIGKILLed by PID. Its log
(stdout + stderr) is kept for the test to read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.launcher import Launcher, ServiceProcess

TOKEN = "e2e-service-token"
SessionProcess = ServiceProcess


@pytest.fixture
def start_session(launcher: Launcher, tmp_path: Path) -> Callable[..., SessionProcess]:
    """`start_session(env, port=None, access_log=False)`: returned once /health answers 200."""

    def start(
        env: dict[str, str], port: int | None = None, *, access_log: bool = False
    ) -> SessionProcess:
        state = tempfile.mkdtemp(prefix="session-state-", dir=tmp_path)
        full = {"SERVICE_TOKEN": TOKEN, "STREAM_STATE_DIR": state, "STREAM_BLOCK": "100ms", **env}
        return launcher.start_service(
            "session_service.main:create_app",
            full,
            name="session",
            port=port,
            options=() if access_log else ("--no-access-log",),
        )

    return start
