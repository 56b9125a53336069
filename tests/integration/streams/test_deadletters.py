"""Dead letters with two groups on one stream, on a real Redis.

A letter names its group and a replay reaches that group only; an entry no group can parse
is lettered once; replay is byte for byte; the DLQ is bounded in length and per entry; a crash
between the dedupe guard and the letter loses nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

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
    caught_up,
    equals,
    pending_count,
    publish,
    publish_raw,
    running,
    sample,
    user_event,
)

A, B = "ga", "gb"


class Group:
    """One consumer of one group, with its own handler and metrics."""

    def __init__(self, redis: Redis, settings: StackSettings, group: str, consumer: str = "c1"):
        keys = Keys(settings.key_prefix)
        config = ConsumerConfig.from_settings(
            settings,
            stream=keys.user_events(),
            group=group,
            consumer=consumer,
            dead_letters=keys.dead_letters(),
        )
        self.name = group
        self.recorder = Recorder()
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics.create(self.registry)
        self.consumer = StreamConsumer(redis, config, self.recorder, self.metrics)

    def handled(self, event_type: str) -> float:
        return sample(
            self.registry, "stream_events_handled_total", group=self.name, type=event_type
        )

    def skipped(self) -> float:
        return sample(self.registry, "stream_replays_skipped_total", group=self.name)

    def lettered(self, reason: str) -> float:
        return sample(self.registry, "stream_dead_lettered_total", group=self.name, reason=reason)


async def _both_caught_up(redis: Redis, stream: str) -> bool:
    return await caught_up(redis, stream, A) and await caught_up(redis, stream, B)


async def _last_entry(redis: Redis, stream: str) -> dict[bytes, bytes]:
    rows: Any = await redis.xrevrange(stream, count=1)
    fields: dict[bytes, bytes] = rows[0][1]
    return fields


async def test_an_unparseable_entry_is_lettered_once_and_a_replay_does_not_double_it(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    poison = await publish_raw(redis, stream, {"data": b"{broken"})
    a, b = Group(redis, settings, A), Group(redis, settings, B)
    async with AsyncExitStack() as stack:
        for group in (a, b):
            await stack.enter_async_context(running(group.consumer))
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
        [letter] = await list_letters(redis, dlq)
        assert (letter.group, letter.meta["reason"]) == ("*", "malformed")
        assert letter.meta["entry_id"] == poison

        # Replayed, it reaches every group (none handled it) and is lettered once again.
        result = await replay(redis, dlq, None, maxlen=10_000)
        assert result.replayed == [letter.id]
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
        await eventually(lambda: equals(redis.xlen(dlq), 1), "a letter")
    [again] = await list_letters(redis, dlq)
    assert again.meta["entry_id"] != poison
    assert again.group == "*"
    written = sum(g.lettered("malformed") for g in (a, b))
    assert written == 2  # one letter per entry, whichever group wrote it


async def test_a_handler_failure_is_lettered_for_its_group_and_replayed_to_it_alone(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_claim_idle="50ms", stream_max_deliveries=2)
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    event = user_event("user.updated")
    # An extra field that is not UTF-8: the replay must give back these very bytes.
    original = {b"data": event.to_json(), b"trace": b"\xc3\x28\xff\x00"}
    await redis.xadd(stream, original)  # type: ignore[arg-type]  # bytes names: redis-py's stubs want str
    a, b = Group(redis, settings, A), Group(redis, settings, B)
    a.recorder.poison.add(event.payload.user_id)
    async with running(a.consumer), running(b.consumer):
        await eventually(lambda: equals(redis.xlen(dlq), 1), "a letter")
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
        [letter] = await list_letters(redis, dlq)
        assert (letter.group, letter.meta["reason"]) == (A, "handler_failed")
        assert letter.original == original
        assert b.recorder.handled == [str(event.id)]

        a.recorder.poison.clear()  # the cause is fixed
        result = await replay(redis, dlq, [letter.id], maxlen=10_000)
        assert result.replayed == [letter.id]
        assert await _last_entry(redis, stream) == {**original, b"dlq:for": A.encode()}
        await eventually(lambda: str(event.id) in a.recorder.handled, "A handled the replay")
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
    assert b.recorder.handled == [str(event.id)]  # B handled it once, at first, never again
    assert b.handled("user.updated") == 1
    assert b.skipped() == 1  # B acked the replay unhandled
    assert (a.handled("user.updated"), a.skipped()) == (1, 0)
    assert await redis.xlen(dlq) == 0


async def test_replay_gives_back_data_that_is_not_utf8_byte_for_byte(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    original = {b"data": b'{"id": "\xff\xfe\x80"}', b"\xfename": b"\xe9t\xe9"}
    await redis.xadd(stream, original)  # type: ignore[arg-type]  # bytes names: redis-py's stubs want str
    group = Group(redis, settings, A)
    async with running(group.consumer):
        await eventually(lambda: equals(redis.xlen(dlq), 1), "a letter")
    [letter] = await list_letters(redis, dlq)
    assert letter.meta["reason"] == "malformed"  # not UTF-8, so not JSON
    result = await replay(redis, dlq, [letter.id], maxlen=10_000)
    assert result.replayed == [letter.id]
    assert await _last_entry(redis, stream) == original  # `*`: no marker, every group again


async def test_the_dlq_is_trimmed_to_about_dlq_maxlen(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_max_records=50, dlq_maxlen=10)
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    pipe = redis.pipeline(transaction=False)
    for n in range(250):
        pipe.xadd(stream, {"data": b"{broken %d" % n})  # type: ignore[unused-awaitable]  # queued
    ids = [i.decode() for i in await pipe.execute()]
    async with running(Group(redis, settings, A).consumer):
        await eventually(lambda: caught_up(redis, stream, A), "A caught up")
    # Approximate MAXLEN trims whole nodes (100 entries each by default), never below 10.
    assert 10 <= await redis.xlen(dlq) <= 10 + 100
    newest: Any = await redis.xrevrange(dlq, count=1)
    assert newest[0][1][b"dlq:entry_id"] == ids[-1].encode()


async def test_an_oversize_entry_is_kept_truncated_once_and_replay_refuses_it(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", dlq_max_entry_bytes=4096)
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    big = b"{" + b"x" * 1_000_000
    await publish_raw(redis, stream, {"data": big})
    async with AsyncExitStack() as stack:
        for name in (A, B):
            await stack.enter_async_context(running(Group(redis, settings, name).consumer))
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
    [letter] = await list_letters(redis, dlq)
    assert letter.truncated
    assert letter.meta["size"] == str(len(b"data") + len(big))
    assert letter.original == {b"data": big[: 4096 - len(b"data")]}
    assert int(await redis.memory_usage(dlq) or 0) < 20_000  # not the megabyte, not twice

    result = await replay(redis, dlq, None, maxlen=10_000)
    assert result.replayed == []
    assert list(result.refused) == [letter.id]
    assert result.refused[letter.id].startswith("truncated: the entry was 1000005 bytes")
    assert await redis.xlen(dlq) == 1  # kept for the operator to read and drop


async def test_a_crash_between_the_guard_and_the_letter_loses_nothing(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms", stream_claim_idle="100ms")
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    for group in (A, B):
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    poison = await publish_raw(redis, stream, {"data": b"{broken"})
    # A consumer of A took the entry, claimed the guard for A, then died before the letter.
    await redis.xreadgroup(A, "dead", {stream: ">"}, count=10)
    await redis.set(keys.dead_letter_guard(poison, stream), A)

    async with running(Group(redis, settings, B).consumer):
        await eventually(lambda: caught_up(redis, stream, B), "B caught up")
    assert await redis.xlen(dlq) == 0  # B leaves the letter to A, which owns it

    async with running(Group(redis, settings, A, consumer="alive").consumer):
        await eventually(lambda: equals(redis.xlen(dlq), 1), "a letter")  # A's redelivery writes it
        await eventually(lambda: equals(pending_count(redis, stream, A), 0), "nothing pending in A")
    [letter] = await list_letters(redis, dlq)
    assert (letter.group, letter.meta["entry_id"], letter.meta["consumer"]) == (
        "*",
        poison,
        "alive",
    )


async def test_an_entry_replayed_for_a_group_that_fails_to_parse_is_lettered_for_it(
    redis: Redis, make_settings: Callable[..., StackSettings]
) -> None:
    settings = make_settings(stream_block="50ms")
    keys = Keys(settings.key_prefix)
    stream, dlq = keys.user_events(), keys.dead_letters()
    await publish_raw(redis, stream, {"data": b"{broken", "dlq:for": A.encode()})
    after = user_event("user.deleted", uuid.uuid4())
    await publish(redis, stream, after)
    a, b = Group(redis, settings, A), Group(redis, settings, B)
    async with running(a.consumer), running(b.consumer):
        await eventually(lambda: _both_caught_up(redis, stream), "both groups caught up")
    [letter] = await list_letters(redis, dlq)
    assert letter.group == A  # only A was asked; no guard, no `*`
    assert letter.original == {b"data": b"{broken"}  # the marker is not part of the entry
    assert b.skipped() == 1
    assert str(after.id) in b.recorder.handled
