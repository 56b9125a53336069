"""NearCache as a pure data structure: LRU bound, TTL, epochs, liveness. No sockets."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from shared.nearcache import NearCache, NearCacheMetrics, PurgeNotice, PurgeSubscriber


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live_cache(size: int = 3, ttl: float = 2.0) -> tuple[NearCache, Clock]:
    clock = Clock()
    near = NearCache(size, ttl, clock=clock)
    near.clear(live=True)
    return near, clock


def test_get_returns_what_was_put() -> None:
    registry = CollectorRegistry()
    near = NearCache(3, 2.0, metrics=NearCacheMetrics(registry), clock=Clock())
    near.clear(live=True)
    near.put("k", b"v", near.epoch)
    assert near.get("k") == b"v"
    assert registry.get_sample_value("near_cache_lookups_total", {"result": "hit"}) == 1


def test_least_recently_used_entry_is_evicted_at_the_bound() -> None:
    near, _ = live_cache(size=2)
    near.put("a", b"1", near.epoch)
    near.put("b", b"2", near.epoch)
    assert near.get("a") == b"1"  # "b" is now the least recently used
    near.put("c", b"3", near.epoch)
    assert (near.get("a"), near.get("b"), near.get("c")) == (b"1", None, b"3")
    assert len(near) == 2


def test_entries_expire_after_the_ttl() -> None:
    near, clock = live_cache(ttl=2.0)
    near.put("k", b"v", near.epoch)
    clock.now += 1.9
    assert near.get("k") == b"v"
    clock.now += 0.2
    assert near.get("k") is None
    assert len(near) == 0


def test_put_with_an_epoch_from_before_a_drop_is_ignored() -> None:
    near, _ = live_cache()
    epoch = near.epoch  # a reader starts its Redis fetch...
    near.drop(["other"])  # ...a purge lands meanwhile...
    near.put("k", b"old", epoch)  # ...so its value may predate the purge
    assert near.get("k") is None


def test_drop_removes_only_the_named_keys() -> None:
    near, _ = live_cache()
    near.put("a", b"1", near.epoch)
    near.put("b", b"2", near.epoch)
    near.drop(["a"])
    assert (near.get("a"), near.get("b")) == (None, b"2")


def test_nothing_is_served_or_kept_while_the_subscription_is_down() -> None:
    near, _ = live_cache()
    near.put("k", b"v", near.epoch)
    near.clear(live=False)
    near.put("k", b"v", near.epoch)
    assert near.get("k") is None
    near.clear(live=True)
    assert near.get("k") is None


def test_size_zero_keeps_nothing() -> None:
    near, _ = live_cache(size=0)
    near.put("k", b"v", near.epoch)
    assert not near.enabled
    assert near.get("k") is None


def test_purge_notice_round_trip() -> None:
    notice = PurgeNotice(keys=["app:user:{x}"], event_id=uuid.UUID(int=1), generation=4)
    assert PurgeNotice.decode(notice.encode()) == notice


def test_a_notice_head_completed_by_a_script_is_the_encoded_notice() -> None:
    notice = PurgeNotice(keys=["app:user:{x}"], event_id=uuid.UUID(int=1), generation=42)
    assert PurgeNotice.head(notice.keys, uuid.UUID(int=1)) + b"42}" == notice.encode()


@pytest.mark.parametrize("data", [b"[]", b'{"keys": "one"}', b'{"keys": [1]}', b"{}", b"x"])
def test_malformed_purge_messages_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="validation error"):
        PurgeNotice.decode(data)


# -- refresh-ahead: the subscriber reads a dropped key back (no sockets: a fake reader) ----


class Reader:
    """A refresh reader whose answers the test releases one by one."""

    def __init__(self, values: dict[str, bytes | None]) -> None:
        self.values = values
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, key: str) -> bytes | None:
        self.calls.append(key)
        value = self.values[key]  # read before the gate: what Redis held when asked
        await self.gate.wait()
        if value == b"boom":
            raise ConnectionError("refused")
        return value


_REGISTRIES: dict[int, CollectorRegistry] = {}


def refreshing(values: dict[str, bytes | None]) -> tuple[NearCache, PurgeSubscriber, Reader]:
    registry = CollectorRegistry()
    near = NearCache(8, 30.0, metrics=NearCacheMetrics(registry))
    _REGISTRIES[id(near)] = registry
    near.clear(live=True)
    reader = Reader(values)
    subscriber = PurgeSubscriber(cast("Any", None), "purges", near, refresh=reader)
    return near, subscriber, reader


def notice(*keys: str) -> dict[str, Any]:
    data = PurgeNotice(keys=list(keys), event_id=uuid.UUID(int=1), generation=1).encode()
    return {"type": "message", "data": data}


def refreshes(near: NearCache, result: str) -> float:
    labels = {"result": result}
    return _REGISTRIES[id(near)].get_sample_value("near_cache_refreshes_total", labels) or 0.0


async def _ended(near: NearCache, key: str) -> None:
    for _ in range(100):
        if near.refreshing(key) is None:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the refresh of {key} did not end")


async def test_a_held_key_is_read_back_after_its_purge() -> None:
    near, subscriber, reader = refreshing({"k": b"new"})
    near.put("k", b"old", near.epoch)
    subscriber._handle(notice("k", "k:lease"))
    assert near.peek("k") is None  # dropped at once
    await _ended(near, "k")
    assert (near.peek("k"), reader.calls) == (b"new", ["k"])  # the lease was never held
    assert refreshes(near, "stored") == 1


async def test_a_key_this_cache_did_not_hold_is_not_read() -> None:
    near, subscriber, reader = refreshing({"k": b"new"})
    subscriber._handle(notice("k"))
    await asyncio.sleep(0)
    assert (reader.calls, near.refreshing("k"), near.peek("k")) == ([], None, None)


async def test_a_read_back_that_a_later_purge_overtook_is_not_kept() -> None:
    near, subscriber, reader = refreshing({"k": b"new", "other": None})
    near.put("k", b"old", near.epoch)
    near.put("other", b"x", near.epoch)
    reader.gate.clear()
    subscriber._handle(notice("k"))
    await asyncio.sleep(0)  # the read of "k" is under way...
    subscriber._handle(notice("other"))  # ...and another purge lands before its answer
    reader.gate.set()
    await _ended(near, "k")
    await _ended(near, "other")
    assert (near.peek("k"), near.peek("other")) == (None, None)
    assert (refreshes(near, "raced"), refreshes(near, "absent")) == (1, 1)


async def test_a_purge_of_a_key_being_read_back_reads_it_again() -> None:
    near, subscriber, reader = refreshing({"k": b"v2"})
    near.put("k", b"v1", near.epoch)
    reader.gate.clear()
    subscriber._handle(notice("k"))
    await asyncio.sleep(0)  # the first read has v2's predecessor in hand...
    reader.values["k"] = b"v3"
    subscriber._handle(notice("k"))  # ...not held any more, but its read is now too old
    await asyncio.sleep(0)
    reader.gate.set()
    await _ended(near, "k")
    assert (reader.calls, near.peek("k")) == (["k", "k"], b"v3")


async def test_a_reader_that_missed_waits_for_the_read_back() -> None:
    near, subscriber, reader = refreshing({"k": b"new"})
    near.put("k", b"old", near.epoch)
    reader.gate.clear()
    subscriber._handle(notice("k"))
    waiting = asyncio.create_task(near.settled("k"))
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.gate.set()
    assert await waiting == b"new"


async def test_a_failed_read_back_keeps_nothing_and_frees_its_waiters() -> None:
    near, subscriber, _ = refreshing({"k": b"boom"})
    near.put("k", b"old", near.epoch)
    subscriber._handle(notice("k"))
    assert await near.settled("k") is None
    assert refreshes(near, "failed") == 1
