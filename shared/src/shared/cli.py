"""`platformctl`: the operator's commands for streams, dead letters and the cache.

    platformctl streams status [--json]          length, groups, consumers, pending, lag, age
    platformctl dlq list [--group G] [--count N] [--json]
                                                 dead letters, oldest first, with their group
    platformctl dlq replay (ID… | --all) [--group G]
                                                 back onto the stream for their group only,
                                                 then out of the DLQ; truncated ones refused
    platformctl dlq drop (ID… | --all)           delete dead letters
    platformctl cache stats [--sample N] [--top K] [--json]
                                                 keyspace, memory, hit ratio (INFO) and the
                                                 biggest keys of a SCAN sample (MEMORY USAGE)

Settings come from the environment / `.env` like the services' (REDIS_URL, CACHE_REDIS_URL,
KEY_PREFIX, STREAM_MAXLEN). Streams and the DLQ live on the data Redis; `cache stats` reads
the cache Redis. `cache stats` SCANs — it is for operators, never for the services' paths.
A letter's group `*` means no group could parse the entry: its replay reaches every group,
and `--group '*'` selects those letters. Text output shows control characters escaped.
Exit status: 0 done, 1 some ids not found or not replayable, 2 bad settings or Redis
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.connections import make_redis
from shared.errors import SettingsError
from shared.keys import Keys
from shared.settings import StreamSettings, load_settings
from shared.streams import deadletter
from shared.streams.housekeeping import stream_status


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _json(document: object) -> None:
    _out(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


async def streams_status(redis: Redis, keys: Keys, args: argparse.Namespace) -> int:
    status = await stream_status(redis, keys.user_events())
    dlq_length = int(await redis.xlen(keys.dead_letters()))
    if args.json:
        _json({**status.as_dict(), "dead_letters": dlq_length})
        return 0
    _out(f"stream {status.stream}: {status.length} entries; dead letters: {dlq_length}")
    for group in status.groups:
        age = group.oldest_pending_age_seconds
        _out(
            f"  group {group.name}: pending {group.pending}, lag {group.lag}, "
            f"last delivered {group.last_delivered_id}, oldest pending age "
            f"{'-' if age is None else f'{age:.1f}s'}"
        )
        for consumer in group.consumers:
            _out(
                f"    consumer {consumer.name}: pending {consumer.pending}, "
                f"idle {consumer.idle_seconds:.1f}s"
            )
    return 0


def _printable(text: str, limit: int = 300) -> str:
    """One line a terminal shows as is: control characters escaped, long text cut."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _letter_line(letter: deadletter.DeadLetter) -> str:
    meta = letter.meta
    size = f" size={meta['size']}" if "size" in meta else ""
    cut = " TRUNCATED (not replayable)" if letter.truncated else ""
    return _printable(
        f"{letter.id} {meta.get('reason', '?')} group={letter.group} "
        f"deliveries={meta.get('deliveries', '?')} entry={meta.get('entry_id', '?')}{size}{cut}: "
        f"{meta.get('error', '')}"
    )


async def dlq_list(redis: Redis, keys: Keys, args: argparse.Namespace) -> int:
    letters = await deadletter.list_letters(
        redis, keys.dead_letters(), count=args.count, group=args.group
    )
    if args.json:
        _json([letter.as_dict() for letter in letters])
        return 0
    for letter in letters:
        _out(_letter_line(letter))
    _out(f"{len(letters)} dead letter(s) shown")
    return 0


async def dlq_replay(redis: Redis, keys: Keys, args: argparse.Namespace, maxlen: int) -> int:
    ids = None if args.all else args.ids
    result = await deadletter.replay(
        redis, keys.dead_letters(), ids, maxlen=maxlen, group=args.group
    )
    for entry_id, why in result.refused.items():
        _out(_printable(f"not replayed {entry_id}: {why}"))
    missing = f"; not found: {' '.join(result.missing)}" if result.missing else ""
    refused = f"; {len(result.refused)} refused" if result.refused else ""
    _out(_printable(f"replayed {len(result.replayed)} dead letter(s){refused}{missing}"))
    return 1 if result.missing or result.refused else 0


async def dlq_drop(redis: Redis, keys: Keys, args: argparse.Namespace) -> int:
    wanted = None if args.all else args.ids
    removed = await deadletter.drop(redis, keys.dead_letters(), wanted)
    _out(f"dropped {removed} dead letter(s)")
    return 1 if wanted is not None and removed < len(wanted) else 0


async def cache_report(redis: Redis, keys: Keys, sample: int, top: int) -> dict[str, Any]:
    """INFO figures and the biggest keys among up to `sample` keys of the prefix."""
    stats: dict[str, Any] = await redis.info("stats")
    memory: dict[str, Any] = await redis.info("memory")
    keyspace: dict[str, Any] = await redis.info("keyspace")
    hits, misses = int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
    sampled: list[str] = []
    async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        sampled.append(key.decode() if isinstance(key, bytes) else str(key))
        if len(sampled) >= sample:
            break
    sizes: list[Any] = []
    if sampled:
        pipe = redis.pipeline(transaction=False)
        for key in sampled:
            pipe.memory_usage(key)  # type: ignore[unused-awaitable]  # queued on the pipeline
        sizes = await pipe.execute()
    ranked = sorted(zip(sampled, sizes, strict=True), key=lambda kv: -(kv[1] or 0))[:top]
    return {
        "keyspace": keyspace,
        "memory": {
            k: memory.get(k)
            for k in ("used_memory", "used_memory_human", "maxmemory", "maxmemory_policy")
        },
        "evicted_keys": stats.get("evicted_keys"),
        "expired_keys": stats.get("expired_keys"),
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "sampled_keys": len(sampled),
        "big_keys": [{"key": k, "bytes": size} for k, size in ranked],
    }


async def cache_stats(redis: Redis, keys: Keys, args: argparse.Namespace) -> int:
    report = await cache_report(redis, keys, args.sample, args.top)
    if args.json:
        _json(report)
        return 0
    memory = report["memory"]
    _out(f"keyspace: {report['keyspace']}")
    _out(
        f"memory: {memory['used_memory_human']} used, maxmemory {memory['maxmemory']} "
        f"({memory['maxmemory_policy']}); evicted {report['evicted_keys']}, "
        f"expired {report['expired_keys']}"
    )
    _out(f"hit ratio: {report['hit_ratio']} ({report['hits']} hits, {report['misses']} misses)")
    _out(f"biggest of {report['sampled_keys']} sampled keys:")
    for item in report["big_keys"]:
        _out(f"  {item['bytes']:>10} B  {item['key']}")
    return 0


async def run(args: argparse.Namespace, settings: StreamSettings) -> int:
    keys = Keys(settings.key_prefix)
    url = settings.cache_redis_dsn if args.area == "cache" else settings.redis_dsn
    redis = make_redis(url, settings, pool_size=2)
    try:
        if args.area == "streams":
            return await streams_status(redis, keys, args)
        if args.area == "cache":
            return await cache_stats(redis, keys, args)
        if args.action == "list":
            return await dlq_list(redis, keys, args)
        if args.action == "replay":
            return await dlq_replay(redis, keys, args, settings.stream_maxlen)
        return await dlq_drop(redis, keys, args)
    finally:
        await redis.aclose()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="platformctl", description=__doc__.splitlines()[0])
    areas = root.add_subparsers(dest="area", required=True)
    streams = areas.add_parser("streams", help="the user event stream").add_subparsers(
        dest="action", required=True
    )
    streams.add_parser("status", help="groups, consumers, pending, lag").add_argument(
        "--json", action="store_true"
    )
    dlq = areas.add_parser("dlq", help="dead letters").add_subparsers(dest="action", required=True)
    listing = dlq.add_parser("list", help="list dead letters, oldest first")
    listing.add_argument("--count", type=int, default=100)
    listing.add_argument("--group", help="only letters of this group (* = unparseable)")
    listing.add_argument("--json", action="store_true")
    for name, what in (("replay", "put back on the stream for their group"), ("drop", "delete")):
        command = dlq.add_parser(name, help=f"{what}: ids, or --all")
        chosen = command.add_mutually_exclusive_group(required=True)
        chosen.add_argument("ids", nargs="*", default=[], metavar="ID")
        chosen.add_argument("--all", action="store_true")
        if name == "replay":
            command.add_argument("--group", help="only letters of this group (* = unparseable)")
    cache = areas.add_parser("cache", help="the cache Redis").add_subparsers(
        dest="action", required=True
    )
    stats = cache.add_parser("stats", help="keyspace, memory, hit ratio, big keys")
    stats.add_argument("--sample", type=int, default=1000, help="keys to sample with SCAN")
    stats.add_argument("--top", type=int, default=10)
    stats.add_argument("--json", action="store_true")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.area == "dlq" and args.action in {"replay", "drop"} and not (args.all or args.ids):
        parser().error("give dead-letter ids or --all")
    try:
        settings = load_settings(StreamSettings)
        return asyncio.run(run(args, settings))
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
    except (RedisError, OSError) as exc:
        sys.stderr.write(f"error: Redis: {type(exc).__name__}: {exc}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
