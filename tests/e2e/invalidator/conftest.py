"""The invalidator as real processes: `uvicorn invalidator.main:create_app --factory`.

Each process gets its environment explicitly and runs in an empty directory (no `.env`);
processes are stopped or SIGKILLed by PID, and every one still alive is killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.redis_server import free_port

VENV_BIN = Path(sys.executable).parent


@dataclass
class InvalidatorProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown code runs, as in a crash."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def wait_healthy(self, within: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"invalidator exited: {self.log.read_text()[-3000:]}")
                try:
                    response = await client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        body: dict[str, Any] = response.json()
                        return body
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"invalidator at {self.url} not healthy in {within}s")

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] == name and all(
                part in series for part in wanted.split(",") if part
            ):
                return float(value)
        return 0.0


StartInvalidator = Callable[..., InvalidatorProcess]


@pytest.fixture
def start_invalidator(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[StartInvalidator]:
    """Start an invalidator process; keyword arguments become environment variables."""
    started: list[InvalidatorProcess] = []

    def start(**env_overrides: str) -> InvalidatorProcess:
        port = free_port()
        workdir = tmp_path / f"invalidator-{len(started)}"
        workdir.mkdir()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "REDIS_URL": redis_url,
            "KEY_PREFIX": key_prefix,
            "APP_ENV": "test",
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "WARNING",
            "STREAM_BLOCK": "200ms",
            "STREAM_STATE_DIR": str(tmp_path / "consumer-state"),
        }
        env.update({k.upper(): v for k, v in env_overrides.items()})
        log = workdir / "invalidator.log"
        command = [
            str(VENV_BIN / "uvicorn"),
            "invalidator.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT
            )
        started.append(InvalidatorProcess(process, f"http://127.0.0.1:{port}", log))
        return started[-1]

    yield start
    for invalidator in started:
        invalidator.stop()
