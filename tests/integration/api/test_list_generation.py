"""One write retires every cached list page with one INCR — no SCAN, no KEYS.

Runs on a private redis-server so `INFO commandstats` counts only this test's commands.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from devtools.redis_server import RedisServer

from .conftest import ApiFactory

PAGES = [(1, 2), (2, 2), (1, 5), (3, 1)]


async def command_counts(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_one_write_invalidates_every_page_without_scan(
    make_api: ApiFactory, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    async with make_api(redis_url=server.url, near_cache_size=0) as api:
        for i in range(4):
            await api.create_user(f"User {i}")
        for page, limit in PAGES:
            response = await api.client.get(f"/v1/users?page={page}&limit={limit}")
            assert response.headers["x-cache"] == "MISS"
        for page, limit in PAGES:
            response = await api.client.get(f"/v1/users?page={page}&limit={limit}")
            assert response.headers["x-cache"] == "HIT"

        probe = Redis.from_url(server.url)
        try:
            await probe.config_resetstat()
            await api.create_user("Newcomer")
            during_write = await command_counts(probe)
            await probe.config_resetstat()
            after = [await api.client.get(f"/v1/users?page={p}&limit={n}") for p, n in PAGES]
            during_reads = await command_counts(probe)
        finally:
            await probe.aclose()

    assert [r.headers["x-cache"] for r in after] == ["MISS"] * len(PAGES)
    assert all(r.json()["total"] == 5 for r in after)
    # The write's whole cache effect: one INCRBY of the generation, plus the purge broadcast
    # (and the outbox relay's batch, when it has run by then: one EVALSHA of its script per
    # batch, whose XADDs the server counts too). A PING is redis-py's health check of a
    # connection idle past its interval, or the near-cache subscriber's keepalive.
    relay = {"xadd", "evalsha"} if "xadd" in during_write else set()
    assert during_write.get("evalsha", 0) <= during_write.get("xadd", 0)
    cache_commands = set(during_write) - {"config|resetstat", "publish", "ping"} - relay
    assert cache_commands == {"incrby"}
    assert during_write["incrby"] == 1
    for scanning in ("scan", "keys"):
        assert scanning not in during_reads
