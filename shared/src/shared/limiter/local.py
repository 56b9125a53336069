"""The in-process limiter: the same policies and algorithms as the Lua scripts, in memory.

It stands in while Redis cannot be asked (`api.ratelimit` falls back to it when the shared
limiter fails or its breaker is open), so a dead Redis never means "admit everything". Its
state is this process's own: N instances admit at most N times a policy, and its counts start
from zero when the fallback begins (the shared state is not readable then).

Both algorithms mirror `sliding_window.lua` and `gcra.lua` decision for decision, on this
host's wall clock (`time.time()`, so `reset` is unix time like the scripts'). At most
`max_entries` identifiers are tracked: beyond that, expired states are swept first, then the
oldest dropped (its next check starts afresh: the price of bounded memory, never a crash).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from shared.limiter.model import Decision, Policy
from shared.settings import RateAlgorithm

# Floating-point slack of GCRA's `limit * interval == period` (as in gcra.lua), in ms.
_SLACK: Final = 0.001


class LocalLimiter:
    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        # key -> (expires at, ms; state): window (index, previous, current) or GCRA TAT (ms).
        self._states: dict[tuple[str, str], tuple[float, tuple[float, ...]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()

    def check(self, policy: Policy, identifier: str, cost: int = 1) -> Decision:
        if not 1 <= cost <= policy.limit:
            raise ValueError(f"cost must be between 1 and the limit ({policy.limit})")
        now_us = int(self._clock() * 1_000_000)
        key = (policy.name, identifier)
        entry = self._states.get(key)
        state = entry[1] if entry is not None and entry[0] > now_us / 1000 else None
        if policy.algorithm is RateAlgorithm.GCRA:
            raw, kept = _gcra(policy, cost, now_us, state)
        else:
            raw, kept = _sliding_window(policy, cost, now_us, state)
        if kept is not None:
            self._keep(key, kept)
        return Decision.from_reply(policy.limit, raw)

    def _keep(self, key: tuple[str, str], kept: tuple[float, tuple[float, ...]]) -> None:
        self._states.pop(key, None)
        if len(self._states) >= self.max_entries:
            now_ms = self._clock() * 1000
            for stale in [k for k, (until, _) in self._states.items() if until <= now_ms]:
                del self._states[stale]
            while len(self._states) >= self.max_entries:
                del self._states[next(iter(self._states))]  # insertion order: the oldest
        self._states[key] = kept


Raw = tuple[int, int, int, int, int]  # as the scripts return: allowed, remaining, reset ms...
Kept = tuple[float, tuple[float, ...]] | None


def _sliding_window(
    policy: Policy, cost: int, now_us: int, state: tuple[float, ...] | None
) -> tuple[Raw, Kept]:
    limit, window = policy.limit, policy.period_ms
    now = now_us // 1000
    index = now // window
    elapsed = now - index * window
    previous = current = 0
    if state is not None:
        i, p, c = state
        if i == index:
            previous, current = int(p), int(c)
        elif i == index - 1:
            previous = int(c)
    weighted = previous * (window - elapsed) // window
    allowed = weighted + current + cost <= limit
    retry = 0
    kept: Kept = None
    if allowed:
        current += cost
        kept = (now + 2 * window - elapsed, (index, previous, current))
    elif current + cost <= limit:
        room = limit - current - cost
        retry = window - math.ceil((room + 1) * window / previous) + 1 - elapsed
    else:
        room = limit - cost
        e = window - math.ceil((room + 1) * window / current) + 1 if current > room else 0
        retry = window - elapsed + e
    remaining = max(0, limit - weighted - current)
    return (int(allowed), remaining, window - elapsed, retry, now_us), kept


def _gcra(
    policy: Policy, cost: int, now_us: int, state: tuple[float, ...] | None
) -> tuple[Raw, Kept]:
    limit, period = policy.limit, policy.period_ms
    interval = period / limit
    now = now_us / 1000
    tat = max(state[0] if state is not None else 0.0, now)
    new_tat = tat + cost * interval
    allowed = new_tat - now <= period + _SLACK
    retry = 0
    kept: Kept = None
    if allowed:
        tat = new_tat
        kept = (tat, (tat,))  # the state equals no state once its TAT has passed
    else:
        retry = math.ceil(new_tat - period - now)
    remaining = max(0, math.floor((period - (tat - now)) / interval + _SLACK))
    return (int(allowed), remaining, math.ceil(tat - now), retry, now_us), kept
