"""One typed lifespan state per service, opened in its composition root, read by its routes.

Each service has one state object (its clients, use cases, tasks) that an async context
manager opens and closes. `StateSlot` names where the lifespan puts it in the ASGI scope
(`scope["state"][key]`, what `request.state` reads) and hands it back typed:

    SLOT = StateSlot("invalidator", InvalidatorState)
    app = FastAPI(lifespan=SLOT.lifespan(lambda: open_state(settings), tracing.aclose))
    state = SLOT.of(request.scope)   # in a dependency or a pure ASGI middleware

Once its state is open, the first lifespan of a process moves every object alive then
(modules, models, routes, clients: about 130,000 in the api) out of the cyclic garbage
collector's reach (`freeze_startup_objects`). A full collection otherwise walks them all,
an 84 ms pause on the machine this was measured on, and traffic makes full collections
happen: what outlives two young collections (near-cache entries, queued spans) is promoted.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

from starlette.types import Scope

S = TypeVar("S")


class StateSlot(Generic[S]):
    """The scope key of a service's state, and the state's type."""

    def __init__(self, key: str, kind: type[S]) -> None:
        self.key = key
        self.kind = kind

    def lifespan(
        self,
        opened: Callable[[], AbstractAsyncContextManager[S]],
        finally_: Callable[[], Awaitable[None]] | None = None,
    ) -> Callable[[Any], AbstractAsyncContextManager[dict[str, S]]]:
        """A lifespan that opens the state, puts it in the slot, closes it at shutdown and
        then awaits `finally_` (e.g. flushing the tracer), even when opening failed."""

        @asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[dict[str, S]]:
            try:
                async with opened() as state:
                    freeze_startup_objects()
                    yield {self.key: state}
            finally:
                if finally_ is not None:
                    await finally_()

        return lifespan

    def of(self, scope: Scope) -> S:
        """The state in this request's scope; `TypeError` before the lifespan started."""
        state = scope.get("state", {}).get(self.key)
        if not isinstance(state, self.kind):
            raise TypeError(
                f"the {self.key} lifespan has not started: no {self.kind.__name__} in the scope"
            )
        return state


_frozen = False


def freeze_startup_objects() -> bool:
    """Collect, then `gc.freeze()` what is left: start-up's objects, alive for the whole
    process, are never walked by a collection again. Once per process (True that time): a
    later call (a test process opens many lifespans) would make other objects immortal too.
    """
    global _frozen  # noqa: PLW0603 - once per process, by design
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    return True
