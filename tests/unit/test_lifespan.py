"""`shared.lifespan.StateSlot`: where a service's one state lives, and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from shared.lifespan import StateSlot


class Thing:
    closed = False


async def test_the_lifespan_puts_the_state_in_its_slot_and_closes_it() -> None:
    slot = StateSlot("thing", Thing)
    thing, flushed = Thing(), []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Thing]:
        yield thing
        thing.closed = True

    async def flush() -> None:
        flushed.append(thing.closed)  # after the state closed

    async with slot.lifespan(opened, flush)(None) as state:
        assert slot.of({"type": "http", "state": state}) is thing
        assert not flushed
    assert flushed == [True]


async def test_the_finally_step_runs_when_opening_fails() -> None:
    slot = StateSlot("thing", Thing)
    flushed: list[bool] = []

    @asynccontextmanager
    async def failing() -> AsyncIterator[Thing]:
        if not flushed:  # always: opening fails before the state exists
            raise OSError("no Redis")
        yield Thing()

    async def flush() -> None:
        flushed.append(True)

    with pytest.raises(OSError, match="no Redis"):
        async with slot.lifespan(failing, flush)(None):
            pass
    assert flushed == [True]


def test_a_scope_without_the_state_is_a_type_error_naming_it() -> None:
    slot = StateSlot("thing", Thing)
    with pytest.raises(TypeError, match="the thing lifespan has not started: no Thing"):
        slot.of({"type": "http", "state": {"thing": object()}})
    with pytest.raises(TypeError):
        slot.of({"type": "http"})
