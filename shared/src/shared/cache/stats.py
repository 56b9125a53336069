"""What `platformctl cache stats` reports: the cache Redis as a server, and the api's cache.

Redis's `keyspace_hits`/`keyspace_misses` (INFO stats) count every read of every client of
that server — the limiter's, the sessions' when the cache shares the data Redis — so their
ratio is the server's, never the cache's. The cache's own ratio is what the api counts: its
`/metrics` exports `cache_operations_total{op="get",result}` (`CacheMetrics`, the Redis
cache) and `near_cache_lookups_total{result}` (`NearCacheMetrics`, in-process), both since
that api process started.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import RedisCluster

from shared.connections import RedisClient
from shared.keys import Keys
from shared.settings import redact_url

SERVER_RATIO_LABEL: Final = "server-wide keyspace hit ratio (INFO)"
# (sample name, labels it must carry) → the counter family it feeds in the report.
_COUNTERS: Final = {
    "redis": ("cache_operations_total", {"op": "get"}),
    "near": ("near_cache_lookups_total", {}),
}


_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ratio(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None


async def _info(redis: RedisClient, section: str) -> dict[str, dict[str, Any]]:
    """INFO `section` of every server holding keys: the one server, or each cluster primary
    (a cluster client would otherwise ask one node at random), by address."""
    if isinstance(redis, RedisCluster):
        replies: dict[str, Any] = await redis.info(section, target_nodes=RedisCluster.PRIMARIES)
        return dict(sorted(replies.items()))
    return {"": await redis.info(section)}


def _total(infos: dict[str, dict[str, Any]], field: str) -> int:
    return sum(int(info.get(field, 0) or 0) for info in infos.values())


def _memory(infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if list(infos) == [""]:
        memory = infos[""]
        fields = ("used_memory", "used_memory_human", "maxmemory", "maxmemory_policy")
        return {k: memory.get(k) for k in fields}
    # A cluster: the primaries' sums (each primary enforces its own maxmemory).
    used = _total(infos, "used_memory")
    policies = sorted({str(info.get("maxmemory_policy")) for info in infos.values()})
    return {
        "used_memory": used,
        "used_memory_human": f"{used / 1024 / 1024:.2f}M",
        "maxmemory": _total(infos, "maxmemory"),
        "maxmemory_policy": ",".join(policies),
    }


async def server_report(redis: RedisClient, keys: Keys, sample: int, top: int) -> dict[str, Any]:
    """INFO figures (summed over a cluster's primaries) and the biggest keys among up to
    `sample` keys of the prefix."""
    stats = await _info(redis, "stats")
    memory = await _info(redis, "memory")
    keyspaces = await _info(redis, "keyspace")
    keyspace: dict[str, Any] = keyspaces[""] if list(keyspaces) == [""] else keyspaces
    hits, misses = _total(stats, "keyspace_hits"), _total(stats, "keyspace_misses")
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
        "memory": _memory(memory),
        "evicted_keys": _total(stats, "evicted_keys"),
        "expired_keys": _total(stats, "expired_keys"),
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "keyspace_hit_ratio": ratio(hits, misses),
        "sampled_keys": len(sampled),
        "big_keys": [{"key": k, "bytes": size} for k, size in ranked],
    }


def parse_api_counters(text: str) -> dict[str, dict[str, Any]]:
    """`{"redis": {...}, "near": {...}}` from a Prometheus text page: counts per result,
    hits, misses and their ratio. A family the page does not export is left out."""
    counts: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, (wanted, labels) in _COUNTERS.items():
                if sample.name != wanted or any(
                    sample.labels.get(k) != v for k, v in labels.items()
                ):
                    continue
                result = sample.labels.get("result", "?")
                per_result = counts.setdefault(name, {})
                per_result[result] = per_result.get(result, 0) + int(sample.value)
    return {
        name: {
            "results": per_result,
            "hits": per_result.get("hit", 0),
            "misses": per_result.get("miss", 0),
            "hit_ratio": ratio(per_result.get("hit", 0), per_result.get("miss", 0)),
        }
        for name, per_result in counts.items()
    }


def api_cache_counters(api_url: str, timeout: float = 2.0) -> dict[str, Any]:
    """The api's own cache counters from `<api_url>/metrics`, or `{"url", "error"}` when it
    cannot be read. Blocking: run it outside the event loop."""
    url = f"{api_url.rstrip('/')}/metrics"
    shown = redact_url(url)
    try:
        # http(s) only: the caller checked the scheme (check_http_url). Straight to the api,
        # never through an HTTP(S)_PROXY that could answer in its place.
        with _DIRECT.open(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return {"url": shown, "error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return {"url": shown, "error": redact_url(str(reason)) or type(exc).__name__}
    try:
        found = parse_api_counters(text)
    except ValueError:
        return {"url": shown, "error": "its /metrics is not in the Prometheus text format"}
    if not found:
        return {"url": shown, "error": "no cache counters in its /metrics (is it the api?)"}
    return {"url": shown, **found}
