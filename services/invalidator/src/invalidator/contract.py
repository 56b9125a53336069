"""The invalidator's message contracts, declared with FastStream for the AsyncAPI document.

Why the declarations live on a broker of their own that is never started: FastStream drives
a subscriber with its per-message machinery (a handler call per entry drains ≈ 0.03× of a
raw XREADGROUP loop, `batch=True` ≈ 0.5×: docs/decisions/0015-*.md), with no retry and no dead
letters. The consuming loop is the stream toolkit's (`shared.streams`): batches, one purge
pipeline per batch, ack after the effect, XAUTOCLAIM, DLQ. FastStream stays what it is good
at here: the app shell (ASGI lifespan, routes) and this document, generated from the same
pydantic models the toolkit validates entries against — so the document cannot drift.
"""

from __future__ import annotations

from typing import Annotated

from faststream.redis import RedisBroker, StreamSub
from pydantic import Field

from invalidator.config import GROUP, InvalidatorSettings
from shared.events import Event
from shared.keys import Keys
from shared.nearcache import PurgeNotice


def contract_broker(settings: InvalidatorSettings) -> RedisBroker:
    """A broker carrying only declarations (never connected): the source of the document."""
    keys = Keys(settings.key_prefix)
    broker = RedisBroker(
        settings.redis_dsn,
        description="The data Redis: the user event stream and the invalidation channel",
    )
    stream = StreamSub(
        keys.user_events(),
        group=GROUP,
        consumer="<instance>",  # consumer_name(): CONSUMER_NAME, else host + a persisted id
    )

    @broker.subscriber(
        stream=stream,
        title="user events (group invalidator)",
        description=(
            "One envelope per entry, JSON in the single field `data` (plain XADD), read in "
            f"batches of STREAM_MAX_RECORDS ({settings.stream_max_records}). user.created bumps "
            "the list generation; user.updated / user.deleted / user.password_changed delete the "
            "user's value and lease and bump it. Entries that do not parse go to "
            f"`{keys.dead_letters()}` at once; entries failing {settings.stream_max_deliveries} "
            "deliveries go there too."
        ),
    )
    async def user_events(event: Annotated[Event, Field(discriminator="type")]) -> None:
        """Declaration only: `invalidator.purge.Purger` handles these (module docstring)."""

    broker.publisher(
        channel=keys.cache_invalidated(),
        title="cache invalidated",
        description="One message per purge; pub/sub, so it may be lost (near caches use a TTL)",
        schema=PurgeNotice,
    )
    return broker
