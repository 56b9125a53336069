"""Operator gauges of the api on real PostgreSQL and Redis: the outbox backlog while events
cannot reach the stream, and the circuit breakers' state."""

from __future__ import annotations

from collections.abc import Callable

from devtools.polling import eventually
from devtools.redis_server import RedisServer

from .conftest import Api, ApiFactory


def sample(api: Api, name: str, **labels: str) -> float | None:
    return api.state.metrics.registry.get_sample_value(name, labels)


async def test_an_unsent_outbox_row_shows_in_the_backlog_gauges_until_it_is_published(
    make_api: ApiFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    async with make_api(redis_url=server.url, outbox_poll_interval="60s") as api:
        # The first round measured.
        await eventually(lambda: sample(api, "outbox_backlog") == 0.0, "outbox_backlog is 0")
        assert sample(api, "outbox_oldest_unsent_age_seconds") == 0.0

        server.kill()
        await api.create_user()  # commits; the relay cannot publish its event

        def stuck() -> bool:
            age = sample(api, "outbox_oldest_unsent_age_seconds") or 0.0
            return sample(api, "outbox_backlog") == 1.0 and age > 0.0

        await eventually(stuck, "a backlog of 1 with an age")

        server.start()

        def drained() -> bool:
            age = sample(api, "outbox_oldest_unsent_age_seconds")
            return sample(api, "outbox_backlog") == 0.0 and age == 0.0

        await eventually(drained, "the backlog drained", within=15)
    assert (sample(api, "outbox_published_total") or 0.0) >= 1.0


async def test_the_cache_breaker_is_exported_open_once_redis_is_gone(
    make_api: ApiFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    async with make_api(
        redis_url=server.url,
        near_cache_size=0,
        rate_limit_enabled=True,
        breaker_failure_threshold=2,
        breaker_reset_timeout="60s",
    ) as api:
        user = await api.create_user()
        for breaker in ("cache", "ratelimit", "session-service"):
            assert sample(api, "circuit_breaker_open", breaker=breaker) == 0.0, breaker

        server.kill()
        for _ in range(5):
            assert (await api.client.get(f"/v1/users/{user['id']}")).status_code == 200
        assert sample(api, "circuit_breaker_open", breaker="cache") == 1.0
        text = (await api.client.get("/metrics")).text
        assert 'circuit_breaker_open{breaker="cache"} 1.0' in text
