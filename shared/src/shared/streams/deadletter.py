"""Dead letters: what goes in, and the operator's list / replay / drop.

A dead letter is the original entry's fields, unchanged, plus meta fields named `dlq:*`
(`dlq:error`, `dlq:reason`, `dlq:group`, `dlq:deliveries`, `dlq:stream`, `dlq:entry_id`,
`dlq:consumer`, `dlq:failed_at`). The prefix cannot collide with an envelope field, and replay
strips exactly those fields, so the replayed entry is byte for byte what the publisher wrote.

Dead-lettering is `XADD dlq` + `XACK` in one MULTI: an entry is never both acked and lost,
nor dead-lettered twice by one delivery. Replay is `XADD stream` + `XDEL dlq` in one MULTI.
A replayed entry reaches *every* group of the stream again; consumers are idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from redis.asyncio import Redis

META_PREFIX: Final = "dlq:"
_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ entry: its id in the DLQ, the original fields, and the meta fields."""

    id: str
    original: dict[str, str]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> str | None:
        return self.meta.get("stream")

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "fields": self.original, **self.meta}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def letter_fields(
    original: Mapping[bytes | str, bytes | str],
    *,
    error: str,
    reason: str,
    group: str,
    deliveries: int,
    stream: str,
    entry_id: str,
    consumer: str,
) -> dict[bytes | str, bytes | str]:
    """The DLQ entry's fields for one failed entry."""
    fields: dict[bytes | str, bytes | str] = dict(original)
    fields.update(
        {
            f"{META_PREFIX}error": error[:4000],
            f"{META_PREFIX}reason": reason,
            f"{META_PREFIX}group": group,
            f"{META_PREFIX}deliveries": str(deliveries),
            f"{META_PREFIX}stream": stream,
            f"{META_PREFIX}entry_id": entry_id,
            f"{META_PREFIX}consumer": consumer,
            f"{META_PREFIX}failed_at": datetime.now(UTC).isoformat(),
        }
    )
    return fields


def _letter(entry_id: bytes | str, raw: Mapping[bytes, bytes]) -> DeadLetter:
    original: dict[str, str] = {}
    meta: dict[str, str] = {}
    for key, value in raw.items():
        name = _text(key)
        if name.startswith(META_PREFIX):
            meta[name.removeprefix(META_PREFIX)] = _text(value)
        else:
            original[name] = _text(value)
    return DeadLetter(_text(entry_id), original, meta)


async def list_letters(
    redis: Redis, dlq: str, *, start: str = "-", count: int = 100
) -> list[DeadLetter]:
    """Up to `count` dead letters, oldest first, from id `start` (inclusive)."""
    rows: Any = await redis.xrange(dlq, min=start, max="+", count=count)
    return [_letter(entry_id, raw) for entry_id, raw in rows]


async def _all_ids(redis: Redis, dlq: str) -> list[str]:
    """Every id present now; entries dead-lettered while we page are left for next time."""
    ids: list[str] = []
    start = "-"
    last: Any = await redis.xrevrange(dlq, count=1)
    if not last:
        return ids
    end = _text(last[0][0])
    while True:
        rows: Any = await redis.xrange(dlq, min=start, max=end, count=_PAGE)
        ids.extend(_text(entry_id) for entry_id, _ in rows)
        if len(rows) < _PAGE:
            return ids
        start = f"({ids[-1]}"


async def replay(
    redis: Redis, dlq: str, ids: Sequence[str] | None, *, maxlen: int
) -> tuple[list[str], list[str]]:
    """Put dead letters back on their stream (all when `ids` is None), then remove them.

    Returns (replayed DLQ ids, ids not found). The original fields are re-added as a new
    entry (a new stream id) with `XADD MAXLEN ~ maxlen`.
    """
    wanted = await _all_ids(redis, dlq) if ids is None else list(ids)
    done: list[str] = []
    missing: list[str] = []
    for entry_id in wanted:
        rows: Any = await redis.xrange(dlq, min=entry_id, max=entry_id, count=1)
        if not rows:
            missing.append(entry_id)
            continue
        letter = _letter(*rows[0])
        if not letter.stream or not letter.original:
            missing.append(entry_id)
            continue
        original: dict[Any, Any] = dict(letter.original)
        pipe = redis.pipeline(transaction=True)
        # Queued on the pipeline (redis-py types every command as an awaitable).
        pipe.xadd(letter.stream, original, maxlen=maxlen, approximate=True)  # type: ignore[unused-awaitable]
        pipe.xdel(dlq, entry_id)  # type: ignore[unused-awaitable]
        await pipe.execute()
        done.append(entry_id)
    return done, missing


async def drop(redis: Redis, dlq: str, ids: Iterable[str] | None) -> int:
    """Delete dead letters (all present now when `ids` is None); the number deleted."""
    wanted = await _all_ids(redis, dlq) if ids is None else list(ids)
    removed = 0
    for start in range(0, len(wanted), _PAGE):
        removed += int(await redis.xdel(dlq, *wanted[start : start + _PAGE]))
    return removed
