"""The one launcher of service processes for tests and benchmarks.

`Launcher.start_service` runs `uvicorn <module>:create_app --factory` on a free port of
127.0.0.1, with exactly the environment given (nothing inherited) and in an empty directory of
its own (so no `.env` is read); stdout and stderr go to a log file beside that directory. A
`ServiceProcess` is stopped, SIGKILLed, paused and resumed by PID and reads its own /health,
log and metrics; the `Launcher` stops whatever is still running when it closes. `make run`
has its own supervisor (devtools/processes.py), which shares `terminate` and `get`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from devtools.polling import eventually, eventually_sync
from devtools.processes import get, terminate
from devtools.redis_server import free_port

STOP_TIMEOUT: Final = 10.0
START_TIMEOUT: Final = 20.0


class ProcessExitedError(AssertionError):
    """The process ended while it was awaited (its log's last lines in the message)."""


@dataclass
class Process:
    """A child of a `Launcher`, addressed by PID, run in `workdir`; stdout and stderr in `log`."""

    name: str
    popen: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (after SIGCONT, in case it is paused), SIGKILL after `timeout`; exit code."""
        self.resume()
        terminate(self.popen, timeout)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self._signal(signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def ensure_alive(self) -> None:
        if not self.alive:
            tail = self.output()[-3000:]
            raise ProcessExitedError(f"{self.name} exited (code {self.popen.returncode}):\n{tail}")


@dataclass
class ServiceProcess(Process):
    """A `uvicorn <app> --factory` process listening on `url`."""

    url: str
    health: str

    def _healthy(self) -> dict[str, Any] | None:
        self.ensure_alive()
        answer = get(f"{self.url}{self.health}")
        if answer is None or answer[0] != 200:
            return None
        body: dict[str, Any] = json.loads(answer[1])
        return body

    def wait_healthy(self, within: float = START_TIMEOUT) -> dict[str, Any]:
        """The JSON body of the first 200 on the health path; fails at once if it exits."""
        return eventually_sync(self._healthy, self._awaited(), within=within, every=0.05)

    async def wait_healthy_async(self, within: float = START_TIMEOUT) -> dict[str, Any]:
        return await eventually(
            lambda: asyncio.to_thread(self._healthy), self._awaited(), within=within, every=0.05
        )

    def _awaited(self) -> str:
        return f"{self.name} answers 200 on {self.url}{self.health} (log: {self.log})"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the /metrics samples called `name` that carry `labels` (0 if none)."""
        answer = get(f"{self.url}/metrics", timeout=5.0)
        if answer is None or answer[0] != 200:
            raise AssertionError(f"{self.name}: no /metrics at {self.url} ({answer})")
        return sum(
            sample.value
            for family in text_string_to_metric_families(answer[1].decode())
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def metric_async(self, name: str, **labels: str) -> float:
        return await asyncio.to_thread(self.metric, name, **labels)


class Launcher:
    """Starts processes, each in a fresh empty directory under `root` with its log beside it,
    and stops every one still running when it closes (a `with` block, or `close()`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Process] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Process:
        """`argv` with exactly `env`, in a new empty directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        log = workdir.parent / f"{workdir.name}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, workdir, log)
        self.started.append(process)
        return process

    def start_service(
        self,
        app: str,
        env: Mapping[str, str],
        *,
        name: str | None = None,
        port: int | None = None,
        options: Sequence[str] = (),
        health: str = "/health",
        wait: bool = True,
    ) -> ServiceProcess:
        """`uvicorn <app> --factory` on 127.0.0.1 (a free port unless `port` is given), with
        uvicorn's `options`; unless `wait` is False, returned once `health` answers 200."""
        name = name or app.split(".", maxsplit=1)[0]
        port = port or free_port()
        argv = [sys.executable, "-m", "uvicorn", app, "--factory"]
        argv += ["--host", "127.0.0.1", "--port", str(port), *options]
        started = self.start(name, argv, env)
        url = f"http://127.0.0.1:{port}"
        service = ServiceProcess(name, started.popen, started.workdir, started.log, url, health)
        self.started[-1] = service
        if wait:
            service.wait_healthy()
        return service

    def close(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
