"""What the limiter is asked (a `Policy`) and what it answers (a `Decision`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from shared.settings import RateAlgorithm, RateSpec


@dataclass(frozen=True, slots=True)
class Policy:
    """A named limit: `limit` requests per `period` seconds per identifier."""

    name: str
    limit: int
    period: float
    algorithm: RateAlgorithm = RateAlgorithm.SLIDING_WINDOW

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("a policy's limit must be at least 1")
        if self.period < 0.001:
            raise ValueError("a policy's period must be at least 1 ms")

    @classmethod
    def from_spec(
        cls, name: str, spec: RateSpec, algorithm: RateAlgorithm = RateAlgorithm.SLIDING_WINDOW
    ) -> Policy:
        return cls(name, spec.limit, float(spec.period), algorithm)

    @property
    def period_ms(self) -> int:
        return max(1, round(self.period * 1000))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check, all from the single script call.

    `reset` is unix seconds on the Redis server's clock: for the sliding window counter the
    end of the current window, for GCRA the moment the identifier's full burst is available
    again. `retry_after` is seconds until a request of the same cost can be admitted (0 when
    allowed). `now` is the server time of the decision; `cached` says the denial was answered
    from the in-process denial cache without a Redis call.
    """

    allowed: bool
    limit: int
    remaining: int
    reset: float
    retry_after: float
    now: float
    cached: bool = False

    @classmethod
    def from_reply(cls, limit: int, reply: Sequence[int]) -> Decision:
        """The decision from a script's reply (`sliding_window.lua`, `gcra.lua`):
        {allowed 0|1, remaining, reset_after_ms, retry_after_ms, now_us}."""
        allowed, remaining, reset_after_ms, retry_after_ms, now_us = reply
        # `reset` from the millisecond the script decided on, not from `now_us`: the window
        # ends on a whole millisecond, and its sub-millisecond remainder would push the
        # rounded-up X-RateLimit-Reset one second past the window's end.
        return cls(
            allowed=bool(allowed),
            limit=limit,
            remaining=remaining,
            reset=(now_us // 1000 + reset_after_ms) / 1000,
            retry_after=retry_after_ms / 1000,
            now=now_us / 1_000_000,
        )

    @property
    def reset_after(self) -> float:
        return max(0.0, self.reset - self.now)

    @property
    def reset_epoch(self) -> int:
        """`reset` rounded up to whole unix seconds, for `X-RateLimit-Reset`."""
        return math.ceil(self.reset)

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after` rounded up to whole seconds (at least 1), for `Retry-After`."""
        return max(1, math.ceil(self.retry_after))
