"""The use case: purge what a batch of user events made stale, then tell the api instances.

Per batch, one pipeline on the cache Redis (one round trip):

1. once per distinct user of an update / delete / password change, its value and lease go
   together (one hash tag), so a reader holding a lease from before the write can never
   store the old row back: `DEL <user> <user lease>` for a delete (or an event without a
   version), else a small script that deletes them only when the cached value is older than
   the event's version — the writer's write-through, already as new, is kept (no miss);
2. one small script: `INCR` the list generation once for the whole batch (one bump
   invalidates every cached page for every event in it) and `PUBLISH` one notice per event
   (`shared.nearcache.PurgeNotice`) on `app:cache:invalidated`.
   The script touches one key (the generation), so it is Redis Cluster safe; it runs after
   the DELs, so a notice never arrives before its purge is done. Publishing from the script
   instead of a PUBLISH per event from the client halved the drain time (bench/).

On a Redis Cluster the users' keys are spread over the primaries and the generation is on
one of them, so one pipeline cannot keep that order: the purges go per primary, one write
each, all primaries at once (`ClusterAutoPipeline.execute_batch`), and the script only once
every purge has answered, announcing only the entries whose purge succeeded (decision 0035).
Two round trips per batch instead of one.

Traced (`shared.tracing`), each entry with a recorded `process` span gets `purge` and
`announce` spans under it; untraced batches pay one `None` check.

Idempotent: deleting absent keys and bumping a counter again are harmless. Pub/sub may lose a
notice (the near cache's TTL bounds that); the purge itself is what must happen, and it is
done before the entry is acked. Plain `EVAL`, not `EVALSHA`: Redis caches the compiled
script by its hash, and no NOSCRIPT can ever surface after a restart or SCRIPT FLUSH.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from opentelemetry.trace import Span
from redis.asyncio import RedisCluster
from redis.typing import EncodableT

from invalidator.config import PURGED_TYPES, USER_TYPES
from invalidator.metrics import InvalidatorMetrics
from shared.autopipeline import auto_pipeline
from shared.cache import PURGE_IF_OLDER
from shared.connections import RedisClient
from shared.keys import Keys
from shared.nearcache import PurgeNotice
from shared.streams import Delivery
from shared.tracing import Spans, finish

# KEYS[1] the list generation; ARGV[1] the channel, ARGV[2..] notice heads (JSON missing the
# generation value and the closing brace).
_BUMP_AND_ANNOUNCE: Final = """
local generation = redis.call('INCR', KEYS[1])
for i = 2, #ARGV do
  redis.call('PUBLISH', ARGV[1], ARGV[i] .. generation .. '}')
end
return generation
"""


class Purger:
    """The batch handler of the `invalidator` group (see the module docstring)."""

    def __init__(
        self,
        cache: RedisClient,
        keys: Keys,
        metrics: InvalidatorMetrics | None = None,
        spans: Spans | None = None,
    ):
        self.cache = cache
        self.keys = keys
        self.metrics = metrics
        self.spans = spans  # None: tracing off
        self.channel = keys.cache_invalidated()

    async def __call__(self, batch: Sequence[Delivery]) -> Mapping[str, BaseException]:
        relevant = [d for d in batch if d.event.type in USER_TYPES]  # session.* is not ours
        if not relevant:
            return {}
        # Key strings built once per user per batch: building them (UUID checks) was a
        # measurable share of the drain time.
        purged: dict[uuid.UUID, list[str]] = {}
        versions: dict[uuid.UUID, int | None] = {}
        for d in relevant:
            uid = d.event.payload.user_id
            if _purges(d):
                if uid not in purged:
                    purged[uid] = [self.keys.user(uid), self.keys.user_lease(uid)]
                versions[uid] = _newest(versions.get(uid, 0), _version(d))
        traced = self._start_spans(relevant) if self.spans is not None else None
        if isinstance(self.cache, RedisCluster):
            results = await self._purge_on_cluster(self.cache, relevant, purged, versions)
        else:
            results = await self._purge(relevant, purged, versions)
        finished = time.time()
        failures = _failures(relevant, list(purged), results)
        if traced:
            _finish(traced, failures, results)
        if self.metrics is not None:
            done = [d for d in relevant if d.entry_id not in failures]
            self._observe(done, finished, sum(r for r in results[:-1] if isinstance(r, int)))
        return failures

    async def _purge(
        self,
        relevant: list[Delivery],
        purged: dict[uuid.UUID, list[str]],
        versions: dict[uuid.UUID, int | None],
    ) -> list[Any]:
        """One server: the purges and the announcing script in one pipeline (one round trip;
        the server runs them in order). The purges' replies, then the script's."""
        notices = [_notice_head(d, purged) for d in relevant]
        pipe = self.cache.pipeline(transaction=False)
        for uid, user_keys in purged.items():
            # Queued on the pipeline (redis-py types every command as an awaitable).
            if (version := versions[uid]) is None:
                pipe.delete(*user_keys)  # type: ignore[unused-awaitable]
            else:
                pipe.eval(PURGE_IF_OLDER, 2, *user_keys, version)  # type: ignore[unused-awaitable]
        pipe.eval(_BUMP_AND_ANNOUNCE, 1, self.keys.user_list_gen(), self.channel, *notices)  # type: ignore[unused-awaitable]
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _purge_on_cluster(
        self,
        cluster: RedisCluster,
        relevant: list[Delivery],
        purged: dict[uuid.UUID, list[str]],
        versions: dict[uuid.UUID, int | None],
    ) -> list[Any]:
        """A cluster: the purges grouped per primary, one write to each, all primaries at
        once (`ClusterAutoPipeline.execute_batch`); the announcing script only once every
        purge has answered, so no notice reaches a near cache before the purge it announces
        is done on whichever primary holds that user. An entry whose purge failed is not
        announced (it stays pending, and its retry announces it). Same replies as `_purge`."""
        batcher = auto_pipeline(cluster)
        commands: list[tuple[EncodableT, ...]] = [
            ("DEL", *user_keys)
            if (version := versions[uid]) is None
            else ("EVAL", PURGE_IF_OLDER, 2, *user_keys, version)
            for uid, user_keys in purged.items()
        ]
        results = await batcher.execute_batch(commands) if commands else []
        failed = {u for u, r in zip(purged, results, strict=True) if isinstance(r, BaseException)}
        notices = [
            _notice_head(d, purged)
            for d in relevant
            if not (failed and _purges(d) and d.event.payload.user_id in failed)
        ]
        announce = ("EVAL", _BUMP_AND_ANNOUNCE, 1, self.keys.user_list_gen(), self.channel)
        try:
            bump = await batcher.execute(*announce, *notices)
        except Exception as exc:  # noqa: BLE001 - a reply, as in the one-server pipeline
            bump = exc
        return [*results, bump]

    def _start_spans(self, relevant: list[Delivery]) -> list[_Traced]:
        """`purge` and `announce` under each traced entry's `process` span. Both are timed
        around the batch's one round trip: the DELs and the announcing script travel in one
        pipeline, so no client can time them apart (the attributes say what each did)."""
        assert self.spans is not None
        traced: list[_Traced] = []
        count = len(relevant)
        announced = {"messaging.destination.name": self.channel}
        for d in relevant:
            if d.span is None:  # an entry with no sampled context: the common case
                continue
            purged = {"messaging.batch.message_count": count, "app.cache.keys": 2 * _purges(d)}
            purge = self.spans.child(d.span, "purge", purged)
            if purge is None:
                continue
            announce = self.spans.child(d.span, "announce", announced)
            traced.append(_Traced(d, purge, announce))
        return traced

    def _observe(self, done: list[Delivery], finished: float, deleted: int) -> None:
        if self.metrics is None:
            return
        self.metrics.purged_keys.inc(deleted)
        for delivery in done:
            self.metrics.lag.observe(max(0.0, finished - delivery.event.occurred_at.timestamp()))


class _Traced(NamedTuple):
    delivery: Delivery
    purge: Span
    announce: Span | None


def _finish(
    traced: list[_Traced], failures: Mapping[str, BaseException], results: list[Any]
) -> None:
    bump = results[-1]
    for delivery, purge, announce in traced:
        error = failures.get(delivery.entry_id)
        if isinstance(bump, int):
            purge.set_attribute("app.cache.generation", bump)
        finish(purge, error)
        if announce is not None:
            finish(announce, bump if isinstance(bump, BaseException) else None)


def _notice_head(delivery: Delivery, purged: dict[uuid.UUID, list[str]]) -> bytes:
    """The notice JSON without its `generation` value, which the script appends."""
    keys = purged.get(delivery.event.payload.user_id, []) if _purges(delivery) else []
    return PurgeNotice.head(keys, delivery.event.id)


def _purges(delivery: Delivery) -> bool:
    return delivery.event.type in PURGED_TYPES


def _version(delivery: Delivery) -> int | None:
    """The row version an update left (None: purge unconditionally — a delete, or an event
    from a writer that sent no version)."""
    return getattr(delivery.event.payload, "version", None)


def _newest(seen: int | None, version: int | None) -> int | None:
    # Any unconditional purge in the batch wins; else the newest version bounds the purge.
    return None if seen is None or version is None else max(seen, version)


def _failures(
    relevant: list[Delivery], users: list[uuid.UUID], results: list[Any]
) -> dict[str, BaseException]:
    """Which entries failed: all of them if the bump failed, else those whose DEL failed."""
    bump = results[-1]
    if isinstance(bump, BaseException):
        return {d.entry_id: bump for d in relevant}
    failed = {u: r for u, r in zip(users, results, strict=False) if isinstance(r, BaseException)}
    return {
        d.entry_id: failed[d.event.payload.user_id]
        for d in relevant
        if _purges(d) and d.event.payload.user_id in failed
    }
