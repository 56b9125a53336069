"""NearCache as a pure data structure: LRU bound, TTL, epochs, liveness. No sockets."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import CollectorRegistry

from shared.nearcache import NearCache, NearCacheMetrics, PurgeNotice


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
