"""Every redis-py internal this project relies on, in one small adapter.

The auto-pipeline (`shared.autopipeline`) drives a pooled connection's socket with its own
protocol, so it needs a few things redis-py does not publish: the connection's stream
writer, its reply-error parser, and a connect that tries once. They are reached only through
the functions here. `tests/unit/test_redispy_internals.py` checks each against the installed
redis-py and fails naming the internal that moved, so an upgrade outside the tested range
(`shared/pyproject.toml` pins it) is caught before it breaks a hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

# The redis-py releases this adapter is tested with (shared/pyproject.toml says the same).
TESTED_RANGE: Final = ((8, 1), (8, 2))  # >= 8.1, < 8.2


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
    `connect()` would retry inside each of its attempts (`retry_socket_connect`, 6.4+)."""
    await connection.connect_check_health(check_health=True, retry_socket_connect=False)


def error_parser(connection: AbstractConnection) -> Callable[[str], Exception]:
    """What turns an error reply's text into redis-py's exception class (`NoScriptError`,
    `ResponseError`, ...): the connection's parser's `parse_error`."""
    parse: Callable[[str], Exception] = connection._parser.parse_error
    return parse
