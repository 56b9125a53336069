"""Dead letters: what goes in, who writes it, and the operator's list / replay / drop.

A dead letter is one entry of the DLQ stream (`<stream>:dlq`): meta fields named `dlq:*`
first, then the original entry's own fields, bytes as they were read, in their order (a field
name repeated within one entry keeps its last value: redis-py reads an entry into a dict):

- `dlq:group` — the group that gave up on the entry; `*` when the entry does not parse
  (`malformed`, `unknown_type`, `invalid`): no group can handle it, so it is written once for
  all of them, not once per group.
- `dlq:reason`, `dlq:error`, `dlq:deliveries`, `dlq:stream`, `dlq:entry_id`, `dlq:consumer`,
  `dlq:failed_at`, and `dlq:size` (bytes of the original fields, names included).
- `dlq:truncated` = `1` when the original fields were over DLQ_MAX_ENTRY_BYTES: the letter
  keeps only their first DLQ_MAX_ENTRY_BYTES bytes, and `replay` refuses it (a fragment is
  not the event). The DLQ itself is trimmed with an approximate `MAXLEN` (DLQ_MAXLEN).

Replay re-adds the original fields byte for byte, plus `dlq:for` = the letter's group (none
for `*`). A consumer of any other group acks such an entry without handling it
(`stream_replays_skipped_total`), so a replay reaches only the group that gave up. Parsing
reads only `data`: `dlq:*` fields never change what an entry means. Bytes go through
untouched only on a client that does not decode responses (the default; `make_redis`).

Once for every group: before writing a `*` letter a consumer claims the guard key
`Keys.dead_letter_guard(entry_id)` (`SET NX EX`, value = its group) and reads the owner back.
Only the owning group writes the letter; other groups ack the entry at once. If the owner
crashes after the guard and before the letter, the entry is still pending in the owner's
group, so its redelivery (own pending re-read, or XAUTOCLAIM) finds the guard naming that
group and writes the letter then. The guard lives `GUARD_TTL`; a group that reaches the
entry later than that writes a second letter (a duplicate, never a loss). What is lost: a
letter whose owning group is destroyed (XGROUP DESTROY) between guard and letter.

No transaction spans two keys: the stream and the DLQ sit in different Redis Cluster slots.
Dead-lettering is `XADD dlq`, then `XACK stream`; replay is `XADD stream`, then `XDEL dlq`.
A crash between the two steps leaves a duplicate (a second letter, or an entry replayed
while its letter stays) and never loses one; consumers are idempotent, and `dlq drop`
removes a stale letter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from shared.connections import RedisClient

META_PREFIX: Final = "dlq:"
EVERY_GROUP: Final = "*"
REPLAY_FOR: Final = b"dlq:for"
DEFAULT_MAX_ENTRY_BYTES: Final = 65_536
# A day: groups reach an entry within seconds of each other, and one a day behind has an
# incident of its own; a guard costs ~100 bytes per unparseable entry for that long.
GUARD_TTL: Final = 86_400
_META = META_PREFIX.encode()
_ERROR_CHARS: Final = 4000
_PAGE: Final = 500


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    """For display only: bytes that are not UTF-8 show as U+FFFD."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def own_fields(fields: Mapping[Any, Any]) -> dict[bytes, bytes]:
    """An entry's fields without the `dlq:*` ones, as bytes, in their order."""
    own = {_bytes(k): _bytes(v) for k, v in fields.items()}
    return {k: v for k, v in own.items() if not k.startswith(_META)}


def _fit(fields: dict[bytes, bytes], cap: int) -> tuple[dict[bytes, bytes], int, bool]:
    """(fields cut to `cap` bytes, their size before, whether anything was cut)."""
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size <= cap:
        return fields, size, False
    kept: dict[bytes, bytes] = {}
    budget = cap
    for name, value in fields.items():
        if len(name) >= budget:
            break
        kept[name] = value[: budget - len(name)]
        budget -= len(name) + len(kept[name])
    return kept, size, True


def letter_fields(
    original: Mapping[Any, Any],
    *,
    error: str,
    reason: str,
    group: str,
    deliveries: int,
    stream: str,
    entry_id: str,
    consumer: str,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> dict[bytes, bytes]:
    """The DLQ entry of one failed entry: meta first (module docstring), then its fields."""
    kept, size, truncated = _fit(own_fields(original), max_entry_bytes)
    meta = {
        "group": group,
        "reason": reason,
        "error": error[:_ERROR_CHARS],
        "deliveries": str(deliveries),
        "stream": stream,
        "entry_id": entry_id,
        "consumer": consumer,
        "failed_at": datetime.now(UTC).isoformat(),
        "size": str(size),
    }
    if truncated:
        meta["truncated"] = "1"
    # "replace": an exception's text may hold lone surrogates, which strict UTF-8 refuses.
    fields = {
        f"{META_PREFIX}{name}".encode(): value.encode("utf-8", "replace")
        for name, value in meta.items()
    }
    fields.update(kept)
    return fields


async def claim_letter(redis: RedisClient, guard: str, group: str) -> str:
    """The group that writes the one letter of an unparseable entry (this one, if first).

    SET NX and GET on the one key in one round trip (one key: fine on a Cluster). Should the
    guard vanish between the two, this group writes: a duplicate at worst, never a loss.
    """
    pipe = redis.pipeline(transaction=False)
    pipe.set(guard, group, nx=True, ex=GUARD_TTL)  # type: ignore[unused-awaitable]  # queued
    pipe.get(guard)  # type: ignore[unused-awaitable]  # queued
    _, owner = await pipe.execute()
    return group if owner is None else _text(owner)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ entry: its id in the DLQ, the original fields (bytes), the meta fields."""

    id: str
    original: dict[bytes, bytes]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> str | None:
        return self.meta.get("stream")

    @property
    def group(self) -> str:
        """The group that gave up; `*` (every group) when the letter names none."""
        return self.meta.get("group") or EVERY_GROUP

    @property
    def truncated(self) -> bool:
        return self.meta.get("truncated") == "1"

    def refusal(self) -> str | None:
        """Why this letter cannot be replayed, or None."""
        if self.truncated:
            size = self.meta.get("size", "?")
            return (
                f"truncated: the entry was {size} bytes, over DLQ_MAX_ENTRY_BYTES, and only its "
                "start was kept; re-publish the event from its source, then drop the letter"
            )
        if not self.stream:
            return "the letter names no stream"
        if not self.original:
            return "the letter holds no fields"
        return None

    def as_dict(self) -> dict[str, object]:
        """For display (JSON): the fields decoded, bytes that are not UTF-8 as U+FFFD."""
        fields = {_text(k): _text(v) for k, v in self.original.items()}
        shown = {"id": self.id, **self.meta, "group": self.group}
        return {**shown, "replayable": self.refusal() is None, "fields": fields}


def _letter(entry_id: bytes | str, raw: Mapping[Any, Any]) -> DeadLetter:
    original: dict[bytes, bytes] = {}
    meta: dict[str, str] = {}
    for key, value in raw.items():
        name = _bytes(key)
        if name.startswith(_META):
            meta[_text(name.removeprefix(_META))] = _text(value)
        else:
            original[name] = _bytes(value)
    return DeadLetter(_text(entry_id), original, meta)


async def list_letters(
    redis: RedisClient, dlq: str, *, start: str = "-", count: int = 100, group: str | None = None
) -> list[DeadLetter]:
    """Up to `count` dead letters (of `group`, when given), oldest first, from id `start`."""
    found: list[DeadLetter] = []
    async for letter in _scan(redis, dlq, start=start):
        if group is None or letter.group == group:
            found.append(letter)
            if len(found) >= count:
                break
    return found


async def _scan(redis: RedisClient, dlq: str, *, start: str = "-") -> AsyncIterator[DeadLetter]:
    """Every letter present now, oldest first; letters written meanwhile wait for next time."""
    last: Any = await redis.xrevrange(dlq, count=1)
    if not last:
        return
    end = _text(last[0][0])
    while True:
        rows: Any = await redis.xrange(dlq, min=start, max=end, count=_PAGE)
        for entry_id, raw in rows:
            yield _letter(entry_id, raw)
        if len(rows) < _PAGE:
            return
        start = f"({_text(rows[-1][0])}"


async def _chosen(
    redis: RedisClient, dlq: str, ids: Sequence[str] | None
) -> AsyncIterator[tuple[str, DeadLetter | None]]:
    if ids is None:
        async for letter in _scan(redis, dlq):
            yield letter.id, letter
        return
    for entry_id in ids:
        rows: Any = await redis.xrange(dlq, min=entry_id, max=entry_id, count=1)
        yield entry_id, _letter(*rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # DLQ id: why it was not replayed


async def replay(
    redis: RedisClient,
    dlq: str,
    ids: Sequence[str] | None,
    *,
    maxlen: int,
    group: str | None = None,
) -> ReplayResult:
    """Put dead letters back on their stream for their group (all when `ids` is None).

    Each letter's fields are re-added byte for byte as a new entry (`XADD MAXLEN ~ maxlen`)
    with `dlq:for` naming its group (none for `*`), then the letter is deleted. `group`
    keeps only the letters naming it (`*` selects the unparseable ones). Truncated letters
    are refused, and so, when `ids` are given, is a letter of another group than `group`.
    """
    result = ReplayResult()
    async for entry_id, letter in _chosen(redis, dlq, ids):
        if letter is None:
            result.missing.append(entry_id)
        elif group is not None and letter.group != group:
            if ids is not None:
                result.refused[entry_id] = f"a letter of group {letter.group!r}, not {group!r}"
        elif (why := await _put_back(redis, dlq, letter, maxlen)) is not None:
            result.refused[entry_id] = why
        else:
            result.replayed.append(entry_id)
    return result


async def _put_back(redis: RedisClient, dlq: str, letter: DeadLetter, maxlen: int) -> str | None:
    """Replay one letter; or why it cannot be."""
    why = letter.refusal()
    if why is not None or not letter.stream:
        return why or "the letter names no stream"
    fields: dict[Any, Any] = dict(letter.original)
    if letter.group != EVERY_GROUP:
        fields[REPLAY_FOR] = letter.group.encode()
    # First the stream, then the DLQ: a crash in between replays twice, never loses it.
    await redis.xadd(letter.stream, fields, maxlen=maxlen, approximate=True)
    await redis.xdel(dlq, letter.id)
    return None


async def drop(redis: RedisClient, dlq: str, ids: Iterable[str] | None) -> int:
    """Delete dead letters (all present now when `ids` is None); the number deleted."""
    wanted = [letter.id async for letter in _scan(redis, dlq)] if ids is None else list(ids)
    removed = 0
    for start in range(0, len(wanted), _PAGE):
        removed += int(await redis.xdel(dlq, *wanted[start : start + _PAGE]))
    return removed
