"""Stream status (for operators and metrics) and the housekeeping job.

`stream_status` is what `platformctl streams status` prints: length, groups, each group's
consumers, pending count, lag and oldest pending age. `Housekeeper` runs beside a consumer:
every interval it exports its group's pending / lag / oldest-age gauges and the number of
dead letters naming its group (and `*`), and — on one instance at a time — deletes consumers
idle past `CONSUMER_IDLE_LIMIT` that hold no pending entries (a consumer with pending
entries is left alone: its entries must be claimed first).

The dead letters are counted on the server (`count_by_group`, a script over one key, chunks
of 200 letters) so no letter crosses the network, and at most `_DLQ_SCAN_CAP` letters are
looked at: past that the gauges are a lower bound.

One instance at a time: the prune runs under `shared.lock` on resource
`streams.housekeeping.<group>`, taken without waiting (`timeout=0`); an instance that finds it
taken skips pruning this round. Pruning twice would be harmless anyway (only wasted work).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from shared.connections import RedisClient
from shared.errors import LockNotAcquiredError
from shared.keys import Keys
from shared.lock import lock
from shared.streams.deadletter import EVERY_GROUP
from shared.streams.metrics import StreamMetrics
from shared.tasks import raise_if_cancelling

logger = logging.getLogger(__name__)
_LAG_SCAN_CAP = 100_000
_LOCK_TTL = 30.0  # renewed while held; a pruning pass takes milliseconds
# Twice DLQ_MAXLEN's default: the whole DLQ unless an operator raised it; 1000 script calls.
_DLQ_SCAN_CAP: Final = 200_000


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    pending: int
    idle_seconds: float


@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    pending: int
    lag: int | None
    last_delivered_id: str
    oldest_pending_id: str | None
    oldest_pending_age_seconds: float | None
    consumers: list[ConsumerStatus] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    stream: str
    length: int
    groups: list[GroupStatus]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def _server_ms(redis: RedisClient) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _lag(redis: RedisClient, stream: str, info: dict[str, object]) -> int | None:
    lag = info.get("lag")
    if isinstance(lag, int):
        return lag
    # Redis < 7 has no `lag` (and 7 may answer nil after deletions): count what follows the
    # last delivered id, capped so an operator's command stays cheap on a huge backlog.
    last = _text(info.get("last-delivered-id", "0-0"))
    rows: Any = await redis.xrange(stream, min=f"({last}", max="+", count=_LAG_SCAN_CAP)
    return len(rows)


async def group_status(redis: RedisClient, stream: str, info: dict[str, object]) -> GroupStatus:
    name = _text(info["name"])
    summary = await redis.xpending(stream, name)
    oldest = summary.get("min")
    oldest_id = _text(oldest) if oldest else None
    age = (await _server_ms(redis) - _id_ms(oldest_id)) / 1000 if oldest_id else None
    consumers = [
        ConsumerStatus(_text(c["name"]), int(c["pending"]), int(c["idle"]) / 1000)
        for c in await redis.xinfo_consumers(stream, name)
    ]
    return GroupStatus(
        name=name,
        pending=int(summary.get("pending", 0)),
        lag=await _lag(redis, stream, info),
        last_delivered_id=_text(info.get("last-delivered-id", "0-0")),
        oldest_pending_id=oldest_id,
        oldest_pending_age_seconds=age,
        consumers=consumers,
    )


async def stream_status(redis: RedisClient, stream: str, group: str | None = None) -> StreamStatus:
    """Length, and every group (or just `group`) with its consumers; empty when no stream."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key
        return StreamStatus(stream, 0, [])
    wanted = [g for g in groups if group is None or _text(g["name"]) == group]
    return StreamStatus(
        stream=stream,
        length=int(await redis.xlen(stream)),
        groups=[await group_status(redis, stream, g) for g in wanted],
    )


# Counts letters per `dlq:group` over up to ARGV[2] entries after ARGV[1], on the server: the
# letters themselves (up to DLQ_MAX_ENTRY_BYTES each) never cross the network. `dlq:group`
# is the first field of every letter, so the inner loop stops at once.
_COUNT_LUA: Final = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local counts, out = {}, {}
for _, row in ipairs(rows) do
  local f, group = row[2], '*'
  for i = 1, #f, 2 do
    if f[i] == 'dlq:group' then group = f[i + 1] break end
  end
  counts[group] = (counts[group] or 0) + 1
end
out[1] = #rows > 0 and rows[#rows][1] or ''
out[2] = #rows
for group, n in pairs(counts) do out[#out + 1] = group; out[#out + 1] = n end
return out
"""
_COUNT_CHUNK: Final = 200


async def count_by_group(redis: RedisClient, dlq: str, *, cap: int) -> tuple[dict[str, int], bool]:
    """({group: letters}, complete) over the oldest `cap` letters; complete=False past cap."""
    script = redis.register_script(_COUNT_LUA)
    counts: dict[str, int] = {}
    start, seen = "-", 0
    while seen < cap:
        asked = min(_COUNT_CHUNK, cap - seen)
        reply: Any = await script(keys=[dlq], args=[start, asked])
        last, rows, pairs = _text(reply[0]), int(reply[1]), reply[2:]
        for name, n in zip(pairs[::2], pairs[1::2], strict=True):
            counts[_text(name)] = counts.get(_text(name), 0) + int(n)
        seen += rows
        if rows < asked or not last:
            return counts, True
        start = f"({last}"
    return counts, False


async def prune_consumers(
    redis: RedisClient,
    stream: str,
    group: str,
    idle_limit: float,
    keep: frozenset[str] = frozenset(),
) -> list[str]:
    """Delete consumers idle past `idle_limit` seconds holding no pending entries."""
    removed: list[str] = []
    for consumer in await redis.xinfo_consumers(stream, group):
        name = _text(consumer["name"])
        if name in keep or int(consumer["pending"]) or int(consumer["idle"]) < idle_limit * 1000:
            continue
        # DELCONSUMER drops the consumer's pending entries too: re-check the count it returns.
        dropped = int(await redis.xgroup_delconsumer(stream, group, name))
        removed.append(name)
        if dropped:
            logger.error("consumer %s got %d pending entries while being pruned", name, dropped)
    return removed


@dataclass(slots=True)
class Housekeeper:
    """Exports a group's gauges every `interval`; prunes idle consumers on one instance."""

    redis: RedisClient
    keys: Keys
    stream: str
    group: str
    consumer: str
    interval: float
    idle_limit: float
    metrics: StreamMetrics | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except (RedisError, OSError) as exc:
                raise_if_cancelling()
                logger.warning("housekeeping of %s skipped: %s", self.group, exc)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> list[str] | None:
        """Report; then prune unless another instance is pruning (None then)."""
        status = await stream_status(self.redis, self.stream, self.group)
        for group in status.groups:
            self._report(group)
        await self._report_dead_letters()
        try:
            async with lock(
                self.redis, self.keys, f"streams.housekeeping.{self.group}",
                ttl=_LOCK_TTL, timeout=0,
            ):  # fmt: skip
                removed = await prune_consumers(
                    self.redis, self.stream, self.group, self.idle_limit,
                    frozenset({self.consumer}),
                )  # fmt: skip
        except LockNotAcquiredError:
            return None
        if removed:
            logger.info("removed idle consumers from %s: %s", self.group, ", ".join(removed))
        return removed

    def _report(self, group: GroupStatus) -> None:
        if self.metrics is None:
            return
        self.metrics.pending.labels(self.group).set(group.pending)
        self.metrics.lag.labels(self.group).set(group.lag or 0)
        self.metrics.oldest_pending_age.labels(self.group).set(
            group.oldest_pending_age_seconds or 0.0
        )

    async def _report_dead_letters(self) -> None:
        if self.metrics is None:
            return
        dlq = self.keys.dead_letters(self.stream)
        counts, _ = await count_by_group(self.redis, dlq, cap=_DLQ_SCAN_CAP)
        for group in (self.group, EVERY_GROUP):
            self.metrics.dead_letters.labels(group).set(counts.get(group, 0))
