"""`platformctl`: the operator's commands for streams, dead letters and the cache.

    platformctl streams status [--json]          length, groups, consumers, pending, lag, age
    platformctl dlq list [--group G] [--count N] [--json]
                                                 dead letters, oldest first, with their group
    platformctl dlq replay (ID… | --all) [--group G]
                                                 back onto the stream for their group only,
                                                 then out of the DLQ; truncated ones refused
    platformctl dlq drop (ID… | --all)           delete dead letters
    platformctl cache stats [--sample N] [--top K] [--api-url URL] [--json]
                                                 keyspace, memory, the server-wide keyspace
                                                 hit ratio (INFO), the api's own cache hit
                                                 ratios (its /metrics), and the biggest keys
                                                 of a SCAN sample (MEMORY USAGE)

Settings (REDIS_URL, CACHE_REDIS_URL, KEY_PREFIX, STREAM_MAXLEN, API_PORT) come from the
environment, then `.env`, then `.devstack/env` — the file a running `make run` leaves
(`--stack-env` names another); the first stderr line says which Redis was read and where
its URL came from, password masked. Streams and the DLQ live on the data Redis; `cache
stats` reads the cache Redis. `cache stats` SCANs — it is for operators, never for the
services' paths.
A letter's group `*` means no group could parse the entry: its replay reaches every group,
and `--group '*'` selects those letters. Text output shows control characters escaped.
Exit status: 0 done, 1 some ids not found or not replayable, 2 bad settings or Redis
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field
from redis.exceptions import RedisClusterException, RedisError

from shared import devstack
from shared.cache import stats
from shared.connections import RedisClient, describe_target, make_redis
from shared.errors import SettingsError
from shared.keys import Keys
from shared.settings import RedisTarget, StreamSettings, check_http_url, redact_url
from shared.streams import deadletter
from shared.streams.housekeeping import stream_status


class CliSettings(StreamSettings):
    # Where `cache stats` finds the api's /metrics (the api's own API_PORT variable).
    api_port: int = Field(8000, ge=1, le=65535)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _json(document: object) -> None:
    _out(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


async def streams_status(redis: RedisClient, keys: Keys, args: argparse.Namespace) -> int:
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


async def dlq_list(redis: RedisClient, keys: Keys, args: argparse.Namespace) -> int:
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


async def dlq_replay(redis: RedisClient, keys: Keys, args: argparse.Namespace, maxlen: int) -> int:
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


async def dlq_drop(redis: RedisClient, keys: Keys, args: argparse.Namespace) -> int:
    wanted = None if args.all else args.ids
    removed = await deadletter.drop(redis, keys.dead_letters(), wanted)
    _out(f"dropped {removed} dead letter(s)")
    return 1 if wanted is not None and removed < len(wanted) else 0


def _ratio_line(label: str, counts: dict[str, Any] | None) -> str:
    if counts is None:
        return f"{label}: no lookups counted yet"
    ratio = "-" if counts["hit_ratio"] is None else counts["hit_ratio"]
    return f"{label} hit ratio: {ratio} ({counts['hits']} hits, {counts['misses']} misses)"


def _api_lines(api: dict[str, Any]) -> list[str]:
    if "error" in api:
        return [f"api cache counters: not available ({api['url']}: {api['error']})"]
    return [
        f"api cache counters ({api['url']}, since that api process started):",
        "  " + _ratio_line("Redis cache get", api.get("redis")),
        "  " + _ratio_line("near cache", api.get("near")),
    ]


async def cache_stats(
    redis: RedisClient, keys: Keys, args: argparse.Namespace, settings: CliSettings
) -> int:
    api_url = args.api_url or f"http://127.0.0.1:{settings.api_port}"
    report = await stats.server_report(redis, keys, args.sample, args.top)
    # urllib blocks: off the event loop.
    report["api_cache"] = await asyncio.to_thread(stats.api_cache_counters, api_url)
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
    _out(
        f"{stats.SERVER_RATIO_LABEL}: {report['keyspace_hit_ratio']} "
        f"({report['keyspace_hits']} hits, {report['keyspace_misses']} misses; "
        "every client of this Redis, not the cache alone)"
    )
    for line in _api_lines(report["api_cache"]):
        _out(_printable(line))
    _out(f"biggest of {report['sampled_keys']} sampled keys:")
    for item in report["big_keys"]:
        _out(f"  {item['bytes']:>10} B  {item['key']}")
    return 0


async def run(args: argparse.Namespace, settings: CliSettings, target: RedisTarget) -> int:
    keys = Keys(settings.key_prefix)
    redis = make_redis(target, settings, pool_size=2)
    try:
        if args.area == "streams":
            return await streams_status(redis, keys, args)
        if args.area == "cache":
            return await cache_stats(redis, keys, args, settings)
        if args.action == "list":
            return await dlq_list(redis, keys, args)
        if args.action == "replay":
            return await dlq_replay(redis, keys, args, settings.stream_maxlen)
        return await dlq_drop(redis, keys, args)
    finally:
        await redis.aclose()


def _http_url(value: str) -> str:
    try:
        return check_http_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="platformctl", description=__doc__.splitlines()[0])
    root.add_argument(
        "--stack-env",
        type=Path,
        default=devstack.STACK_ENV,
        help="the file a running `make run` leaves (default: %(default)s)",
    )
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
    report = cache.add_parser("stats", help="keyspace, memory, hit ratios, big keys")
    report.add_argument("--sample", type=int, default=1000, help="keys to sample with SCAN")
    report.add_argument("--top", type=int, default=10)
    report.add_argument(
        "--api-url",
        type=_http_url,
        help="the api whose /metrics has the cache's own counters "
        "(default: http://127.0.0.1:<API_PORT>)",
    )
    report.add_argument("--json", action="store_true")
    return root


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _redactor(settings: CliSettings) -> Callable[[str], str]:
    """URL passwords and REDIS_PASSWORD's value out of a text (an exception's, say)."""
    secret = settings.redis_password.get_secret_value()

    def redact(text: str) -> str:
        text = redact_url(text)
        return text.replace(secret, "***") if secret else text

    return redact


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.area == "dlq" and args.action in {"replay", "drop"} and not (args.all or args.ids):
        parser().error("give dead-letter ids or --all")
    try:
        located = devstack.locate(CliSettings, args.stack_env)
    except SettingsError as exc:
        _err(f"error: {exc}")
        return 2
    settings, cache = located.settings, args.area == "cache"
    target = settings.cache_redis_target if cache else settings.redis_target
    # Which Redis, and why: an operator must never read the wrong one without knowing it.
    _err(f"platformctl: {'cache Redis' if cache else 'Redis'} {located.describe(cache=cache)}")
    try:
        return asyncio.run(run(args, settings, target))
    except (RedisError, RedisClusterException, OSError) as exc:
        # RedisClusterException: a cluster none of whose seeds answers (not a RedisError).
        reason = _redactor(settings)(str(exc)) or "no detail"
        _err(f"error: Redis at {describe_target(target)}: {type(exc).__name__}: {reason}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
