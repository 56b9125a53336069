"""The redis-py internals `shared.redispy` relies on are still where it reaches for them.

No sockets: each check inspects the installed redis-py. A failure names the internal that
moved, so an upgrade is caught here rather than on the hot path.
"""

from __future__ import annotations

import inspect

import redis
from redis.asyncio import ConnectionPool, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import AskError, ClusterDownError, MovedError, ReadOnlyError, TryAgainError

from shared import redispy


def _version() -> tuple[int, int]:
    major, minor, *_ = redis.__version__.split(".")
    return int(major), int(minor)


def test_the_installed_redis_py_is_in_the_tested_range() -> None:
    low, high = redispy.TESTED_RANGE
    assert low <= _version() < high, (
        f"redis-py {redis.__version__} is outside the range shared.redispy is tested with "
        f"({low} to {high}): run these tests and the auto-pipeline's, then widen the range"
    )


def test_a_connection_keeps_its_stream_writer_in_writer() -> None:
    connection = Connection()
    assert hasattr(connection, "_writer"), "redis-py moved Connection._writer"
    assert redispy.stream_writer(connection) is None  # not connected yet


def test_connect_check_health_takes_retry_socket_connect() -> None:
    parameters = inspect.signature(AbstractConnection.connect_check_health).parameters
    assert {"check_health", "retry_socket_connect"} <= set(parameters), (
        "redis-py changed AbstractConnection.connect_check_health(check_health, "
        f"retry_socket_connect): it now takes {list(parameters)}"
    )


def test_the_parser_turns_error_replies_into_redis_py_exceptions() -> None:
    connection = Connection()
    assert hasattr(connection, "_parser"), "redis-py moved Connection._parser"
    parse = redispy.error_parser(connection)
    assert isinstance(parse("NOSCRIPT No matching script"), redis.exceptions.NoScriptError), (
        "redis-py's Connection._parser.parse_error no longer maps NOSCRIPT to NoScriptError"
    )


def test_the_pool_hands_out_connections_with_get_connection() -> None:
    assert inspect.iscoroutinefunction(ConnectionPool.get_connection), (
        "redis-py's asyncio ConnectionPool.get_connection is no longer a coroutine"
    )
    assert hasattr(Connection(), "retry"), "redis-py moved the connection's retry policy"


def test_a_sentinel_connection_asks_the_sentinels_in_connect_retry() -> None:
    connect = getattr(SentinelManagedConnection, "_connect_retry", None)
    assert connect is not None, (
        "redis-py moved SentinelManagedConnection._connect_retry (the connect that asks the "
        "sentinels for the master's address)"
    )
    assert inspect.iscoroutinefunction(connect), (
        "redis-py's SentinelManagedConnection._connect_retry is no longer a coroutine"
    )
    assert list(inspect.signature(connect).parameters) == ["self"], (
        "redis-py changed SentinelManagedConnection._connect_retry's parameters"
    )


def test_key_slot_is_the_servers_crc16() -> None:
    assert redispy.key_slot(b"foo") == 12182  # the cluster specification's example
    assert redispy.key_slot(b"{user1000}.following") == redispy.key_slot(b"user1000")


def _cluster_with(node: ClusterNode, slot: int) -> RedisCluster:
    cluster = RedisCluster(host="127.0.0.1", port=node.port)  # no I/O until a command
    manager = getattr(cluster, "nodes_manager", None)
    assert manager is not None, "redis-py moved RedisCluster.nodes_manager"
    assert isinstance(getattr(manager, "slots_cache", None), dict), (
        "redis-py moved NodesManager.slots_cache (slot -> [primary, replicas...])"
    )
    assert isinstance(getattr(manager, "nodes_cache", None), dict), (
        "redis-py moved NodesManager.nodes_cache"
    )
    manager.nodes_cache[node.name] = node
    manager.slots_cache[slot] = [node]
    return cluster


def test_the_slot_map_names_each_slots_primary_first() -> None:
    primary = ClusterNode("127.0.0.1", 7000, server_type="primary")
    cluster = _cluster_with(primary, 100)
    slots = redispy.slot_map(cluster)
    assert redispy.slot_primary(slots, 100) is primary
    assert redispy.slot_primary(slots, 101) is None  # not in the map: the caller falls back


async def test_a_moved_reply_patches_the_slot_map() -> None:
    primary = ClusterNode("127.0.0.1", 7000, server_type="primary")
    cluster = _cluster_with(primary, 100)
    assert inspect.iscoroutinefunction(cluster.nodes_manager.move_slot), (
        "redis-py changed NodesManager.move_slot (no longer a coroutine)"
    )
    await redispy.follow_moved(cluster, MovedError("100 127.0.0.1:7001"))
    moved = redispy.slot_primary(redispy.slot_map(cluster), 100)
    assert moved is not None
    assert moved.name == "127.0.0.1:7001", (
        "redis-py's NodesManager.move_slot no longer points the slot at the MOVED target"
    )


def test_a_node_connection_joins_the_nodes_connections_without_taking_a_place() -> None:
    node = ClusterNode("127.0.0.1", 7000, max_connections=5, password="pw")
    for name in ("_connections", "max_connections", "connection_class", "connection_kwargs"):
        assert name in ClusterNode.__slots__, f"redis-py moved ClusterNode.{name}"
    connection = redispy.node_connection(node)
    assert isinstance(connection, Connection)
    assert (connection.host, connection.port, connection.password) == ("127.0.0.1", 7000, "pw")
    assert connection.retry.get_retries() == 0  # the cluster client's policy retries
    assert connection in node._connections  # so RedisCluster.aclose() closes it
    assert node.max_connections == 6
    redispy.forget_node_connection(node, connection)
    assert connection not in node._connections
    assert node.max_connections == 5


def test_the_parser_maps_cluster_redirects_to_their_classes() -> None:
    parse = redispy.error_parser(Connection())
    expected = {
        "MOVED 3999 127.0.0.1:6381": MovedError,
        "ASK 3999 127.0.0.1:6381": AskError,
        "TRYAGAIN Multiple keys request during rehashing of slot": TryAgainError,
        "CLUSTERDOWN The cluster is down": ClusterDownError,
        "READONLY You can't write against a read only replica.": ReadOnlyError,
    }
    for reply, cls in expected.items():
        assert type(parse(reply)) is cls, f"redis-py's parser no longer maps {reply.split()[0]}"
