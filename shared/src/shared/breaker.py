"""A circuit breaker, so a dead dependency costs no timeout per request.

closed ── `failure_threshold` consecutive failures ──▶ open ── `reset_timeout` ──▶ half-open
half-open lets one trial call through: success closes the circuit, failure reopens it.

Callers hand it the call, never an awaitable: `await breaker.call(redis.get, key)`. The
breaker decides first and only then creates the coroutine, and its closed state is a fast
path of its own (no clock read, no trial slot) — the hot path of every request.

`on_change`, when given, hears the transitions that change whether the circuit is closed:
`State.OPEN` each time it opens (or a trial reopens it), `State.CLOSED` when it closes. Half-open
comes by the clock, not by a call, and is not reported. A call in the closed state never
invokes it, so a metric behind it costs the hot path nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import ParamSpec, TypeVar

from shared.errors import CircuitOpenError
from shared.settings import CommonSettings

T = TypeVar("T")
P = ParamSpec("P")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout: float = 2.0,
        failures: tuple[type[BaseException], ...] = (OSError,),
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.failures = failures
        self._clock = clock
        self._on_change = on_change
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: CommonSettings,
        failures: tuple[type[BaseException], ...],
        on_change: Callable[[State], None] | None = None,
    ) -> CircuitBreaker:
        """BREAKER_FAILURE_THRESHOLD and BREAKER_RESET_TIMEOUT, for the `failures` given."""
        return cls(
            name,
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_timeout,
            failures=failures,
            on_change=on_change,
        )

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return State.HALF_OPEN
        return State.OPEN

    def allow(self) -> bool:
        """Whether a call may go through now; in half-open, only one trial at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        self._consecutive = 0
        self._trial_running = False
        if self._opened_at is not None:
            self._opened_at = None
            if self._on_change is not None:
                self._on_change(State.CLOSED)

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._trial_running or self._consecutive >= self.failure_threshold:
            self._opened_at = self._clock()
            if self._on_change is not None:
                self._on_change(State.OPEN)
        self._trial_running = False

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """`await fn(*args, **kwargs)` unless open (`CircuitOpenError`, and `fn` is never
        called); `failures` raised by it are counted."""
        if self._opened_at is None:
            # Closed: no clock, no trial slot. A success only resets a non-zero count.
            try:
                result = await fn(*args, **kwargs)
            except self.failures:
                self.record_failure()
                raise
            if self._consecutive:
                self._consecutive = 0
            return result
        if not self.allow():
            raise CircuitOpenError(self.name, self.retry_in())
        try:
            result = await fn(*args, **kwargs)
        except self.failures:
            self.record_failure()
            raise
        except BaseException:
            # Not a dependency failure (a bad command, a cancellation): release the trial slot.
            self._trial_running = False
            raise
        self.record_success()
        return result
