"""What a batch handler receives and how the consumer is configured; entry parsing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import Span
from pydantic import ValidationError

from shared.events import (
    DATA_FIELD,
    EVENT_ADAPTER,
    WIRE_FIELDS,
    SessionEvent,
    UserEvent,
    parse_entry,
)
from shared.keys import DEFAULT_PREFIX
from shared.settings import StreamSettings
from shared.streams.deadletter import META_PREFIX

_DATA_KEY = DATA_FIELD.encode()
_WIRE_FIELDS = frozenset(WIRE_FIELDS)
_META = META_PREFIX.encode()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One parsed entry handed to a batch handler; `deliveries` counts this one (1 = first).

    `span`: this entry's `process` span when tracing is on and the entry continues a sampled
    trace (`shared.tracing`); a handler starts its own spans for the entry as its children.
    """

    entry_id: str
    event: UserEvent | SessionEvent
    fields: Mapping[bytes, bytes]
    deliveries: int
    span: Span | None = None


class BatchHandler(Protocol):
    """Does the effect of a batch; returns {entry_id: error} for entries that failed.

    Must be idempotent (entries can arrive twice). Raising fails the whole call.
    """

    async def __call__(self, batch: Sequence[Delivery], /) -> Mapping[str, BaseException]: ...


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    stream: str
    group: str
    consumer: str
    dead_letters: str
    max_records: int = 100
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    dlq_maxlen: int = 100_000
    dlq_max_entry_bytes: int = 65_536
    key_prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_settings(
        cls, settings: StreamSettings, *, stream: str, group: str, consumer: str, dead_letters: str
    ) -> ConsumerConfig:
        return cls(
            stream=stream,
            group=group,
            consumer=consumer,
            dead_letters=dead_letters,
            max_records=settings.stream_max_records,
            block_ms=max(1, int(settings.stream_block * 1000)),
            claim_idle_ms=max(1, int(settings.stream_claim_idle * 1000)),
            max_deliveries=settings.stream_max_deliveries,
            dlq_maxlen=settings.dlq_maxlen,
            dlq_max_entry_bytes=settings.dlq_max_entry_bytes,
            key_prefix=settings.key_prefix,
        )


def parse_fields(fields: Mapping[Any, Any]) -> UserEvent | SessionEvent:
    """The event in an entry; `EventError` with the reason when it is not a valid one.

    Only `data` counts: `dlq:*` fields (a replay's marker) never change what an entry means.
    """
    raw = fields.get(_DATA_KEY)
    if raw is not None:
        # Fast path: pydantic parses and validates the JSON in one pass (no dict built in
        # Python). On any error the slow path below says precisely what is wrong.
        try:
            event = EVENT_ADAPTER.validate_json(raw)
        except ValidationError:
            pass
        else:
            # The contract wants every envelope field on the wire (a defaulted id would break
            # idempotency): only an event that set them all takes the fast path.
            if event.model_fields_set >= _WIRE_FIELDS:
                return event
    return parse_entry({k: v for k, v in fields.items() if not _is_meta(k)})


def _is_meta(name: object) -> bool:
    return isinstance(name, bytes) and name.startswith(_META)
