"""The redis-py internals `shared.redispy` relies on are still where it reaches for them.

No sockets: each check inspects the installed redis-py. A failure names the internal that
moved, so an upgrade is caught here rather than on the hot path.
"""

from __future__ import annotations

import inspect

import redis
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import SentinelManagedConnection

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


def test_a_sentinel_connection_asks_for_the_master_in_connect_retry() -> None:
    connect = getattr(SentinelManagedConnection, "_connect_retry", None)
    assert inspect.iscoroutinefunction(connect), (
        "redis-py moved SentinelManagedConnection._connect_retry (one attempt: ask the "
        "sentinels for the master, then connect to it)"
    )
