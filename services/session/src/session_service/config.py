"""The session service's view of the shared `Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.settings import Settings

SERVICE: Final = "session"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """SESSION_IDLE_TTL / SESSION_ABSOLUTE_TTL in whole milliseconds, as the scripts use them."""

    idle_ms: int
    absolute_ms: int

    @classmethod
    def of(cls, settings: Settings) -> Timeouts:
        idle = max(1, round(settings.session_idle_ttl * 1000))
        absolute = max(1, round(settings.session_absolute_ttl * 1000))
        # An idle timeout longer than the absolute one would never apply: clamp it.
        return cls(idle_ms=min(idle, absolute), absolute_ms=absolute)
