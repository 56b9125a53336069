"""An in-process cache of denials: a blocked identifier is answered without a Redis call.

A denial stays true until its retry-after: rejected requests change no state in Redis, and
the state only decays with time, so nothing but an admitted request of the *same* identifier
could make it false earlier — and that request would itself have been denied. The bounds:

- A cached denial may outlive the true one by at most the round trip of the check that
  produced it (retry-after is counted from the server's clock at the script, the local
  deadline from when the reply arrived), plus the 1 ms the scripts round retry-after up by.
- It is per process: another instance asks Redis once, then caches its own denial.
- An operator who deletes an identifier's key unblocks it only when the cached retry-after
  passes (at most one window for the sliding window counter's current window, two when the
  denial falls in the window after a full one; at most one period for GCRA).
- A denial for a cost `c` answers only requests of cost >= `c`: a cheaper one may fit.
- At most `max_entries` identifiers are cached; the oldest entry is dropped first, which only
  costs a Redis call, never a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from shared.limiter.model import Decision


@dataclass(frozen=True, slots=True)
class _Entry:
    until: float  # local monotonic deadline
    cost: int
    decision: Decision
    seen_at: float  # local monotonic time the decision arrived


class DenialCache:
    def __init__(
        self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str | bytes, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str | bytes, cost: int) -> Decision | None:
        """The cached denial for `key`, with its clocks moved to now; None to ask Redis."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.until:
            del self._entries[key]
            return None
        if cost < entry.cost:
            return None
        waited = now - entry.seen_at
        return replace(
            entry.decision,
            retry_after=entry.until - now,
            now=entry.decision.now + waited,
            cached=True,
        )

    def put(self, key: str | bytes, cost: int, decision: Decision) -> None:
        if decision.allowed or self.max_entries <= 0:
            return
        now = self._clock()
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            # dicts keep insertion order: the first key is the oldest denial.
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(now + decision.retry_after, cost, decision, now)

    def clear(self) -> None:
        self._entries.clear()
