"""Errors raised by `shared`. One root, so callers can catch the package as a whole.

SharedError
├── SettingsError            a variable has a bad value (message names it)
├── RedisUnavailableError    Redis cannot be reached (host:port, never a password)
├── CacheError
│   └── ValueTooLargeError   a value over CACHE_MAX_VALUE_BYTES was refused
├── CircuitOpenError         a breaker is open: the call was not attempted
├── InvalidIdentifierError   user text that may not become part of a key
├── EventError               a stream entry is not a valid event (reason, entry data)
│   ├── MalformedEventError  not JSON, or no `data` field
│   ├── UnknownEventTypeError
│   └── InvalidEventError    a known type whose envelope or payload is invalid
└── LockError
    ├── LockNotAcquiredError the acquisition timed out
    └── LockLostError        the lock expired or was taken while held
"""

from __future__ import annotations


class SharedError(Exception):
    """Root of every error `shared` raises."""


class SettingsError(SharedError):
    pass


class RedisUnavailableError(SharedError):
    pass


class CacheError(SharedError):
    pass


class ValueTooLargeError(CacheError):
    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"value for {key} is {size} bytes, over the {limit}-byte limit")
        self.key = key
        self.size = size
        self.limit = limit


class CircuitOpenError(SharedError):
    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit {name!r} is open; next trial in {retry_in:.2f}s")
        self.name = name
        self.retry_in = retry_in


class InvalidIdentifierError(SharedError, ValueError):
    pass


class EventError(SharedError):
    """A stream entry that cannot become an event; `reason` is what the DLQ records."""

    code = "invalid_event"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedEventError(EventError):
    code = "malformed"


class UnknownEventTypeError(EventError):
    code = "unknown_type"

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class InvalidEventError(EventError):
    code = "invalid"


class LockError(SharedError):
    pass


class LockNotAcquiredError(LockError):
    pass


class LockLostError(LockError):
    pass
