"""`shared.lifespan.freeze_startup_objects`: a service process's first lifespan freezes what
start-up left alive, once."""

from __future__ import annotations

import subprocess
import sys

_FREEZE_PROBE = """
import asyncio, gc, weakref
from contextlib import asynccontextmanager
from shared.lifespan import StateSlot

class Thing:
    pass

@asynccontextmanager
async def opened():
    yield Thing()

async def main():
    slot = StateSlot("thing", Thing)
    before = gc.get_freeze_count()
    async with slot.lifespan(opened)(None):
        first = gc.get_freeze_count()
    cycle = [Thing()]
    cycle.append(cycle)
    ref = weakref.ref(cycle[0])
    del cycle
    async with slot.lifespan(opened)(None):
        second = gc.get_freeze_count()
    gc.collect()
    print(before, first, second, ref() is None)

asyncio.run(main())
"""


def test_the_first_lifespan_of_a_process_freezes_start_up_objects_once() -> None:
    # A process of its own: the test process has opened lifespans already.
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    before, first, second, collected = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert before == 0
    assert first > 10_000  # the interpreter's, pydantic's, starlette's objects
    # Once: a second lifespan freezes nothing more (frozen objects freed by their reference
    # counts in between leave the permanent generation, so it may shrink).
    assert second <= first
    assert collected == "True"  # garbage made after the freeze is still collected
