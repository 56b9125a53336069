"""`platformctl` as a real process against a real Redis: status, dlq list/replay/drop, cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from devtools.settings import StackSettings
from shared.keys import Keys
from shared.streams.deadletter import letter_fields
from tests.integration.streams.support import publish, user_event

CLI = str(Path(sys.executable).with_name("platformctl"))


def platformctl(settings: StackSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_dsn,
        "KEY_PREFIX": settings.key_prefix,
        "APP_ENV": "test",
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
    assert report["hits"] >= 1
    assert report["misses"] >= 1
    assert 0 < report["hit_ratio"] < 1
    assert report["sampled_keys"] == 2
    assert report["memory"]["used_memory"] > 0


def test_unreachable_redis_exits_2_with_the_reason(
    make_settings: Callable[..., StackSettings],
) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    result = platformctl(settings, "streams", "status")
    assert result.returncode == 2
    assert "error: Redis" in result.stderr
