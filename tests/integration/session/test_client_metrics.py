"""The api's session client counts every call by outcome and exports its breaker's state.

Against the real session service in-process (real lifespan, real Redis) for the answers, a
closed port for `unreachable`, and a socket that accepts but never answers for `timeout`.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from api.adapters.sessions import SessionClient, SessionServiceUnavailableError
from api.metrics import SESSION_OUTCOMES, ApiMetrics
from devtools.redis_server import free_port
from devtools.settings import StackSettings
from session_service.main import create_app

from .conftest import SettingsFactory

UNKNOWN_ID = uuid.uuid4().hex + "A" * 43  # well formed, never issued


@pytest.fixture
def metrics() -> ApiMetrics:
    return ApiMetrics(CollectorRegistry())


@pytest.fixture
async def session_transport(
    session_settings: SettingsFactory,
) -> AsyncIterator[httpx.ASGITransport]:
    app = create_app(session_settings())
    async with LifespanManager(app) as manager:
        yield httpx.ASGITransport(app=manager.app)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def outcomes(metrics: ApiMetrics) -> dict[str, float]:
    registry = metrics.registry
    return {
        outcome: registry.get_sample_value("session_service_requests_total", {"outcome": outcome})
        or 0.0
        for outcome in SESSION_OUTCOMES
    }


def breaker_open(metrics: ApiMetrics) -> float | None:
    return metrics.registry.get_sample_value("circuit_breaker_open", {"breaker": "session-service"})


async def test_answers_are_counted_ok_not_found_and_error(
    session_settings: SettingsFactory,
    session_transport: httpx.ASGITransport,
    metrics: ApiMetrics,
) -> None:
    assert set(outcomes(metrics).values()) == {0.0}  # every outcome exported from the start
    client = SessionClient(session_settings(), transport=session_transport, metrics=metrics)
    wrong_token = session_settings(service_token="not-the-service-token")
    refused = SessionClient(wrong_token, transport=session_transport, metrics=metrics)
    try:
        issued = await client.create(uuid.uuid4())
        assert await client.get(issued.id) is not None
        assert await client.get(UNKNOWN_ID) is None
        with pytest.raises(SessionServiceUnavailableError):
            await refused.get(issued.id)  # 401: our token is wrong
    finally:
        await client.aclose()
        await refused.aclose()
    counted = outcomes(metrics)
    assert (counted["ok"], counted["not_found"], counted["error"]) == (2.0, 1.0, 1.0)
    assert breaker_open(metrics) == 0.0


async def _fail(client: SessionClient, times: int) -> None:
    for _ in range(times):
        with pytest.raises(SessionServiceUnavailableError):
            await client.get(UNKNOWN_ID)


async def test_transport_failures_then_the_open_breaker_are_counted(
    session_settings: SettingsFactory, silent_port: int, metrics: ApiMetrics
) -> None:
    def settings_for(port: int) -> StackSettings:
        return session_settings(
            session_service_url=f"http://127.0.0.1:{port}",
            session_service_timeout="200ms",
            breaker_failure_threshold=2,
            breaker_reset_timeout="60s",
        )

    unreachable = SessionClient(settings_for(free_port()), metrics=metrics)
    silent = SessionClient(settings_for(silent_port), metrics=metrics)
    try:
        await _fail(silent, 1)
        await _fail(unreachable, 2)
        assert breaker_open(metrics) == 1.0
        await _fail(unreachable, 3)  # not attempted
    finally:
        await unreachable.aclose()
        await silent.aclose()
    counted = outcomes(metrics)
    assert (counted["timeout"], counted["unreachable"], counted["circuit_open"]) == (1, 2, 3)
    assert counted["ok"] == counted["error"] == 0.0
