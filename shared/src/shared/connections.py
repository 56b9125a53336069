"""Redis clients: one factory for the data and the cache role, a start-up ping, health.

redis-py has a single socket timeout: REDIS_READ_TIMEOUT bounds every reply and
REDIS_WRITE_TIMEOUT bounds connecting (the write side of a new socket).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import RedisUnavailableError
from shared.settings import CommonSettings, redact_url

logger = logging.getLogger(__name__)

# Errors that mean "the server is not answering" (as opposed to a bad command).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


def describe_target(url: str) -> str:
    """`host:port` (or the socket path) of a Redis URL, without credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def make_redis(url: str, settings: CommonSettings, *, pool_size: int | None = None) -> Redis:
    """A client with a bounded pool, retries with jittered backoff, and timeouts. No I/O."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), settings.redis_max_retries)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size or settings.redis_pool_size,
        timeout=settings.redis_read_timeout,
        socket_timeout=settings.redis_read_timeout,
        socket_connect_timeout=settings.redis_write_timeout,
        retry=retry,
        health_check_interval=30,
    )
    # from_pool: the client owns the pool, so aclose() closes its sockets too.
    return Redis.from_pool(pool)


async def open_redis(
    url: str, settings: CommonSettings, *, pool_size: int | None = None, warm: int | None = None
) -> Redis:
    """`make_redis`, then a ping and REDIS_MIN_IDLE_CONNS connections opened up front.

    Raises `RedisUnavailableError("failed to connect to Redis at host:port: <reason>")`.
    """
    client = make_redis(url, settings, pool_size=pool_size)
    try:
        await ping(client, url)
        await _warm_pool(client, settings.redis_min_idle_conns if warm is None else warm)
    except BaseException:
        await client.aclose()
        raise
    logger.info("connected to Redis at %s", describe_target(url))
    return client


async def ping(client: Redis, url: str) -> None:
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        reason = redact_url(str(exc)) or type(exc).__name__
        raise RedisUnavailableError(
            f"failed to connect to Redis at {describe_target(url)}: {reason}"
        ) from None


async def warm_idle_connections(client: Redis, count: int) -> None:
    """Open up to `count` pooled connections now (REDIS_MIN_IDLE_CONNS), so the first
    requests find them ready. Best effort: a Redis that is down is left to connect on demand."""
    try:
        await _warm_pool(client, count)
    except (RedisError, OSError) as exc:
        logger.info("Redis pool not warmed (%s); connections open on demand", type(exc).__name__)
        return
    logger.debug("opened %d idle Redis connections", count)


async def _warm_pool(client: Redis, count: int) -> None:
    pool = client.connection_pool
    count = min(count, pool.max_connections)
    held = [await pool.get_connection() for _ in range(count)]  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    for connection in held:
        await connection.connect()
    for connection in held:
        await pool.release(connection)


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # "ok" or "down"
    latency_ms: float | None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "latency_ms": self.latency_ms, "error": self.error}


async def redis_health(client: Redis) -> Health:
    """Ping the server; `ok` with the round trip in milliseconds, or `down` with the reason."""
    started = time.perf_counter()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Health("down", None, type(exc).__name__)
    return Health("ok", round((time.perf_counter() - started) * 1000, 3))
