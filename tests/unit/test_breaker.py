"""CircuitBreaker: closed → open after N failures → half-open after the timeout → one trial."""

from __future__ import annotations

import asyncio

import pytest

from shared.breaker import CircuitBreaker, State
from shared.errors import CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dependency:
    """A callable dependency that fails while `down` and counts its calls."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("down")
        return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("redis", failure_threshold=3, reset_timeout=2.0, clock=clock)


def state_of(breaker: CircuitBreaker) -> State:
    """The state now (a function, so mypy does not carry a narrowed property across calls)."""
    return breaker.state


async def trip(breaker: CircuitBreaker, dep: Dependency) -> None:
    dep.down = True
    for _ in range(breaker.failure_threshold):
        with pytest.raises(ConnectionRefusedError):
            await breaker.call(dep)


async def test_closed_passes_calls_through(breaker: CircuitBreaker) -> None:
    dep = Dependency()
    assert await breaker.call(dep) == "ok"
    assert breaker.state is State.CLOSED
    assert dep.calls == 1


async def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    dep = Dependency()
    dep.down = True
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            await breaker.call(dep)
        assert breaker.state is State.CLOSED
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(dep)
    assert breaker.state is State.OPEN


async def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    dep = Dependency()
    for _ in range(5):
        dep.down = True
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await breaker.call(dep)
        dep.down = False
        await breaker.call(dep)
    assert breaker.state is State.CLOSED


async def test_open_refuses_without_calling(breaker: CircuitBreaker, clock: Clock) -> None:
    dep = Dependency()
    await trip(breaker, dep)
    calls = dep.calls
    clock.now += 0.5
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(dep)
    assert dep.calls == calls
    assert caught.value.name == "redis"
    assert caught.value.retry_in == pytest.approx(1.5)
    assert breaker.retry_in() == pytest.approx(1.5)


async def test_half_open_success_closes(breaker: CircuitBreaker, clock: Clock) -> None:
    dep = Dependency()
    await trip(breaker, dep)
    clock.now += 2.0
    assert state_of(breaker) is State.HALF_OPEN
    dep.down = False
    assert await breaker.call(dep) == "ok"
    assert breaker.state is State.CLOSED
    assert breaker.retry_in() == 0.0


async def test_half_open_failure_reopens_for_a_full_timeout(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    dep = Dependency()
    await trip(breaker, dep)
    clock.now += 2.0
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(dep)
    assert breaker.state is State.OPEN
    assert breaker.retry_in() == pytest.approx(2.0)


async def test_half_open_lets_one_trial_through_at_a_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    dep = Dependency()
    await trip(breaker, dep)
    clock.now += 2.0
    release = asyncio.Event()

    async def slow_trial() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow_trial))
    await asyncio.sleep(0)  # one turn of the loop, not a wait: the trial takes the slot
    during = breaker.state  # read once: mypy would keep the property narrowed after `is`
    assert during is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep)
    release.set()
    assert await trial == "ok"
    assert breaker.state is State.CLOSED


async def test_other_errors_do_not_count(breaker: CircuitBreaker) -> None:
    async def bad_command() -> None:
        raise ValueError("WRONGTYPE")

    for _ in range(10):
        with pytest.raises(ValueError, match="WRONGTYPE"):
            await breaker.call(bad_command)
    assert breaker.state is State.CLOSED


async def test_a_cancelled_trial_frees_the_half_open_slot(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    dep = Dependency()
    await trip(breaker, dep)
    clock.now += 2.0

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    trial = asyncio.create_task(breaker.call(hang))
    await asyncio.sleep(0)  # one turn of the loop, not a wait: the trial takes the slot
    during = breaker.state  # read once: mypy would keep the property narrowed after `is`
    assert during is State.HALF_OPEN
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    dep.down = False
    assert await breaker.call(dep) == "ok"
    assert breaker.state is State.CLOSED


def test_manual_recording_for_callers_that_do_not_wrap(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert not breaker.allow()
    assert breaker.state is State.OPEN


async def test_custom_failure_types(clock: Clock) -> None:
    breaker = CircuitBreaker("db", failure_threshold=1, failures=(TimeoutError,), clock=clock)

    async def slow() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await breaker.call(slow)
    assert breaker.state is State.OPEN
