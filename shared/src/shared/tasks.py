"""Background work of a service: tasks that live as long as its app, and retry with backoff.

- `TaskSet.spawn(coro, name, stop=None)` starts a task. A crash is logged and recorded in
  `failures` (the app keeps serving; its `/health` can report what stopped) — not an
  `asyncio.TaskGroup`, whose first failure would cancel the others and the app with them.
- `TaskSet.close(timeout)` ends them: a task spawned with a cooperative `stop` is asked to
  finish (a consumer completes its batch), the others are cancelled — repeatedly, because on
  Python 3.11 a cancellation landing inside a redis-py read can be lost. A task still running
  at the deadline is logged, never awaited forever.
- `Backoff` — exponential delays with jitter, capped, reset after a success.
- `raise_if_cancelling()` — re-raise a cancellation a library turned into another error.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

# How often a task that ignored its cancellation is cancelled again while we wait.
_RECANCEL_EVERY = 0.1


class TaskSet:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stops: dict[asyncio.Task[None], Callable[[], None]] = {}
        self.failures: list[str] = []

    def spawn(
        self,
        coro: Coroutine[Any, Any, None],
        name: str,
        stop: Callable[[], None] | None = None,
    ) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)
        if stop is not None:
            self._stops[task] = stop

    def names(self) -> list[str]:
        """The tasks still running, by name (for /health and tests)."""
        return [task.get_name() for task in self._tasks if not task.done()]

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.failures.append(f"{task.get_name()}: {type(error).__name__}: {error}")
        logger.error("background task %s died", task.get_name(), exc_info=error)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a shutdown bound
        """Stop every task within `timeout` seconds (see the module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in self._tasks:
            stop = self._stops.get(task)
            if stop is not None:
                stop()
            else:
                task.cancel()
        pending = {task for task in self._tasks if not task.done()}
        while pending and loop.time() < deadline:
            _, pending = await asyncio.wait(pending, timeout=_RECANCEL_EVERY)
            for task in pending - self._stops.keys():
                task.cancel()
        for task in pending:
            logger.error("background task %s did not stop in %.0fs", task.get_name(), timeout)
            task.cancel()
        self._tasks.clear()
        self._stops.clear()


class Backoff:
    """Delays for a retry loop: `first`, doubling up to `cap`, each with jitter in [½, 1]."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next_delay(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._next * 2, self.cap)
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


def raise_if_cancelling() -> None:
    """Re-raise a cancellation a library swallowed (redis-py can turn one that lands inside a
    command into a TimeoutError or a ConnectionError): retrying it instead would make the
    task impossible to cancel, and shutdown would hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
