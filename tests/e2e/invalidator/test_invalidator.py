"""The invalidator as real processes on a real Redis: bootstrap, crash, two instances, poison.

Every test talks to the processes over HTTP and Redis only, and kills them by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from shared.keys import Keys
from shared.streams import list_letters
from tests.e2e.invalidator.conftest import StartInvalidator
from tests.integration.streams.support import (
    equals,
    pending_count,
    publish,
    publish_raw,
    user_event,
)

GROUP = "invalidator"
PLATFORMCTL = str(Path(sys.executable).with_name("platformctl"))


async def _cached(redis: Redis, keys: Keys, users: list[uuid.UUID]) -> int:
    """How many of the users' value and lease keys still exist."""
    total = 0
    for start in range(0, len(users), 1000):
        chunk = users[start : start + 1000]
        names = [k for u in chunk for k in (keys.user(u), keys.user_lease(u))]
        total += int(await redis.exists(*names))
    return total


async def _fill(redis: Redis, keys: Keys, users: list[uuid.UUID]) -> None:
    pipe = redis.pipeline(transaction=False)
    for uid in users:
        pipe.set(keys.user(uid), b'{"cached": true}', ex=600)  # type: ignore[unused-awaitable]  # queued
        pipe.set(keys.user_lease(uid), b"token", px=60_000)  # type: ignore[unused-awaitable]  # queued
    await pipe.execute()


async def _group(redis: Redis, stream: str) -> dict[str, Any]:
    groups: Any = await redis.xinfo_groups(stream)
    return next((g for g in groups if g["name"] == GROUP.encode()), {})


async def test_an_event_published_before_the_first_start_is_purged_and_announced(
    redis: Redis, key_prefix: str, start_invalidator: StartInvalidator
) -> None:
    keys = Keys(key_prefix)
    event = user_event("user.password_changed")
    uid = event.payload.user_id
    await _fill(redis, keys, [uid])
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.cache_invalidated())
    await publish(redis, keys.user_events(), event)  # no group exists yet

    invalidator = start_invalidator()
    health = await invalidator.wait_healthy_async()
    assert health["status"] == "ok"
    await eventually(lambda: equals(_cached(redis, keys, [uid]), 0), "the user's keys purged")
    assert await redis.get(keys.user_list_gen()) == b"1"
    await eventually(
        lambda: equals(pending_count(redis, keys.user_events(), GROUP), 0), "nothing pending"
    )
    message = await eventually(
        lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1),
        "the purge notice",
        every=0,  # get_message waits up to 0.1 s itself
    )
    notice = orjson.loads(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    assert notice == {
        "keys": [keys.user(uid), keys.user_lease(uid)],
        "generation": 1,
        "event_id": str(event.id),
    }
    lag_count = await invalidator.metric_async("invalidation_lag_seconds_count")
    assert lag_count == 1
    handled = await invalidator.metric_async(
        "stream_events_handled_total", group=GROUP, type="user.password_changed"
    )
    assert handled == 1


async def test_sigkill_midway_then_restart_purges_everything_and_leaves_nothing_pending(
    redis: Redis, key_prefix: str, start_invalidator: StartInvalidator
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    users = [uuid.uuid4() for _ in range(10_000)]
    await _fill(redis, keys, users)
    pipe = redis.pipeline(transaction=False)
    for uid in users:
        pipe.xadd(stream, {"data": user_event("user.updated", uid).to_json()})  # type: ignore[unused-awaitable]  # queued
    await pipe.execute()

    # Small batches and an hour of claim idle: the drain takes seconds (so the kill lands
    # midway), and only the restarted instance re-reading its own pending entries can
    # finish the batch it had in hand.
    env = {"stream_max_records": "10", "stream_claim_idle": "1h"}
    first = start_invalidator(**env)

    async def read_some() -> bool:
        return int((await _group(redis, stream)).get("entries-read") or 0) >= 1500

    await eventually(read_some, "1500 entries read", within=30, every=0.002)
    first.kill()
    read_at_kill = int((await _group(redis, stream))["entries-read"])
    assert read_at_kill < len(users), "the kill must land before the drain finished"
    consumers: Any = await redis.xinfo_consumers(stream, GROUP)
    assert len(consumers) == 1
    name = consumers[0]["name"].decode()

    second = start_invalidator(**env)
    health = await second.wait_healthy_async()
    assert health["consumer"] == name  # the persisted slot gives the same consumer back

    async def drained() -> bool:
        group = await _group(redis, stream)
        return group["pending"] == 0 and int(group["entries-read"]) == len(users)

    await eventually(drained, "every entry read and acked", within=60)
    assert await _cached(redis, keys, users) == 0
    assert await pending_count(redis, stream, GROUP) == 0
    assert await redis.xlen(keys.dead_letters()) == 0


async def test_two_processes_split_the_work_and_a_dead_ones_entries_are_claimed(
    redis: Redis, key_prefix: str, start_invalidator: StartInvalidator
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    # A long block keeps an idle consumer parked in XREADGROUP, where a paused one is too.
    env = {"stream_claim_idle": "1s", "stream_block": "10s"}
    a = start_invalidator(consumer_name="a", **env)
    b = start_invalidator(consumer_name="b", **env)
    await a.wait_healthy_async()
    await b.wait_healthy_async()
    for _ in range(200):  # one at a time: each XADD wakes the longest-waiting reader
        await publish(redis, stream, user_event("user.updated"))
    await eventually(
        lambda: equals(_group_read_and_acked(redis, stream), (200, 0)), "200 read, none pending"
    )
    by_a = await a.metric_async("stream_events_handled_total", group=GROUP, type="user.updated")
    by_b = await b.metric_async("stream_events_handled_total", group=GROUP, type="user.updated")
    assert by_a > 0
    assert by_b > 0
    assert by_a + by_b == 200

    a.pause()  # parked in XREADGROUP: Redis still hands it entries it will never ack
    users = [uuid.uuid4() for _ in range(20)]
    await _fill(redis, keys, users)
    for uid in users:
        await publish(redis, stream, user_event("user.deleted", uid))

    async def a_holds_some() -> bool:
        summary = await redis.xpending(stream, GROUP)
        return any(c["name"] == b"a" and c["pending"] > 0 for c in summary["consumers"])

    await eventually(a_holds_some, "the paused consumer holds entries", within=10)
    a.kill()
    # Only a's entries: b may have entries of its own in flight at this moment.
    summary = await redis.xpending(stream, GROUP)
    stranded = sum(int(c["pending"]) for c in summary["consumers"] if c["name"] == b"a")
    assert stranded > 0

    await eventually(
        lambda: equals(pending_count(redis, stream, GROUP), 0), "nothing pending", within=15
    )
    assert await _cached(redis, keys, users) == 0
    assert await b.metric_async("stream_reclaimed_total", group=GROUP) >= stranded


async def _group_read_and_acked(redis: Redis, stream: str) -> tuple[int, int]:
    group = await _group(redis, stream)
    return int(group.get("entries-read") or 0), int(group.get("pending", -1))


def _platformctl(
    key_prefix: str, redis_env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **redis_env, "KEY_PREFIX": key_prefix, "APP_ENV": "test"}
    return subprocess.run(
        [PLATFORMCTL, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_a_persistent_failure_is_dead_lettered_after_n_deliveries_then_replayed(
    redis: Redis, redis_env: dict[str, str], key_prefix: str, start_invalidator: StartInvalidator
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    await redis.set(keys.user_list_gen(), "not-a-number")  # every purge now fails on INCR
    invalidator = start_invalidator(
        stream_max_deliveries="3", stream_claim_idle="200ms", housekeeping_interval="200ms"
    )
    await invalidator.wait_healthy_async()
    event = user_event("user.updated")
    await publish(redis, stream, event)

    await eventually(lambda: equals(redis.xlen(keys.dead_letters()), 1), "a letter", within=15)
    [letter] = await list_letters(redis, keys.dead_letters())
    assert letter.meta["reason"] == "handler_failed"
    assert letter.meta["deliveries"] == "3"
    assert letter.meta["group"] == GROUP
    assert "not an integer" in letter.meta["error"]
    assert orjson.loads(letter.original[b"data"])["id"] == str(event.id)
    assert await pending_count(redis, stream, GROUP) == 0
    assert (
        await invalidator.metric_async("stream_dead_lettered_total", reason="handler_failed") == 1
    )

    async def gauge() -> float:
        return await invalidator.metric_async("stream_dead_letters", group=GROUP)

    # Housekeeping counts the DLQ by group.
    await eventually(lambda: equals(gauge(), 1), "stream_dead_letters is 1")

    await redis.delete(keys.user_list_gen())  # the cause is fixed
    uid = event.payload.user_id
    await _fill(redis, keys, [uid])
    replayed = _platformctl(key_prefix, redis_env, "dlq", "replay", letter.id)
    assert replayed.returncode == 0, replayed.stderr
    await eventually(lambda: equals(_cached(redis, keys, [uid]), 0), "the user's keys purged")
    await eventually(lambda: equals(pending_count(redis, stream, GROUP), 0), "nothing pending")
    assert await redis.get(keys.user_list_gen()) == b"1"
    assert await redis.xlen(keys.dead_letters()) == 0
    rows: Any = await redis.xrevrange(stream, count=1)
    assert rows[0][1] == {b"data": event.to_json(), b"dlq:for": GROUP.encode()}  # for us alone
    await eventually(lambda: equals(gauge(), 0), "stream_dead_letters is 0")


async def test_unparseable_entries_are_dead_lettered_at_once_and_later_ones_are_handled(
    redis: Redis, key_prefix: str, start_invalidator: StartInvalidator
) -> None:
    keys = Keys(key_prefix)
    stream = keys.user_events()
    valid = orjson.loads(user_event("user.updated").to_json())
    bad: dict[str, dict[str, Any]] = {
        "malformed": {"data": b'{"id": '},
        "missing fields": {"data": {k: v for k, v in valid.items() if k != "occurred_at"}},
        "unknown type": {"data": {**valid, "type": "user.teleported"}},
        "wrong version": {"data": {**valid, "version": 7}},
    }
    ids = {name: await publish_raw(redis, stream, fields) for name, fields in bad.items()}
    after = user_event("user.deleted")
    await _fill(redis, keys, [after.payload.user_id])
    await publish(redis, stream, after)

    invalidator = start_invalidator(stream_max_deliveries="5")
    await invalidator.wait_healthy_async()
    purged = [after.payload.user_id]
    await eventually(lambda: equals(_cached(redis, keys, purged), 0), "the user's keys purged")
    await eventually(lambda: equals(pending_count(redis, stream, GROUP), 0), "nothing pending")
    letters = {x.meta["entry_id"]: x for x in await list_letters(redis, keys.dead_letters())}
    assert {name: letters[i].meta["reason"] for name, i in ids.items()} == {
        "malformed": "malformed",
        "missing fields": "invalid",
        "unknown type": "unknown_type",
        "wrong version": "invalid",
    }
    assert {letters[i].meta["deliveries"] for i in ids.values()} == {"1"}
    assert {letters[i].group for i in ids.values()} == {"*"}  # lettered once for every group
    assert "occurred_at" in letters[ids["missing fields"]].meta["error"]
    assert "user.teleported" in letters[ids["unknown type"]].meta["error"]


async def test_started_while_redis_is_down_it_reports_503_then_recovers_by_itself(
    key_prefix: str,
    start_invalidator: StartInvalidator,
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    server.kill()
    invalidator = start_invalidator(redis_url=server.url, redis_mode="standalone")
    async with httpx.AsyncClient(timeout=5) as client:

        async def answers_503() -> bool:
            try:
                return (await client.get(f"{invalidator.url}/health")).status_code == 503
            except httpx.HTTPError:
                return False  # not listening yet

        await eventually(answers_503, "/health answers 503", within=20)
        server.restart()
        body = await invalidator.wait_healthy_async()
    assert body["status"] == "ok"
    keys = Keys(key_prefix)
    redis = Redis.from_url(server.url)
    try:
        event = user_event("user.deleted")
        await _fill(redis, keys, [event.payload.user_id])
        await publish(redis, keys.user_events(), event)
        purged = [event.payload.user_id]
        await eventually(lambda: equals(_cached(redis, keys, purged), 0), "the keys purged")
    finally:
        await redis.aclose()
