"""The in-process denial cache, on a fake clock (pure)."""

from __future__ import annotations

import pytest

from shared.limiter import Decision, DenialCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def denial(retry: float = 2.0) -> Decision:
    return Decision(False, 5, 0, reset=1000.0 + retry, retry_after=retry, now=1000.0)


def test_a_denial_is_answered_until_its_retry_after() -> None:
    clock = Clock()
    cache = DenialCache(clock=clock)
    cache.put("k", 1, denial(retry=2.0))
    clock.now += 1.5
    hit = cache.get("k", 1)
    assert hit is not None
    assert hit.cached
    assert not hit.allowed
    assert hit.retry_after == pytest.approx(0.5)
    assert hit.now == pytest.approx(1001.5)  # the server clock moved on with ours
    clock.now += 0.5
    assert cache.get("k", 1) is None
    assert len(cache) == 0


def test_a_cheaper_request_is_not_answered_from_the_cache() -> None:
    cache = DenialCache(clock=Clock())
    cache.put("k", 3, denial())
    assert cache.get("k", 1) is None
    assert cache.get("k", 3) is not None
    assert cache.get("k", 5) is not None


def test_admissions_are_never_cached() -> None:
    cache = DenialCache(clock=Clock())
    cache.put("k", 1, Decision(True, 5, 4, reset=1001.0, retry_after=0.0, now=1000.0))
    assert cache.get("k", 1) is None


def test_size_is_bounded_oldest_dropped_first() -> None:
    cache = DenialCache(max_entries=3, clock=Clock())
    for key in "abcd":
        cache.put(key, 1, denial())
    assert len(cache) == 3
    assert cache.get("a", 1) is None
    assert all(cache.get(key, 1) is not None for key in "bcd")


def test_size_zero_turns_it_off() -> None:
    cache = DenialCache(max_entries=0, clock=Clock())
    cache.put("k", 1, denial())
    assert cache.get("k", 1) is None
