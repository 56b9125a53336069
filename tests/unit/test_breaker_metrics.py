"""The breaker's `on_change` hook and `circuit_breaker_open{breaker}`: set on transitions only."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from shared.breaker import CircuitBreaker, State
from shared.errors import CircuitOpenError
from shared.metrics import breaker_metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise ConnectionRefusedError("down")


async def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((ConnectionRefusedError, CircuitOpenError)):
            await breaker.call(down)


async def test_the_hook_hears_open_and_close_and_nothing_while_closed() -> None:
    heard: list[State] = []
    clock = Clock()
    breaker = CircuitBreaker(
        "dep", failure_threshold=2, reset_timeout=1.0, clock=clock, on_change=heard.append
    )
    for _ in range(100):
        await breaker.call(ok)
    await fail(breaker, 1)
    breaker.record_success()  # a success below the threshold: still closed, nothing to hear
    assert heard == []

    await fail(breaker, 2)
    assert heard == [State.OPEN]
    clock.now += 1.0  # half-open by the clock: not a call, not reported
    await fail(breaker, 1)  # the trial fails: reopened
    assert heard == [State.OPEN, State.OPEN]
    clock.now += 1.0
    assert await breaker.call(ok) == "ok"
    assert heard == [State.OPEN, State.OPEN, State.CLOSED]
    for _ in range(10):
        await breaker.call(ok)
    assert len(heard) == 3


async def test_the_gauge_is_one_while_open_or_half_open_and_zero_once_closed() -> None:
    registry = CollectorRegistry()
    clock = Clock()
    breaker = CircuitBreaker(
        "cache",
        failure_threshold=1,
        reset_timeout=1.0,
        clock=clock,
        on_change=breaker_metrics(registry).hook("cache"),
    )

    def gauge() -> float | None:
        return registry.get_sample_value("circuit_breaker_open", {"breaker": "cache"})

    assert gauge() == 0.0  # exported from the start, not only after the first opening
    await fail(breaker, 1)
    assert gauge() == 1.0
    clock.now += 1.0
    assert breaker.state is State.HALF_OPEN
    assert gauge() == 1.0
    await breaker.call(ok)
    assert gauge() == 0.0


def test_one_gauge_per_registry_whoever_asks_first() -> None:
    registry = CollectorRegistry()
    first = breaker_metrics(registry)
    assert breaker_metrics(registry) is first
    assert breaker_metrics(CollectorRegistry()) is not first
    first.hook("a")
    breaker_metrics(registry).hook("b")
    assert registry.get_sample_value("circuit_breaker_open", {"breaker": "a"}) == 0.0
    assert registry.get_sample_value("circuit_breaker_open", {"breaker": "b"}) == 0.0
