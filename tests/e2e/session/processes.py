"""The session service as a real process: `uvicorn session_service.main:create_app --factory`.

Started with an explicit environment in an empty directory (no `.env`), on a free port;
stopped or SIGKILLed by PID. Its log (stdout + stderr) is kept for the test to read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.redis_server import free_port

VENV_BIN = Path(sys.executable).parent
TOKEN = "e2e-service-token"


@dataclass
class SessionProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy in {within}s")


@pytest.fixture
def start_session(tmp_path: Path) -> Iterator[Callable[..., SessionProcess]]:
    started: list[SessionProcess] = []

    def start(
        env: dict[str, str], port: int | None = None, *, access_log: bool = False
    ) -> SessionProcess:
        port = port or free_port()
        log = tmp_path / f"session-{port}-{len(started)}.log"
        args = [
            str(VENV_BIN / "uvicorn"),
            "session_service.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *([] if access_log else ["--no-access-log"]),
        ]
        state = tempfile.mkdtemp(prefix="session-state-")
        full = {"SERVICE_TOKEN": TOKEN, "STREAM_STATE_DIR": state, "STREAM_BLOCK": "100ms", **env}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                args,
                env=full,
                cwd=tempfile.mkdtemp(prefix="session-"),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        service = SessionProcess(process, f"http://127.0.0.1:{port}", log)
        started.append(service)
        wait_healthy(service.url, process, log)
        return service

    yield start
    for service in started:
        service.stop()
