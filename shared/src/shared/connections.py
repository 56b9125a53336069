"""Redis clients: one factory for the data and the cache role, a start-up ping, health.

`make_redis(settings.redis_target, settings)` gives the role's client whatever its
REDIS_MODE: a `redis.asyncio.Redis` for a standalone server, the same class bound to
whichever server the sentinels name master (Sentinel), or a `redis.asyncio.RedisCluster`.
Code takes a `RedisClient` and never asks which: the two classes share the command API, and
where a cluster needs more (keys of one script in one slot) the key builder provides it.
Health reports the topology: every node with its role and whether it answers.

redis-py has a single socket timeout: REDIS_READ_TIMEOUT bounds every reply and
REDIS_WRITE_TIMEOUT bounds connecting (the write side of a new socket).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, overload
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import RedisUnavailableError
from shared.settings import CommonSettings, RedisMode, RedisTarget, redact_url

logger = logging.getLogger(__name__)

# What every Redis user in this code base is handed. Sentinel gives a `Redis` too.
RedisClient: TypeAlias = Redis | RedisCluster

# Failures of a ping or a probe. RedisClusterException (no seed answers, slots not covered)
# is not a RedisError.
_PING_ERRORS = (RedisError, RedisClusterException, OSError)
# Errors that mean "the server is not answering" (as opposed to a bad command).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)
# One dead node must not turn a whole topology report into a timeout.
NODE_PROBE_TIMEOUT = 0.5


def describe_target(target: str | RedisTarget) -> str:
    """Where a client connects, for logs and errors: never credentials."""
    if isinstance(target, str):
        parts = urlsplit(target)
        if parts.scheme == "unix":
            return parts.path
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    if target.mode is RedisMode.CLUSTER:
        seeds = [describe_target(target.url), *(f"{h}:{p}" for h, p in target.seeds)]
        return f"cluster via {','.join(seeds)}"
    if target.mode is RedisMode.SENTINEL:
        sentinels = ",".join(f"{h}:{p}" for h, p in target.sentinels)
        return f"master {target.master!r} via sentinels {sentinels}"
    return describe_target(target.url)


def _retry(settings: CommonSettings) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), settings.redis_max_retries)


def _timeouts(settings: CommonSettings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.redis_read_timeout,
        "socket_connect_timeout": settings.redis_write_timeout,
        "health_check_interval": 30,
    }


@overload
def make_redis(target: str, settings: CommonSettings, *, pool_size: int | None = None) -> Redis: ...
@overload
def make_redis(
    target: RedisTarget, settings: CommonSettings, *, pool_size: int | None = None
) -> RedisClient: ...
def make_redis(
    target: str | RedisTarget, settings: CommonSettings, *, pool_size: int | None = None
) -> RedisClient:
    """A client with a bounded pool, retries with jittered backoff, and timeouts. No I/O.

    `target`: a role's `RedisTarget` (`settings.redis_target`), or a URL for a standalone
    server (tools and tests that name one).
    """
    size = pool_size or settings.redis_pool_size
    if isinstance(target, str):
        return _standalone(target, settings, size)
    if target.mode is RedisMode.CLUSTER:
        return _cluster(target, settings, size)
    if target.mode is RedisMode.SENTINEL:
        return _sentinel(target, settings, size)
    return _standalone(target.url, settings, size)


def _standalone(url: str, settings: CommonSettings, size: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=size,
        timeout=settings.redis_read_timeout,
        retry=_retry(settings),
        **_timeouts(settings),
    )
    # from_pool: the client owns the pool, so aclose() closes its sockets too.
    return Redis.from_pool(pool)


def _cluster(target: RedisTarget, settings: CommonSettings, size: int) -> RedisCluster:
    # The URL is one seed and the credentials; the client learns the rest (CLUSTER SLOTS).
    return _WaitingCluster.from_url(
        target.url,
        startup_nodes=[ClusterNode(host, port) for host, port in target.seeds] or None,
        pool_size=size,
        pool_wait=settings.redis_read_timeout,
        retry=_retry(settings),
        **_timeouts(settings),
    )


@asynccontextmanager
async def pubsub_client(client: RedisClient, *, skip: str | None = None) -> AsyncIterator[Redis]:
    """A client to subscribe with: `client` itself, or on a cluster one node's own client.

    Classic pub/sub is broadcast across a cluster (a PUBLISH on any node reaches every
    node's subscribers), so one node is enough, and a plain connection to it sidesteps the
    cluster client's pub/sub (which subscribes before the slot map is read, and stays on a
    node that died). `skip` is the address (`host:port`) of a node that just failed:
    another is taken when there is one."""
    if isinstance(client, Redis):
        yield client
        return
    _ = await client.initialize()  # reads the slot map (once; again after a topology change)
    nodes = client.get_nodes()
    candidates = [node for node in nodes if node.name != skip] or nodes
    node = random.choice(candidates)
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    node_client = Redis.from_pool(pool)
    try:
        yield node_client
    finally:
        await node_client.aclose()


async def _enter(gate: asyncio.Semaphore, wait: float) -> None:
    """Take a place at `gate`, waiting at most `wait` seconds, as a blocking pool does."""
    if not gate.locked():
        await gate.acquire()
        return
    try:
        async with asyncio.timeout(wait):
            await gate.acquire()
    except TimeoutError:
        raise RedisConnectionError("No connection available.") from None


class _WaitingCluster(RedisCluster):
    """A cluster client whose callers wait for a connection instead of failing.

    redis-py's cluster nodes never wait: past `max_connections` a command fails at once with
    MaxConnectionsError, a ConnectionError that breakers count as Redis being down (200
    concurrent SETs with a pool of 10 per node: 170 failed here). Worse, a pipeline that
    meets it (or any connection error) closes every connection of the client, under the
    feet of every command in flight. So commands queue at a semaphore per node
    (`pool_size` places) and pipelines at one per client (half as many), each up to
    REDIS_READ_TIMEOUT like BlockingConnectionPool, and a node holds room for both plus a
    pub/sub connection: at most 1.5 x `pool_size` + 1 connections per node.
    """

    def __init__(self, *args: Any, pool_size: int, pool_wait: float, **kwargs: Any) -> None:
        pipelines = max(1, pool_size // 2)
        kwargs["max_connections"] = pool_size + pipelines + 1
        super().__init__(*args, **kwargs)
        self._pool_size = pool_size
        self.pool_wait = pool_wait
        self._gates: dict[str, asyncio.Semaphore] = {}
        self.pipeline_gate = asyncio.Semaphore(pipelines)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # An abstract attribute only to mypy: redis-py makes ClusterPipelines the same way.
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            # redis-py picks a command's route before it reads the slot map: on a fresh or
            # reset client every command goes to one node and comes back MOVED, and every
            # fifth MOVED closes all connections under the others' feet (200 concurrent
            # first SETs: 6-7 failed with AttributeError on a closed socket). Map first.
            _ = await self.initialize()
        return await super().execute_command(*args, **kwargs)

    async def _determine_slot(self, command: str, *args: Any) -> int:
        # redis-py knows no key position for XREADGROUP / XREAD (their keys follow STREAMS),
        # so it asks the server (`COMMAND GETKEYS`): a round trip, made twice per read
        # (the route and the node). Their keys are read from the arguments here instead.
        keys = stream_read_keys(command, args)
        if not keys:
            return await super()._determine_slot(command, *args)
        slots = {self.keyslot(key) for key in keys}
        if len(slots) != 1:
            raise RedisClusterException(f"{command} - all keys must map to the same key slot")
        return slots.pop()

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        gate = self._gates.get(target_node.name)
        if gate is None:
            gate = self._gates[target_node.name] = asyncio.Semaphore(self._pool_size)
        await _enter(gate, self.pool_wait)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            gate.release()


# Where the options of a stream read start: XREADGROUP GROUP <group> <consumer> ..., XREAD ...
_STREAM_READS: Final = {
    spelling: start
    for name, start in (("XREADGROUP", 3), ("XREAD", 0))
    for spelling in (name, name.lower(), name.encode(), name.lower().encode())
}
# Stream read options that take a value (the rest, NOACK, take none).
_VALUED_OPTIONS: Final = frozenset({"COUNT", "BLOCK", "MAXCOUNT", "MAXSIZE", "CLAIM"})


def stream_read_keys(command: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The stream keys of an `XREADGROUP` / `XREAD` (`args` after the command name): the
    first half of what follows `STREAMS`. None for any other command, or a malformed read
    (then redis-py asks the server, and the server says what is wrong)."""
    start = _STREAM_READS.get(command)
    if start is None:
        return None
    i = start
    while i < len(args):
        word = args[i]
        option = (word.decode() if isinstance(word, bytes) else str(word)).upper()
        if option == "STREAMS":
            rest = args[i + 1 :]
            if not rest or len(rest) % 2:
                return None
            return tuple(rest[: len(rest) // 2])
        i += 2 if option in _VALUED_OPTIONS else 1
    return None


class _WaitingPipeline(ClusterPipeline):
    __slots__ = ()

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, _WaitingCluster)
        await _enter(client.pipeline_gate, client.pool_wait)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            client.pipeline_gate.release()


@asynccontextmanager
async def pipeline_place(client: RedisCluster) -> AsyncIterator[None]:
    """Hold one of the client's pipeline places while driving a node's connection directly
    (`shared.replication`), so that it counts against the node's connections as a pipeline
    does. A cluster client not made by `make_redis` keeps no places: nothing to hold."""
    if not isinstance(client, _WaitingCluster):
        yield
        return
    await _enter(client.pipeline_gate, client.pool_wait)
    try:
        yield
    finally:
        client.pipeline_gate.release()


class _SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool: addresses from the sentinels, callers wait for a free connection.

    redis-py's own sentinel pool never waits: past `max_connections` it raises, where the
    standalone pool (and so every caller's expectation) waits up to REDIS_READ_TIMEOUT.
    """


class _SentinelMaster(Redis):
    """The master client; closing it also closes its sentinel clients."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def _sentinel(target: RedisTarget, settings: CommonSettings, size: int) -> Redis:
    # The URL carries credentials, db and TLS only; the sentinels name the master's address.
    options: dict[str, Any] = dict(parse_url(target.url))
    options.pop("host", None)
    options.pop("port", None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        target.sentinels,
        sentinel_kwargs={
            "socket_timeout": settings.redis_read_timeout,
            "socket_connect_timeout": settings.redis_write_timeout,
        },
    )
    client: Redis = sentinel.master_for(
        target.master,
        redis_class=_SentinelMaster,
        connection_pool_class=_SentinelPool,
        max_connections=size,
        timeout=settings.redis_read_timeout,
        retry=_retry(settings),
        **_timeouts(settings),
        **options,
    )
    return client


@overload
async def open_redis(
    target: str, settings: CommonSettings, *, pool_size: int | None = None, warm: int | None = None
) -> Redis: ...
@overload
async def open_redis(
    target: RedisTarget,
    settings: CommonSettings,
    *,
    pool_size: int | None = None,
    warm: int | None = None,
) -> RedisClient: ...
async def open_redis(
    target: str | RedisTarget,
    settings: CommonSettings,
    *,
    pool_size: int | None = None,
    warm: int | None = None,
) -> RedisClient:
    """`make_redis`, then a ping and REDIS_MIN_IDLE_CONNS connections opened up front.

    Raises `RedisUnavailableError("failed to connect to Redis at <where>: <reason>")`.
    """
    client = make_redis(target, settings, pool_size=pool_size)
    try:
        await ping(client, target)
        await _warm_pool(client, settings.redis_min_idle_conns if warm is None else warm)
    except BaseException:
        await client.aclose()
        raise
    logger.info("connected to Redis at %s", describe_target(target))
    return client


async def ping(client: RedisClient, target: str | RedisTarget) -> None:
    try:
        if isinstance(client, RedisCluster):
            # The seeds answer and cover every slot. (It returns the client: awaitable.)
            _ = await client.initialize()
        await client.ping()
    except _PING_ERRORS as exc:
        reason = redact_url(str(exc)) or type(exc).__name__
        raise RedisUnavailableError(
            f"failed to connect to Redis at {describe_target(target)}: {reason}"
        ) from None


async def warm_idle_connections(client: RedisClient, count: int) -> None:
    """Open up to `count` pooled connections now (REDIS_MIN_IDLE_CONNS), so the first
    requests find them ready. Best effort: a Redis that is down is left to connect on demand."""
    try:
        await _warm_pool(client, count)
    except (RedisError, OSError) as exc:
        logger.info("Redis pool not warmed (%s); connections open on demand", type(exc).__name__)
        return
    logger.debug("opened %d idle Redis connections", count)


async def _warm_pool(client: RedisClient, count: int) -> None:
    if isinstance(client, RedisCluster):
        await asyncio.gather(*(_warm_node(node, count) for node in client.get_primaries()))
        return
    pool = client.connection_pool
    count = min(count, pool.max_connections)
    held = [await pool.get_connection() for _ in range(count)]  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    for connection in held:
        await connection.connect()
    for connection in held:
        await pool.release(connection)


async def _warm_node(node: ClusterNode, count: int) -> None:
    held = [node.acquire_connection() for _ in range(min(count, node.max_connections))]
    try:
        for connection in held:
            await connection.connect()  # type: ignore[no-untyped-call]  # unannotated
    finally:
        for connection in held:
            node.release(connection)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One server of a topology: `primary`, `replica` or `sentinel`, and whether it answers."""

    address: str
    role: str
    reachable: bool
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "role": self.role,
            "reachable": self.reachable,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # "ok" or "down"
    latency_ms: float | None
    error: str | None = None
    nodes: tuple[NodeHealth, ...] = field(default=())  # cluster and sentinel only

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": self.status,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }
        if self.nodes:
            body["nodes"] = [node.as_dict() for node in self.nodes]
        return body


async def redis_health(client: RedisClient) -> Health:
    """Ping; `ok` with the round trip in milliseconds, or `down` with the reason.

    A cluster is `ok` while every primary answers (every slot is served); a Sentinel
    deployment while its master does. Both also list their nodes (`Health.nodes`).
    """
    if isinstance(client, RedisCluster):
        return await _cluster_health(client)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return await _sentinel_health(client, pool)
    return await _server_health(client)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def _server_health(client: Redis) -> Health:
    started = time.perf_counter()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Health("down", None, type(exc).__name__)
    return Health("ok", _elapsed_ms(started))


async def _probe(connection_class: type[Any], kwargs: dict[str, Any]) -> float | None:
    """PING over a connection of its own with short timeouts: milliseconds, or None.

    Not through the client's pool: a probe cut short would hand a socket that is out of
    step back to the pool, and a dead node would cost the read timeout.
    """
    quick = {"socket_timeout": NODE_PROBE_TIMEOUT, "socket_connect_timeout": NODE_PROBE_TIMEOUT}
    connection = connection_class(**{**kwargs, **quick, "retry": Retry(NoBackoff(), 0)})
    started = time.perf_counter()
    try:
        await connection.connect()
        await connection.send_command("PING")
        await connection.read_response()
    except (RedisError, OSError):
        return None
    finally:
        await connection.disconnect()
    return _elapsed_ms(started)


async def _cluster_health(client: RedisCluster) -> Health:
    started = time.perf_counter()
    try:
        _ = await client.initialize()  # it returns the client, an awaitable
    except _PING_ERRORS as exc:
        return Health("down", None, type(exc).__name__)
    nodes = client.get_nodes()
    latencies = await asyncio.gather(
        *(_probe(node.connection_class, node.connection_kwargs) for node in nodes)
    )
    report = tuple(
        NodeHealth(node.name, _ROLES.get(str(node.server_type), "unknown"), ms is not None, ms)
        for node, ms in zip(nodes, latencies, strict=True)
    )
    down = [node.address for node in report if node.role == "primary" and not node.reachable]
    if down:
        return Health("down", None, f"primary not answering: {', '.join(down)}", report)
    return Health("ok", _elapsed_ms(started), None, report)


_ROLES = {"primary": "primary", "replica": "replica"}


def _address(kwargs: dict[str, Any]) -> str:
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


async def _sentinel_health(client: Redis, pool: SentinelConnectionPool) -> Health:
    master = await _server_health(client)
    sentinels: list[Redis] = pool.sentinel_manager.sentinels
    pools = [sentinel.connection_pool for sentinel in sentinels]
    latencies = await asyncio.gather(
        *(_probe(pool.connection_class, pool.connection_kwargs) for pool in pools)
    )
    report: list[NodeHealth] = []
    if pool.master_address is not None:
        address = "{}:{}".format(*pool.master_address)
        report.append(NodeHealth(address, "primary", master.status == "ok", master.latency_ms))
    answering = [s for s, ms in zip(sentinels, latencies, strict=True) if ms is not None]
    report += await _sentinel_replicas(answering, pool.service_name)
    report += [
        NodeHealth(_address(pool.connection_kwargs), "sentinel", ms is not None, ms)
        for pool, ms in zip(pools, latencies, strict=True)
    ]
    return Health(master.status, master.latency_ms, master.error, tuple(report))


async def _sentinel_replicas(sentinels: list[Redis], service: str) -> list[NodeHealth]:
    """The replicas as the first sentinel that answers sees them; down ones unreachable."""
    for sentinel in sentinels:
        try:
            replicas = await sentinel.sentinel_slaves(service)
        except (RedisError, OSError):
            continue
        return [
            NodeHealth(
                f"{replica['ip']}:{replica['port']}",
                "replica",
                not (replica["is_sdown"] or replica["is_odown"] or replica["is_disconnected"]),
            )
            for replica in replicas
        ]
    return []
