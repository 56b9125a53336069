"""The api as real processes: `uvicorn api.main:create_app --factory` on free ports.

Each process gets its environment explicitly (and runs in an empty directory, so no `.env`
leaks in); the database is migrated with `python -m api.migrate` first, as `make run` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.redis_server import free_port

from ..session.processes import wait_healthy

VENV_BIN = Path(sys.executable).parent


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def api_env(redis_url: str, database_url: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "KEY_PREFIX": f"e{uuid.uuid4().hex[:10]}",
        "APP_ENV": "test",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [str(VENV_BIN / "python"), "-m", "api.migrate"], env=env, check=True, capture_output=True
    )
    return env


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(env: dict[str, str], **extra: str) -> ApiProcess:
        port = free_port()
        log = tmp_path / f"api-{port}.log"
        workdir = tempfile.mkdtemp(prefix="api-")
        args = [
            str(VENV_BIN / "uvicorn"), "api.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--no-proxy-headers",
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(
                args, env={**env, **extra}, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT
            )
        api = ApiProcess(process, f"http://127.0.0.1:{port}", log)
        started.append(api)
        wait_healthy(api.url, api.process, api.log)
        return api

    yield start
    for api in started:
        api.stop()
