"""The stream toolkit against a real Redis: bootstrap, ack-after-effect, reclaim, dead letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devtools.polling import eventually
from devtools.settings import StackSettings
from shared.keys import Keys
from shared.streams import (
    ConsumerConfig,
    StreamConsumer,
    StreamMetrics,
    list_letters,
    replay,
)
from tests.integration.streams.support import (
    Recorder,
    equals,
    pending_count,
    publish,
    publish_raw,
    running,
    sample,
    user_event,
)

GROUP = "testgroup"


def _config(keys: Keys, consumer: str, settings: StackSettings) -> ConsumerConfig:
    return ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group=GROUP,
        consumer=consumer,
        dead_letters=keys.dead_letters(),
    )


async def test_entry_published_before_the_group_existed_is_handled(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    event = user_event("user.updated")
    await publish(redis, keys.user_events(), event)  # no group yet: FastStream would skip it
    recorder = Recorder()
    async with running(StreamConsumer(redis, _config(keys, "c1", settings), recorder)):
        await eventually(lambda: str(event.id) in recorder.handled, "the event handled")
        await eventually(
            lambda: equals(pending_count(redis, keys.user_events(), GROUP), 0), "nothing pending"
        )


async def test_poison_entry_is_dead_lettered_after_max_deliveries_and_others_proceed(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(
        stream_block="50ms", stream_claim_idle="100ms", stream_max_deliveries=3
    )
    keys = Keys(settings.key_prefix)
    recorder = Recorder()
    bad = user_event("user.deleted")
    recorder.poison.add(bad.payload.user_id)
    good_before, good_after = user_event("user.updated"), user_event("user.created")
    for event in (good_before, bad, good_after):  # one batch: the poison must not drag the rest
        await publish(redis, keys.user_events(), event)
    registry = CollectorRegistry()
    metrics = StreamMetrics.create(registry)
    consumer = StreamConsumer(redis, _config(keys, "c1", settings), recorder, metrics)
    async with running(consumer):
        await eventually(lambda: equals(redis.xlen(keys.dead_letters()), 1), "a letter")
        await eventually(
            lambda: equals(pending_count(redis, keys.user_events(), GROUP), 0), "nothing pending"
        )
    assert {str(good_before.id), str(good_after.id)} <= set(recorder.handled)
    assert str(bad.id) not in recorder.handled
    [letter] = await list_letters(redis, keys.dead_letters())
    assert letter.meta["reason"] == "handler_failed"
    assert letter.meta["deliveries"] == "3"
    assert letter.meta["group"] == GROUP
    assert f"RuntimeError: cannot handle {bad.payload.user_id}" in letter.meta["error"]
    assert orjson.loads(letter.original[b"data"])["id"] == str(bad.id)
    assert sample(registry, "stream_dead_lettered_total", group=GROUP, reason="handler_failed") == 1


async def test_unparseable_entries_are_dead_lettered_at_once_with_the_reason(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    stream = keys.user_events()
    valid = orjson.loads(user_event("user.updated").to_json())
    no_id = {k: v for k, v in valid.items() if k != "id"}
    cases: dict[str, dict[str, Any]] = {
        "malformed": {"data": b"{not json"},
        "no data": {"payload": b"x"},
        "missing id": {"data": no_id},
        "bad payload": {"data": {**valid, "payload": {"user_id": "nope"}}},
        "unknown type": {"data": {**valid, "type": "user.renamed"}},
        "wrong version": {"data": {**valid, "version": 2}},
    }
    ids = {name: await publish_raw(redis, stream, fields) for name, fields in cases.items()}
    after = user_event("user.password_changed")
    await publish(redis, stream, after)
    recorder = Recorder()
    async with running(StreamConsumer(redis, _config(keys, "c1", settings), recorder)):
        await eventually(lambda: str(after.id) in recorder.handled, "the valid event handled")
        await eventually(
            lambda: equals(redis.xlen(keys.dead_letters()), len(cases)), "a letter per bad entry"
        )
    letters = {ltr.meta["entry_id"]: ltr for ltr in await list_letters(redis, keys.dead_letters())}
    reasons = {name: letters[entry].meta["reason"] for name, entry in ids.items()}
    assert reasons == {
        "malformed": "malformed",
        "no data": "malformed",
        "missing id": "invalid",
        "bad payload": "invalid",
        "unknown type": "unknown_type",
        "wrong version": "invalid",
    }
    assert all(letters[entry].meta["deliveries"] == "1" for entry in ids.values())
    assert {letters[entry].group for entry in ids.values()} == {"*"}  # no group can parse them
    assert "missing id" in letters[ids["missing id"]].meta["error"]
    assert "version" in letters[ids["wrong version"]].meta["error"]
    assert "user.renamed" in letters[ids["unknown type"]].meta["error"]
    assert await pending_count(redis, stream, GROUP) == 0


async def test_idle_entries_of_a_dead_consumer_are_claimed_and_handled(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_claim_idle="200ms")
    keys = Keys(settings.key_prefix)
    stream = keys.user_events()
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    events = [user_event("user.updated") for _ in range(5)]
    for event in events:
        await publish(redis, stream, event)
    # "dead" takes the entries and never acks them, as a consumer killed mid-batch.
    taken: Any = await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=10)
    assert len(taken[0][1]) == 5
    recorder = Recorder()
    registry = CollectorRegistry()
    metrics = StreamMetrics.create(registry)
    async with running(StreamConsumer(redis, _config(keys, "alive", settings), recorder, metrics)):
        await eventually(lambda: len(recorder.handled) == 5, "5 events handled", within=10)
        await eventually(lambda: equals(pending_count(redis, stream, GROUP), 0), "nothing pending")
    assert sorted(recorder.handled) == sorted(str(e.id) for e in events)
    assert sample(registry, "stream_reclaimed_total", group=GROUP) == 5


async def test_a_restarted_consumer_finishes_its_own_pending_entries_at_once(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    # Claim idle of an hour: only the own-pending pass can explain the entries being handled.
    settings = make_settings(stream_block="50ms", stream_claim_idle="1h")
    keys = Keys(settings.key_prefix)
    stream = keys.user_events()
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    event = user_event("user.deleted")
    await publish(redis, stream, event)
    await redis.xreadgroup(GROUP, "same-name", {stream: ">"}, count=10)
    recorder = Recorder()
    async with running(StreamConsumer(redis, _config(keys, "same-name", settings), recorder)):
        await eventually(
            lambda: equals(pending_count(redis, stream, GROUP), 0), "nothing pending", within=5
        )
    assert recorder.handled == [str(event.id)]


async def test_replay_of_a_fixed_dead_letter_is_handled_and_leaves_the_dlq(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_claim_idle="50ms", stream_max_deliveries=2)
    keys = Keys(settings.key_prefix)
    recorder = Recorder()
    event = user_event("user.updated")
    recorder.poison.add(event.payload.user_id)
    await publish(redis, keys.user_events(), event)
    async with running(StreamConsumer(redis, _config(keys, "c1", settings), recorder)):
        await eventually(lambda: equals(redis.xlen(keys.dead_letters()), 1), "a letter")
        recorder.poison.clear()  # the cause is fixed
        [letter] = await list_letters(redis, keys.dead_letters())
        result = await replay(redis, keys.dead_letters(), [letter.id], maxlen=10_000)
        assert (result.replayed, result.missing, result.refused) == ([letter.id], [], {})
        await eventually(lambda: str(event.id) in recorder.handled, "the event handled")
    assert await redis.xlen(keys.dead_letters()) == 0
    assert await pending_count(redis, keys.user_events(), GROUP) == 0
