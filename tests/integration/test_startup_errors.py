"""Every real entry point stops on a bad setting with one line naming it, and exit code 2.

Each command runs as its own process, as an operator starts it (no stand-in app), in an
empty directory (no `.env`) with only the variables given here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ENTRY_POINTS = {
    "api": [str(BIN / "uvicorn"), "api.main:create_app", "--factory", "--port", "0"],
    "session": [
        str(BIN / "uvicorn"),
        "session_service.main:create_app",
        "--factory",
        "--port",
        "0",
    ],
    "invalidator": [
        str(BIN / "uvicorn"),
        "invalidator.main:create_app",
        "--factory",
        "--port",
        "0",
    ],
    "migrate": [str(BIN / "python"), "-m", "api.migrate"],
    "platformctl": [str(BIN / "platformctl"), "streams", "status"],
}


def run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "APP_ENV": "development", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_bad_value_stops_the_entry_point_with_one_line(name: str, tmp_path: Path) -> None:
    done = run(ENTRY_POINTS[name], tmp_path, REDIS_PORT="abc", REDIS_PASSWORD="hunter2")
    line = one_line(done)
    assert line.startswith("error: invalid setting REDIS_PORT='abc'"), line
    assert "hunter2" not in done.stderr + done.stdout


def test_a_service_specific_variable_is_named_too(tmp_path: Path) -> None:
    line = one_line(run(ENTRY_POINTS["api"], tmp_path, RATE_LIMIT_USER="lots"))
    assert line == (
        "error: invalid setting RATE_LIMIT_USER='lots': "
        "expected <count>/<second|minute|hour>, e.g. 100/minute"
    )


@pytest.mark.parametrize("token", ["", "short-but-secret"])
def test_production_session_service_refuses_a_missing_or_short_token(
    token: str, tmp_path: Path
) -> None:
    done = run(ENTRY_POINTS["session"], tmp_path, APP_ENV="production", SERVICE_TOKEN=token)
    line = one_line(done)
    assert line.startswith("error: invalid setting SERVICE_TOKEN: APP_ENV=production needs"), line
    assert not token or token not in done.stderr
