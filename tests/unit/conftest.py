"""tests/unit: no sockets, no processes, milliseconds.

A unit test that asks for a server fixture, opens a socket or starts a process fails here,
saying where it belongs: tests/integration (real Redis and PostgreSQL) or tests/e2e.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Final, NoReturn

import pytest

# The fixtures of tests/conftest.py that start or reach a server (the others build on them).
SERVER_FIXTURES: Final = frozenset(
    {"redis_topology", "redis_url", "database_url", "redis_server_factory"}
)


def _refuse(*_: object, **__: object) -> NoReturn:
    raise AssertionError(
        "tests/unit opens no socket and starts no process: move this test to tests/integration"
    )


@pytest.fixture(autouse=True)
def _no_servers_sockets_or_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if servers := SERVER_FIXTURES.intersection(request.fixturenames):
        pytest.fail(f"tests/unit uses no server, but this test asks for {sorted(servers)}")
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
