"""Every redis-py internal this project relies on, in one small adapter.

The auto-pipeline (`shared.autopipeline`, `shared.pipelink`, `shared.clusterpipeline`) drives
a connection's socket with its own protocol, so it needs things redis-py does not publish:
the connection's stream writer, its reply-error parser, a connect that tries once (and asks
the sentinels where the master is now), and on a cluster the client's slot map, its MOVED
patch, and a connection of a node's own; writes that wait for a replica
(`shared.replication`) need a batch written to one node's connection. They are reached only
through the functions here.
`tests/unit/test_redispy_internals.py` checks each against the installed redis-py and fails
naming the internal that moved, so an upgrade outside the tested range
(`shared/pyproject.toml` pins it) is caught before it breaks a hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio import ConnectionPool, RedisCluster
from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.crc import key_slot as _key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError
from redis.typing import EncodableT

# The redis-py releases this adapter is tested with (shared/pyproject.toml says the same).
TESTED_RANGE: Final = ((8, 1), (8, 2))  # >= 8.1, < 8.2

# CRC16 of the key (or of its {hash tag}) modulo 16384, as the server computes it.
key_slot: Final[Callable[[bytes], int]] = _key_slot


async def checkout(pool: ConnectionPool) -> AbstractConnection:
    """A connection of the pool's, connected by redis-py (handshake, AUTH, SELECT, TLS)."""
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    return connection


def stream_writer(connection: AbstractConnection) -> asyncio.StreamWriter | None:
    """The connection's asyncio stream writer (private `_writer`); None when its class has
    no asyncio stream (then it cannot be driven by a protocol of ours)."""
    writer: asyncio.StreamWriter | None = getattr(connection, "_writer", None)
    return writer


async def connect_once(connection: AbstractConnection) -> None:
    """Connect with one attempt: the caller's retry loop applies the client's policy, and
    `connect()` would retry inside each of its attempts (`retry_socket_connect`, 6.4+).

    A Sentinel-managed connection first asks the sentinels for the master's address (its
    private `_connect_retry`, one attempt of what its `connect()` retries): connecting it
    with `connect_check_health` alone dials the address it had, so after a promotion it
    would keep calling the dead (or demoted) server.

    A `disconnect()` from elsewhere in the middle of the handshake (the cluster client closes
    every node's connections on CLUSTERDOWN) drops the writer under it, and redis-py then
    fails with AttributeError (no writer), or uvloop with RuntimeError (a write on a closed
    transport): either is reported as the lost connection it is."""
    try:
        if isinstance(connection, SentinelManagedConnection):
            await connection._connect_retry()  # type: ignore[no-untyped-call]  # unannotated
            return
        await connection.connect_check_health(check_health=True, retry_socket_connect=False)
    except (AttributeError, RuntimeError) as exc:
        raise RedisConnectionError(f"connection closed while connecting: {exc}") from exc


def error_parser(connection: AbstractConnection) -> Callable[[str], Exception]:
    """What turns an error reply's text into redis-py's exception class (`NoScriptError`,
    `MovedError`, ...): the connection's parser's `parse_error`."""
    parse: Callable[[str], Exception] = connection._parser.parse_error
    return parse


# --- The cluster auto-pipeline (`shared.clusterpipeline`): the slot map, a node's own link


def slot_map(cluster: RedisCluster) -> NodesManager:
    """The client's slot map: its `nodes_manager`, which redis-py refreshes in place (a new
    `slots_cache` on every re-read, the same manager for the client's life)."""
    return cluster.nodes_manager


def slot_primary(slot_map: NodesManager, slot: int) -> ClusterNode | None:
    """The primary serving `slot` in the map (`slots_cache`: slot -> [primary, replicas]);
    None before the map is read, or for a slot it has no owner for."""
    nodes = slot_map.slots_cache.get(slot)
    return nodes[0] if nodes else None


def node_connection(node: ClusterNode) -> Connection:
    """A new, unconnected connection to `node`, made as its pool makes them (class and
    kwargs: credentials, TLS, timeouts) and with no retries of its own, as redis-py's are:
    the cluster client's policy covers the command.

    It joins the node's `_connections`, so closing the cluster client closes it, and the
    node's `max_connections` grows by one, so its pool keeps every place it had."""
    kwargs = dict(node.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    connection: Connection = node.connection_class(**kwargs)
    node._connections.append(connection)
    node.max_connections += 1
    return connection


def forget_node_connection(node: ClusterNode, connection: Connection) -> None:
    """Undo `node_connection` (after the caller disconnected it)."""
    if connection in node._connections:
        node._connections.remove(connection)
        node.max_connections -= 1


# --- One connection of one cluster node (for `shared.replication`) -------------------------
# (`follow_moved` serves the cluster auto-pipeline too.)
#
# Writes that wait for a replica need two more internals on a cluster: a batch written to one
# connection of one node, and the slot map patched from a `MOVED`.
#
# `WAIT` answers for the writes made on its own connection, so a write that must reach a
# replica is followed by `WAIT` on the same connection. A standalone or Sentinel client does
# that with a public pipeline. redis-py's cluster client cannot: a keyless command in a
# cluster pipeline goes to a random node, and when the pipeline retries after an error it
# forgets the node each command was pinned to. These two functions reach one node directly.


async def send_together(node: ClusterNode, *commands: tuple[EncodableT, ...]) -> list[Any]:
    """Write `commands` to one connection of `node` in one go and read their replies in
    order; an error reply comes back as its exception (`NoScriptError`, `MovedError`, ...).

    Raises what connecting or writing raises (then nothing was read, and the caller cannot
    know whether the server ran any of it: it may have). `ClusterNode.execute_pipeline` is
    the node's own batch primitive: it applies the node's reply callbacks and returns the
    connection to the node's pool.
    """
    batch = [PipelineCommand(position, *args) for position, args in enumerate(commands)]
    _ = await node.execute_pipeline(batch)  # True when a reply is an error: we read each
    return [command.result for command in batch]


async def follow_moved(client: RedisCluster, error: MovedError) -> None:
    """Patch the client's slot map from a `MOVED` reply, as its own command path does."""
    await client.nodes_manager.move_slot(error)
