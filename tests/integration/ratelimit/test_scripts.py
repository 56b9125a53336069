"""One EVALSHA per check, and the scripts survive SCRIPT FLUSH and a Redis restart."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devtools.polling import eventually
from devtools.redis_server import RedisServer
from shared.keys import Keys
from shared.limiter import Policy, RateLimiter
from shared.settings import RateAlgorithm

ALGORITHMS = [RateAlgorithm.SLIDING_WINDOW, RateAlgorithm.GCRA]


async def _calls(redis: Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_check_is_exactly_one_evalsha(
    redis_server_factory: Callable[..., RedisServer], algorithm: RateAlgorithm
) -> None:
    server = redis_server_factory()
    redis = Redis.from_url(server.url)
    try:
        limiter = RateLimiter(redis, Keys("t"), denials=None)
        policy = Policy("one", limit=50, period=60, algorithm=algorithm)
        await limiter.check(policy, "warm")  # loads the script once (NOSCRIPT → load)
        await redis.config_resetstat()
        for _ in range(100):  # half admitted, half refused: both paths
            await limiter.check(policy, "a")
        calls = await _calls(redis)
    finally:
        await redis.aclose()
    # commandstats also counts the commands a script runs: those are all the rest.
    assert calls.pop("evalsha") == 100
    assert set(calls) <= {"time", "get", "set", "config|resetstat", "config"}, calls


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_checks_keep_working_across_script_flush(
    redis: Redis, key_prefix: str, algorithm: RateAlgorithm
) -> None:
    limiter = RateLimiter(redis, Keys(key_prefix), denials=None)
    # An hour: GCRA frees a slot every period/limit (12 s here), far longer than the 400
    # checks take even on a loaded machine, so exactly `limit` are admitted.
    policy = Policy("flush", limit=300, period=3600, algorithm=algorithm)
    stop = asyncio.Event()

    async def flusher() -> int:
        flushes = 0
        while not stop.is_set():  # not polling: flushes until the checks are done
            await redis.script_flush()
            flushes += 1
            await asyncio.sleep(0.002)
        return flushes

    task = asyncio.create_task(flusher())
    decisions = []
    try:
        for i in range(400):
            if i % 20 == 0:
                # Besides the concurrent flusher (whose pace depends on the machine's load),
                # a flush every 20 checks guarantees the scripts really vanish 20 times.
                await redis.script_flush()
            decisions.append(await limiter.check(policy, "f"))
    finally:
        stop.set()
        flushes = await task
    assert flushes >= 1
    assert sum(d.allowed for d in decisions) == 300  # no check lost or double-counted
    assert [d.remaining for d in decisions[:300]] == list(range(299, -1, -1))


async def test_checks_resume_after_a_redis_restart(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    redis = Redis.from_url(server.url)
    try:
        limiter = RateLimiter(redis, Keys("t"), denials=None)
        policy = Policy("restart", limit=5, period=60)
        assert (await limiter.check(policy, "r")).remaining == 4
        server.restart()  # a new process: empty script cache, empty data (no persistence)
        after = await _first_answer(limiter, policy)
    finally:
        await redis.aclose()
    assert after.allowed
    assert after.remaining == 4


async def _first_answer(limiter: RateLimiter, policy: Policy) -> Any:
    # The pool's old sockets died with the server: redis-py reconnects on the next call.
    return await eventually(
        lambda: limiter.check(policy, "r"),
        "the limiter answers after the restart",
        every=0.05,
        ignoring=(RedisConnectionError,),
    )


async def test_sliding_window_state_expires_at_the_end_of_the_next_window(
    redis: Redis, key_prefix: str
) -> None:
    # The first admission in a window sets the expiry; later ones keep it (SET ... KEEPTTL):
    # it must always be the end of the next window, and move when the window does.
    keys = Keys(key_prefix)
    limiter = RateLimiter(redis, keys, denials=None)
    policy = Policy("ttl", limit=1000, period=0.2)
    key = keys.ratelimit("ttl", "t")
    seen: dict[int, set[int]] = {}

    async def three_windows() -> bool:
        assert (await limiter.check(policy, "t")).allowed
        state, expires_at = await asyncio.gather(redis.get(key), redis.pexpiretime(key))
        assert isinstance(state, bytes)
        index = int(struct.unpack(">ddd", state)[0])
        seen.setdefault(index, set()).add(int(expires_at))
        return len(seen) >= 3

    await eventually(three_windows, "checks spanning three windows", within=5, every=0.01)
    for index, expiries in seen.items():
        assert len(expiries) == 1, expiries  # one expiry per window, kept by later admissions
        # The server's command clock may differ from TIME in the script by a millisecond.
        assert abs(expiries.pop() - (index + 2) * policy.period_ms) <= 2


async def test_gcra_state_lives_until_its_tat_and_its_expiry_is_rarely_rewritten(
    redis: Redis, key_prefix: str
) -> None:
    # The key must outlive its TAT, or a burst would be handed out again early; and the
    # expiry is set a period ahead and rewritten only when a TAT passes it (SET ... KEEPTTL
    # otherwise), so steady traffic rewrites it about once a period, not on every check.
    keys = Keys(key_prefix)
    limiter = RateLimiter(redis, keys, denials=None)
    policy = Policy("gttl", limit=1000, period=0.2, algorithm=RateAlgorithm.GCRA)
    key = keys.ratelimit("gttl", "t")
    expiries: list[int] = []
    checks = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.7
    while loop.time() < deadline:  # not polling: steady traffic for 0.7 s
        assert (await limiter.check(policy, "t")).allowed
        checks += 1
        state, expires_at = await asyncio.gather(redis.get(key), redis.pexpiretime(key))
        assert isinstance(state, bytes)
        tat, expires = struct.unpack(">dd", state)
        assert expires_at == int(expires)  # the stored expiry is the key's
        assert expires >= tat  # the state outlives its TAT
        if not expiries or expiries[-1] != expires_at:
            expiries.append(expires_at)
        await asyncio.sleep(0.005)
    assert checks >= 30, "too few checks to tell"
    # 0.7 s of 0.2 s periods: a handful of rewrites, against one per check before.
    assert len(expiries) <= 6, (len(expiries), checks)
