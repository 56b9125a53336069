"""The launcher's children: the migration run, the services, their health and their end.

Each service gets the listening socket the launcher bound on its port (`uvicorn --fd`): the
launcher keeps its own copy until the end, so the port cannot pass to another process, and
whatever answers on it is that child — a health check can never count someone else's stack.
`terminate` and `get` are shared with the launcher of tests and benchmarks
(devtools/launcher.py).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devtools.errors import LaunchError
from devtools.output import Console, Pump

MIGRATE_TIMEOUT: Final = 300.0
STOP_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    module: str  # started only when this module exists
    port_field: str  # the StackSettings field holding its port
    # Run as `python -m <command>`. `{fd}` is the listening socket the launcher bound on the
    # service's port and hands down: keep `--fd {fd}` (not --host/--port) in every line.
    command: str

    @property
    def port_variable(self) -> str:
        return self.port_field.upper()


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package itself is missing
        return False


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def migrate(module: str, env: dict[str, str], console: Console, log_path: Path) -> None:
    """`python -m <module>`; its output shown on success, summed up in one line on failure."""
    if not module_exists(module):
        console.say(f"migrations: {module} not found, skipped")
        return
    console.say(f"migrations: python -m {module}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", module],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=MIGRATE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(f"migrations did not finish in {MIGRATE_TIMEOUT:.0f}s") from None
    output = console.redact(done.stdout.decode(errors="replace"))
    lines = [line for line in output.splitlines() if line.strip()]
    if done.returncode == 0:
        for line in lines:
            console.say(f"{'migrations':<11}| {line}")
        return
    # An unreachable database is an expected failure: its last line, not a traceback wall.
    _private_file(log_path, output)
    last = lines[-1].strip() if lines else "no output"
    raise LaunchError(
        f"migrations failed (exit {done.returncode}): {last} (full output: {log_path})"
    )


class Child:
    def __init__(
        self, service: Service, sock: socket.socket, env: dict[str, str], console: Console
    ) -> None:
        self.name = service.name
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.console = console
        fd = sock.fileno()
        argv = [sys.executable, "-m", *service.command.format(fd=fd, port=port).split()]
        # A session of its own: Ctrl-C reaches only the launcher, which stops children in order.
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(fd,),
        )
        assert self.process.stdout is not None
        self.pump = Pump(self.name, self.process.stdout, console)
        self.pump.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def last_words(self) -> str:
        """`: <its last output line>`, or nothing."""
        self.pump.join(timeout=2)  # its last lines may still be in the pipe
        return f": {self.pump.last_line}" if self.pump.last_line else ""

    def stop(self) -> None:
        if not terminate(self.process, STOP_TIMEOUT):
            self.console.say(
                f"{self.name}: no exit after {STOP_TIMEOUT:.0f}s, killed {self.process.pid}"
            )
        self.pump.join(timeout=2)
        self.console.say(f"{self.name}: stopped (exit {self.process.returncode})")


# Health checks go straight to our own socket, never through an HTTP(S)_PROXY that could
# answer (a 502 is an answer) in a dead child's place.
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM by PID, SIGKILL if it has not exited after `timeout`; False if it had to be
    killed. A process that already exited is left as it is."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def get(url: str, timeout: float = 1.0) -> tuple[int, bytes] | None:
    """(status, body) of a GET, any status; None when nothing answers."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return None


def answers(url: str) -> bool:
    return get(url) is not None  # 503 "degraded" is still a service that answers


def wait_until_healthy(children: dict[str, Child], timeout: float, console: Console) -> None:
    """Every child answers /health, or the start fails naming the one that died."""
    pending = dict(children)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, child in list(pending.items()):
            if not child.alive:
                raise LaunchError(
                    f"{name} exited during start (exit {child.process.returncode})"
                    f"{child.last_words()}"
                )
            # Alive after the answer too: the answer came from this very process.
            if answers(f"{child.url}/health") and child.alive:
                console.say(f"{name}: ready at {child.url}")
                del pending[name]
        time.sleep(0.2)
    for name in pending:
        console.say(f"{name}: no answer on /health after {timeout:.0f}s; still running")


def supervise(children: dict[str, Child], console: Console) -> int:
    """Block until a signal (it raises) or a child's death (exit 1)."""
    while True:
        for name, child in children.items():
            if not child.alive:
                console.error(
                    f"{name} exited unexpectedly (exit {child.process.returncode})"
                    f"{child.last_words()}; stopping the stack"
                )
                return 1
        time.sleep(0.2)
