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

from shared.keys import Keys
from shared.settings import Settings
from shared.streams.deadletter import letter_fields
from tests.integration.streams.support import publish, user_event

CLI = str(Path(sys.executable).with_name("platformctl"))


def platformctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_dsn,
        "REDIS_MODE": settings.redis_mode.value,  # the run's topology (--redis-mode)
        "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels),
        "KEY_PREFIX": settings.key_prefix,
        "APP_ENV": "test",
    }
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


async def _dead_letter(redis: Redis, keys: Keys, data: bytes, reason: str) -> str:
    fields: dict[Any, Any] = letter_fields(
        {"data": data},
        error=f"because {reason}",
        reason=reason,
        group="invalidator",
        deliveries=5,
        stream=keys.user_events(),
        entry_id="1-0",
        consumer="c1",
    )
    entry_id = await redis.xadd(keys.dead_letters(), fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def test_streams_status_reports_groups_consumers_pending_and_lag(
    redis: Redis, settings: Settings
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


async def test_dlq_list_replay_and_drop(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    event = user_event("user.deleted")
    first = await _dead_letter(redis, keys, event.to_json(), "handler_failed")
    second = await _dead_letter(redis, keys, b"{broken", "malformed")
    third = await _dead_letter(redis, keys, b"{also broken", "malformed")

    listed = platformctl(settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert [letter["id"] for letter in letters] == [first, second, third]
    assert letters[0]["reason"] == "handler_failed"
    assert letters[0]["error"] == "because handler_failed"

    replayed = platformctl(settings, "dlq", "replay", first)
    assert replayed.returncode == 0, replayed.stderr
    rows: Any = await redis.xrange(keys.user_events())
    [(_, fields)] = rows
    assert fields == {b"data": event.to_json()}  # exactly what the publisher wrote
    assert await redis.xlen(keys.dead_letters()) == 2

    missing = platformctl(settings, "dlq", "replay", "9-9")
    assert missing.returncode == 1
    assert "not found" in missing.stdout

    dropped = platformctl(settings, "dlq", "drop", second)
    assert (dropped.returncode, dropped.stdout.strip()) == (0, "dropped 1 dead letter(s)")
    dropped_all = platformctl(settings, "dlq", "drop", "--all")
    assert dropped_all.stdout.strip() == "dropped 1 dead letter(s)"
    assert await redis.xlen(keys.dead_letters()) == 0


async def test_cache_stats_reports_hit_ratio_and_the_biggest_keys(
    redis: Redis, settings: Settings
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


def test_unreachable_redis_exits_2_with_the_reason(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    result = platformctl(settings, "streams", "status")
    assert result.returncode == 2
    assert "error: Redis" in result.stderr
