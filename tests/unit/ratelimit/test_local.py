"""The in-process limiter on a clock we move: the same decisions the scripts make."""

from __future__ import annotations

import pytest

from shared.limiter import Policy
from shared.limiter.local import LocalLimiter
from shared.settings import RateAlgorithm


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    # On a window boundary, so "one window" is exact: 1_000_000 s is a multiple of 10 s.
    return Clock()


def test_sliding_window_admits_the_limit_and_counts_no_refusal(clock: Clock) -> None:
    limiter = LocalLimiter(clock=clock)
    policy = Policy("p", limit=5, period=10)
    decisions = [limiter.check(policy, "a") for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0, 0]
    assert decisions[0].reset == 1_000_010.0  # the window's end, exactly
    clock.now += 5  # half-way: the refusals did not extend anything
    assert not limiter.check(policy, "a").allowed
    assert limiter.check(policy, "b").allowed  # identifiers are independent


def test_sliding_window_retry_after_is_when_a_request_fits_again(clock: Clock) -> None:
    limiter = LocalLimiter(clock=clock)
    policy = Policy("p", limit=4, period=10)
    for _ in range(4):
        limiter.check(policy, "a")
    refused = limiter.check(policy, "a")
    assert not refused.allowed
    clock.now += refused.retry_after - 0.002
    assert not limiter.check(policy, "a").allowed
    clock.now += 0.004
    assert limiter.check(policy, "a").allowed


def test_gcra_allows_a_burst_then_one_per_interval(clock: Clock) -> None:
    limiter = LocalLimiter(clock=clock)
    policy = Policy("g", limit=4, period=8, algorithm=RateAlgorithm.GCRA)  # one per 2 s
    assert [limiter.check(policy, "a").allowed for _ in range(5)] == [True] * 4 + [False]
    clock.now += 1.9
    assert not limiter.check(policy, "a").allowed
    clock.now += 0.2
    assert limiter.check(policy, "a").allowed
    assert not limiter.check(policy, "a").allowed


def test_cost_counts_as_that_many_requests(clock: Clock) -> None:
    limiter = LocalLimiter(clock=clock)
    policy = Policy("p", limit=5, period=10)
    assert limiter.check(policy, "a", cost=3).remaining == 2
    assert not limiter.check(policy, "a", cost=3).allowed
    assert limiter.check(policy, "a", cost=2).allowed
    with pytest.raises(ValueError, match="cost"):
        limiter.check(policy, "a", cost=6)


def test_state_is_bounded_expired_first(clock: Clock) -> None:
    limiter = LocalLimiter(max_entries=3, clock=clock)
    short = Policy("s", limit=1, period=1)
    long = Policy("l", limit=1, period=100)
    limiter.check(short, "expires-soon")
    limiter.check(long, "kept-1")
    limiter.check(long, "kept-2")
    clock.now += 3  # the short window's state (two windows) has expired
    limiter.check(long, "new")
    assert len(limiter) == 3
    assert not limiter.check(long, "kept-1").allowed  # still limited: it was not evicted
    limiter.clear()
    assert len(limiter) == 0
