"""devtools.polling: the first truthy value, a deadline, and a failure that names the wait."""

from __future__ import annotations

import pytest

from devtools.polling import WaitTimeoutError, eventually, eventually_sync

WITHIN, EVERY = 0.01, 0.001  # seconds: the deadline tests stay in milliseconds


async def test_the_first_truthy_value_of_a_sync_or_async_check_is_returned() -> None:
    tries = iter([0, None, 7])
    assert await eventually(lambda: next(tries), "the third try", every=EVERY) == 7

    async def check() -> str | None:
        return next(answers)

    answers = iter([None, "ready"])
    assert await eventually(check, "the second try", every=EVERY) == "ready"


async def test_at_the_deadline_it_fails_naming_the_wait_and_the_last_value() -> None:
    with pytest.raises(WaitTimeoutError, match=r"^the queue drains: not within 0.01 s \(last: 0\)"):
        await eventually(lambda: 0, "the queue drains", within=WITHIN, every=EVERY)


async def test_an_error_ends_the_wait_unless_it_is_ignored() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        await eventually(refused, "an answer", within=WITHIN, every=EVERY)
    with pytest.raises(WaitTimeoutError, match=r"last: ConnectionRefusedError"):
        await eventually(refused, "an answer", within=WITHIN, every=EVERY, ignoring=(OSError,))


def test_the_sync_form_waits_the_same_way() -> None:
    tries = iter(["", "yes"])
    assert eventually_sync(lambda: next(tries), "the second try", every=EVERY) == "yes"
    with pytest.raises(AssertionError):  # pytest reports a failed test, not a harness error
        eventually_sync(lambda: [], "a list", within=WITHIN, every=EVERY)
