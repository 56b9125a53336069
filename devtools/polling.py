"""Waiting for a condition with a deadline: the one polling loop of tests, bench and devtools.

`await eventually(check, what)` calls `check` until it returns something truthy and hands that
value back; `eventually_sync` is the same for code without an event loop. At the deadline both
raise `WaitTimeoutError`, naming `what` and the last value `check` returned. An exception from
`check` ends the wait at once, unless its type is listed in `ignoring` (a server that is still
starting, say): then it counts as "not yet", and the last one is shown at the deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, cast, overload

T = TypeVar("T")

WITHIN: Final = 10.0  # seconds: room for a loaded 2-core machine, still a quick failure
EVERY: Final = 0.02  # seconds between checks
_SHOWN: Final = 300  # characters of the last value in the failure message


class WaitTimeoutError(AssertionError):
    """A condition awaited with a deadline never held. An `AssertionError`, so pytest reports
    a failed test rather than an error in the harness."""


def _timed_out(what: str, within: float, last: object) -> WaitTimeoutError:
    shown = repr(last)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "…"
    return WaitTimeoutError(f"{what}: not within {within:g} s (last: {shown})")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    within: float = ...,
    every: float = ...,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None],
    what: str,
    *,
    within: float = ...,
    every: float = ...,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    what: str,
    *,
    within: float = WITHIN,
    every: float = EVERY,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """The first truthy value `check()` returns (awaited when it is awaitable)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            last: object = check()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as error:
            last = error
        else:
            if last:
                return cast(T, last)
        if loop.time() >= deadline:
            raise _timed_out(what, within, last)
        await asyncio.sleep(every)  # bounded: the deadline above


def eventually_sync(
    check: Callable[[], T | None],
    what: str,
    *,
    within: float = WITHIN,
    every: float = EVERY,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """`eventually` without an event loop."""
    deadline = time.monotonic() + within
    while True:
        try:
            last: object = check()
        except ignoring as error:
            last = error
        else:
            if last:
                return cast(T, last)
        if time.monotonic() >= deadline:
            raise _timed_out(what, within, last)
        time.sleep(every)  # bounded: the deadline above
