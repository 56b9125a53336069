"""The invalidator's message contracts, declared with FastStream for the AsyncAPI document.

FastStream's role in this project is this document and nothing else. Its subscriber drives
each entry through per-message machinery (a handler call per entry drains ≈ 0.03× of a raw
XREADGROUP loop, `batch=True` ≈ 0.5×: docs/decisions/0015-*.md) with no retry and no dead
letters, so the consuming loop is the stream toolkit's (`shared.streams`); and the app is a
FastAPI app like the other two services, wired the same way. The declarations below live on
brokers that are never started: the document is generated from the same pydantic models the
toolkit validates entries against, so it cannot drift from what is consumed and published.
"""

from __future__ import annotations

from typing import Annotated

from faststream.redis import RedisBroker, StreamSub
from pydantic import Field

from invalidator.config import GROUP, InvalidatorSettings
from shared.events import Event
from shared.keys import Keys
from shared.nearcache import PurgeNotice


def contract_brokers(settings: InvalidatorSettings) -> tuple[RedisBroker, RedisBroker]:
    """Brokers carrying only declarations (never connected): the source of the document.
    The stream lives on the data Redis, the purge channel on the cache Redis."""
    keys = Keys(settings.key_prefix)
    broker = RedisBroker(settings.redis_dsn, description="The data Redis: the user event stream")
    cache = RedisBroker(
        settings.cache_redis_dsn, description="The cache Redis: the invalidation channel"
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
        """Declaration only: `invalidator.usecases.Purger` handles these (module docstring)."""

    cache.publisher(
        channel=keys.cache_invalidated(),
        title="cache invalidated",
        description="One message per purge; pub/sub, so it may be lost (near caches use a TTL)",
        schema=PurgeNotice,
    )
    return broker, cache
