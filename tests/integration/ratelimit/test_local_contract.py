"""The in-process limiter and the Lua scripts decide alike: the same checks, the same answers.

An hour-long period keeps both inside one window for the whole test, so the servers' clocks
cannot make the two sequences differ; the decisions (admitted, remaining) must be equal.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.limiter import Policy, RateLimiter
from shared.limiter.local import LocalLimiter
from shared.settings import RateAlgorithm

COSTS = [1, 2, 1, 3, 1, 1, 2, 1, 1, 4, 1, 1]


@pytest.mark.parametrize("algorithm", list(RateAlgorithm))
async def test_local_limiter_decides_as_the_script_does(
    redis: Redis, key_prefix: str, algorithm: RateAlgorithm
) -> None:
    policy = Policy("contract", limit=10, period=3600, algorithm=algorithm)
    shared = RateLimiter(redis, Keys(key_prefix), denials=None)
    local = LocalLimiter()
    remote = [await shared.check(policy, "c", cost) for cost in COSTS]
    here = [local.check(policy, "c", cost) for cost in COSTS]
    assert [(d.allowed, d.remaining) for d in here] == [(d.allowed, d.remaining) for d in remote]
    assert any(not d.allowed for d in here)  # the sequence does reach the limit
