"""`platformctl` as a real process against a real Redis: status, dlq list/replay/drop, cache
stats (with the api's own counters from a real /metrics page), and which Redis it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from api.metrics import ApiMetrics
from devtools.redis_server import free_port
from devtools.settings import StackSettings
from shared import devstack
from shared.cli import CliSettings
from shared.keys import Keys
from shared.streams.deadletter import letter_fields
from tests.integration.streams.support import publish, user_event

CLI = str(Path(sys.executable).with_name("platformctl"))


def platformctl(settings: StackSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_dsn,
        "REDIS_MODE": settings.redis_mode.value,  # the run's topology (--redis-mode)
        "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels),
        "KEY_PREFIX": settings.key_prefix,
        "APP_ENV": "test",
        # No api listens there: `cache stats` never reads a stack on the default 8000.
        "API_PORT": str(free_port()),
    }
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


async def _dead_letter(
    redis: Redis,
    keys: Keys,
    data: bytes,
    reason: str,
    *,
    group: str = "invalidator",
    cap: int = 65_536,
) -> str:
    fields: dict[Any, Any] = letter_fields(
        {b"data": data},
        error=f"because {reason}",
        reason=reason,
        group=group,
        deliveries=5,
        stream=keys.user_events(),
        entry_id="1-0",
        consumer="c1",
        max_entry_bytes=cap,
    )
    entry_id = await redis.xadd(keys.dead_letters(), fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def test_streams_status_reports_groups_consumers_pending_and_lag(
    redis: Redis, settings: StackSettings
) -> None:
    keys = Keys(settings.key_prefix)
    stream = keys.user_events()
    await redis.xgroup_create(stream, "g1", id="0", mkstream=True)
    for _ in range(5):
        await publish(redis, stream, user_event("user.updated"))
    await redis.xreadgroup("g1", "worker-1", {stream: ">"}, count=2)

    result = platformctl(settings, "streams", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["length"] == 5
    [group] = status["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("g1", 2, 3)
    assert group["oldest_pending_age_seconds"] is not None
    assert [(c["name"], c["pending"]) for c in group["consumers"]] == [("worker-1", 2)]

    text = platformctl(settings, "streams", "status")
    assert "group g1: pending 2, lag 3" in text.stdout


async def test_dlq_list_replay_and_drop(redis: Redis, settings: StackSettings) -> None:
    keys = Keys(settings.key_prefix)
    event = user_event("user.deleted")
    first = await _dead_letter(redis, keys, event.to_json(), "handler_failed")
    second = await _dead_letter(redis, keys, b"{broken", "malformed", group="*")
    third = await _dead_letter(redis, keys, b"{also broken", "malformed", group="*")

    listed = platformctl(settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert [letter["id"] for letter in letters] == [first, second, third]
    assert letters[0]["reason"] == "handler_failed"
    assert letters[0]["error"] == "because handler_failed"
    assert [letter["group"] for letter in letters] == ["invalidator", "*", "*"]
    text = platformctl(settings, "dlq", "list", "--group", "*")
    assert text.stdout.splitlines()[0].startswith(f"{second} malformed group=* deliveries=5")
    assert text.stdout.splitlines()[-1] == "2 dead letter(s) shown"

    replayed = platformctl(settings, "dlq", "replay", first)
    assert replayed.returncode == 0, replayed.stderr
    rows: Any = await redis.xrange(keys.user_events())
    [(_, fields)] = rows
    # Exactly what the publisher wrote, plus the group it is replayed for.
    assert fields == {b"data": event.to_json(), b"dlq:for": b"invalidator"}
    assert await redis.xlen(keys.dead_letters()) == 2

    missing = platformctl(settings, "dlq", "replay", "9-9")
    assert missing.returncode == 1
    assert "not found: 9-9" in missing.stdout

    dropped = platformctl(settings, "dlq", "drop", second)
    assert (dropped.returncode, dropped.stdout.strip()) == (0, "dropped 1 dead letter(s)")
    dropped_all = platformctl(settings, "dlq", "drop", "--all")
    assert dropped_all.stdout.strip() == "dropped 1 dead letter(s)"
    assert await redis.xlen(keys.dead_letters()) == 0


async def test_dlq_replay_is_byte_exact_and_refuses_a_truncated_letter_by_name(
    redis: Redis, settings: StackSettings
) -> None:
    keys = Keys(settings.key_prefix)
    whole = await _dead_letter(redis, keys, b"{\xff\xfe not utf-8", "malformed", group="*")
    big = b"{" + b"x" * 10_000
    cut = await _dead_letter(redis, keys, big, "malformed", group="*", cap=1024)
    other = await _dead_letter(redis, keys, b"{}", "handler_failed", group="session")

    listed = platformctl(settings, "dlq", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(cut))
    assert "size=10005 TRUNCATED (not replayable)" in line

    result = platformctl(settings, "dlq", "replay", "--all", "--group", "*")
    assert result.returncode == 1  # one letter was refused
    assert f"not replayed {cut}: truncated: the entry was 10005 bytes" in result.stdout
    assert result.stdout.splitlines()[-1] == "replayed 1 dead letter(s); 1 refused"
    rows: Any = await redis.xrange(keys.user_events())
    assert [fields for _, fields in rows] == [{b"data": b"{\xff\xfe not utf-8"}]
    remaining: Any = await redis.xrange(keys.dead_letters())
    assert [entry_id.decode() for entry_id, _ in remaining] == [cut, other]
    assert whole not in result.stdout.split("not replayed")[-1]

    wrong_group = platformctl(settings, "dlq", "replay", "--group", "invalidator", other)
    assert wrong_group.returncode == 1
    assert f"not replayed {other}: a letter of group 'session', not 'invalidator'" in (
        wrong_group.stdout
    )


async def test_dlq_list_escapes_control_characters(redis: Redis, settings: StackSettings) -> None:
    keys = Keys(settings.key_prefix)
    await _dead_letter(redis, keys, b"{}", "handler_failed\x1b[2J\nforged line")
    listed = platformctl(settings, "dlq", "list")
    assert "\x1b" not in listed.stdout
    assert listed.stdout.count("\n") == 2  # the letter and the summary, nothing forged
    assert "handler_failed\\x1b[2J\\nforged line" in listed.stdout


async def test_cache_stats_reports_hit_ratio_and_the_biggest_keys(
    redis: Redis, settings: StackSettings
) -> None:
    keys = Keys(settings.key_prefix)
    big, small = keys.user("0b7e8d1c-7a5e-4b8e-9a57-3f1e2d4c5b6a"), keys.user_list_gen()
    await redis.set(big, b"x" * 50_000, ex=60)
    await redis.set(small, 1)
    await redis.get(big)
    await redis.get(keys.user("1b7e8d1c-7a5e-4b8e-9a57-3f1e2d4c5b6a"))  # a miss

    result = platformctl(settings, "cache", "stats", "--json", "--top", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["big_keys"][0]["key"] == big
    assert report["big_keys"][0]["bytes"] >= 50_000
    # INFO's figures are the whole server's, and named so.
    assert report["keyspace_hits"] >= 1
    assert report["keyspace_misses"] >= 1
    assert 0 < report["keyspace_hit_ratio"] < 1
    assert report["sampled_keys"] == 2
    assert report["memory"]["used_memory"] > 0
    text = platformctl(settings, "cache", "stats")
    assert "server-wide keyspace hit ratio (INFO): " in text.stdout


def test_unreachable_redis_exits_2_with_one_redacted_line(
    make_settings: Callable[..., StackSettings],
) -> None:
    settings = make_settings(redis_url="redis://ops:pw-secret-1@127.0.0.1:1/0")
    result = platformctl(settings, "streams", "status")
    assert result.returncode == 2
    assert "pw-secret-1" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    said, error = result.stderr.strip().splitlines()
    assert said.startswith(
        "platformctl: Redis redis://ops:***@127.0.0.1:1/0 (REDIS_URL from the environment)"
    )
    assert error.startswith("error: Redis at 127.0.0.1:1: ConnectionError: ")


def bare_env(**extra: str) -> dict[str, str]:
    """The test's environment without any setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in CliSettings.model_fields}
    return {**env, "APP_ENV": "test", **extra}


def platformctl_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def a_dead_pid() -> int:
    """The PID of a shell that printed it and exited (and was reaped)."""
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(done.stdout)


async def test_beside_a_dev_stack_it_reads_the_stacks_redis_and_says_so(
    redis: Redis, settings: StackSettings, redis_env: dict[str, str], tmp_path: Path
) -> None:
    keys = Keys(settings.key_prefix)
    await publish(redis, keys.user_events(), user_event("user.updated"))
    (tmp_path / ".devstack").mkdir()
    # The run's topology (a cluster or Sentinel run names its mode beside the URL).
    topology = {k: v for k, v in redis_env.items() if k in {"REDIS_MODE", "REDIS_SENTINELS"}}
    values = {"REDIS_URL": settings.redis_dsn, "KEY_PREFIX": settings.key_prefix, **topology}
    devstack.write(tmp_path / ".devstack" / "env", values, os.getpid())

    result = platformctl_in(tmp_path, bare_env(), "streams", "status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["length"] == 1  # the stack's Redis, the stack's prefix
    assert result.stderr.splitlines() == [
        f"platformctl: Redis {settings.redis_dsn} (REDIS_URL from .devstack/env, written by "
        f"make run pid {os.getpid()}), key prefix {settings.key_prefix}"
    ]

    # `.env` as .env.example has it (the parts, an empty REDIS_URL) leaves the stack's Redis
    # in force, as make run itself ignores the parts and starts its own Redis.
    (tmp_path / ".env").write_text("REDIS_URL=\nREDIS_HOST=127.0.0.1\nREDIS_PORT=1\n")
    copied = platformctl_in(tmp_path, bare_env(), "streams", "status", "--json")
    assert copied.returncode == 0, copied.stderr
    assert "(REDIS_URL from .devstack/env, written by make run pid" in copied.stderr

    # `.env` beats the stack's file, and the environment beats `.env`.
    (tmp_path / ".env").write_text("REDIS_URL=redis://127.0.0.1:1/0\n")
    from_dotenv = platformctl_in(tmp_path, bare_env(), "streams", "status")
    assert from_dotenv.returncode == 2
    assert "(REDIS_URL from .env)" in from_dotenv.stderr.splitlines()[0]
    explicit = bare_env(REDIS_URL=settings.redis_dsn, **topology)
    from_environment = platformctl_in(tmp_path, explicit, "streams", "status")
    assert from_environment.returncode == 0, from_environment.stderr
    # A Redis named in the environment is an explicit choice: nothing of the stack's file,
    # its KEY_PREFIX included, is read then.
    assert "(REDIS_URL from the environment), key prefix app" in from_environment.stderr

    other = tmp_path / "elsewhere.env"
    devstack.write(other, values, os.getpid())
    (tmp_path / ".env").unlink()
    named = platformctl_in(tmp_path, bare_env(), "--stack-env", str(other), "streams", "status")
    assert named.returncode == 0, named.stderr
    assert f"(REDIS_URL from {other}, written by make run pid" in named.stderr


def test_a_file_left_by_a_dead_launcher_is_ignored(settings: StackSettings, tmp_path: Path) -> None:
    (tmp_path / ".devstack").mkdir()
    values = {"REDIS_URL": settings.redis_dsn, "KEY_PREFIX": settings.key_prefix}
    devstack.write(tmp_path / ".devstack" / "env", values, a_dead_pid())
    # Parts alone in `.env` (as .env.example has them) would lose to a live stack's REDIS_URL.
    (tmp_path / ".env").write_text("REDIS_HOST=127.0.0.1\nREDIS_PORT=1\n")
    result = platformctl_in(tmp_path, bare_env(), "streams", "status")
    assert result.returncode == 2
    said = result.stderr.splitlines()[0]
    assert said == (
        "platformctl: Redis redis://127.0.0.1:1/0 (REDIS_URL unset: built from REDIS_HOST from "
        ".env, REDIS_PORT from .env; .devstack/env ignored: the make run that wrote it is gone)"
        ", key prefix app"
    )


@pytest.fixture
def api_page() -> Iterator[tuple[str, ApiMetrics]]:
    """The api's real metrics registry, served as its /metrics page is."""
    metrics = ApiMetrics()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(metrics.registry)
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", metrics
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_cache_stats_shows_the_apis_own_cache_counters(
    settings: StackSettings, api_page: tuple[str, ApiMetrics]
) -> None:
    url, metrics = api_page
    for result in ("hit", "hit", "hit", "miss"):
        metrics.cache.count("get", result)
    metrics.cache.count("store", "stored")
    metrics.near.hit.inc(2)

    report = platformctl(settings, "cache", "stats", "--json", "--api-url", url)
    assert report.returncode == 0, report.stderr
    api = json.loads(report.stdout)["api_cache"]
    assert api["url"] == f"{url}/metrics"
    assert api["redis"] == {
        "results": {"hit": 3, "miss": 1},
        "hits": 3,
        "misses": 1,
        "hit_ratio": 0.75,
    }
    assert (api["near"]["hits"], api["near"]["misses"]) == (2, 0)

    text = platformctl(settings, "cache", "stats", "--api-url", url).stdout
    assert "  Redis cache get hit ratio: 0.75 (3 hits, 1 misses)" in text
    assert "  near cache hit ratio: 1.0 (2 hits, 0 misses)" in text


def test_cache_stats_says_in_one_line_when_the_api_is_unreachable(
    settings: StackSettings,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = platformctl(settings, "cache", "stats", "--api-url", url)
    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("api cache counters")]
    assert line.startswith(f"api cache counters: not available ({url}/metrics: ")
    assert len(result.stderr.splitlines()) == 1  # only which Redis it read
    refused = platformctl(settings, "cache", "stats", "--api-url", "file:///etc/passwd")
    assert refused.returncode == 2
    assert "expected a URL starting with http://, https://" in refused.stderr
