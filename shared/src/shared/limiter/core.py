"""The rate limiter: one `EVALSHA` per check, state O(1) per identifier, server time.

Both algorithms run as Lua scripts (`sliding_window.lua`, `gcra.lua` beside this module):
the script reads the clock with `TIME`, decides, updates the state only when it admits, and
returns everything the response headers need. A check sends one `EVALSHA`; after `SCRIPT FLUSH`
or a restart of Redis the server answers `NOSCRIPT` and that check is sent again as `EVAL`,
which runs the script and caches it in the same round trip. (redis-py's `register_script`
does `SCRIPT LOAD` then `EVALSHA` instead, which fails again if a flush lands in between.)
Checks go through the client's auto-pipeline (`shared.autopipeline`): a lone check is written
at once on a dedicated connection (no pool checkout per call), concurrent checks share one
round trip. On a cluster the check goes to the primary of its key's slot, and the `NOSCRIPT`
fallback loads the script on that primary: each primary caches it on its first check.
`TIME` in a script that writes needs effects replication, the default since Redis 5, so this
runs on 6.2 and 7.x alike.

Accuracy: GCRA is exact. The sliding window counter never admits more than `limit` within
one fixed window (`[k·period, (k+1)·period)` on the server clock) and, under continuous demand,
admits exactly `limit` in each; over an arbitrary interval of one period it can admit up to
twice the limit in the worst case (the previous window's traffic all at its very end), the
price of O(1) state — on real traffic the error is tiny (Cloudflare measured 0.003 %).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from redis.exceptions import NoScriptError

from shared.autopipeline import auto_pipeline
from shared.connections import RedisClient
from shared.keys import Keys
from shared.limiter.denials import DenialCache
from shared.limiter.model import Decision, Policy
from shared.settings import RateAlgorithm

SCRIPT_FILES = {
    RateAlgorithm.SLIDING_WINDOW: "sliding_window.lua",
    RateAlgorithm.GCRA: "gcra.lua",
}

KEY_MEMO_SIZE = 4096


def script_source(algorithm: RateAlgorithm) -> str:
    return files("shared.limiter").joinpath(SCRIPT_FILES[algorithm]).read_text("utf-8")


class RateLimiter:
    """`await limiter.check(policy, identifier, cost=1)` → `Decision`.

    Raises what redis-py raises when Redis fails; callers decide fail-open or fail-closed.
    `denials=None` turns the in-process denial cache off (every check asks Redis).
    """

    def __init__(
        self, redis: RedisClient, keys: Keys, *, denials: DenialCache | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.denials = denials
        self._pipeline = auto_pipeline(redis)
        self._key_memo: dict[tuple[str, str], bytes] = {}
        self._scripts = {algorithm: Script(script_source(algorithm)) for algorithm in SCRIPT_FILES}
        # Per policy: the EVALSHA prefix and its limit and period, encoded once.
        self._calls: dict[Policy, tuple[Script, bytes, bytes]] = {}

    def cached_denial(self, policy: Policy, identifier: str, cost: int = 1) -> Decision | None:
        """The in-process denial cache's answer, without Redis (None: Redis must be asked).

        Callers that put `check` behind a circuit breaker ask this first, so a client that
        was just refused stays refused while the breaker is open."""
        if self.denials is None:
            return None
        return self.denials.get(self._key(policy.name, identifier), cost)

    async def check(self, policy: Policy, identifier: str, cost: int = 1) -> Decision:
        if not 1 <= cost <= policy.limit:
            raise ValueError(f"cost must be between 1 and the limit ({policy.limit})")
        key = self._key(policy.name, identifier)
        denials = self.denials
        if denials is not None and (cached := denials.get(key, cost)) is not None:
            return cached
        call = self._calls.get(policy)
        if call is None:
            call = self._calls[policy] = (
                self._scripts[policy.algorithm],
                b"%d" % policy.limit,
                b"%d" % policy.period_ms,
            )
        script, limit, period = call
        # Inline rather than a helper coroutine: this is the hot path of every request.
        try:
            raw = await self._pipeline.execute(*script.evalsha, key, limit, period, b"%d" % cost)
        except NoScriptError:  # SCRIPT FLUSH or a restart: EVAL runs it and caches it again
            raw = await self._pipeline.execute(*script.eval, key, limit, period, b"%d" % cost)
        decision = Decision.from_reply(policy.limit, raw)
        if denials is not None and not decision.allowed:
            denials.put(key, cost, decision)
        return decision

    def _key(self, policy: str, identifier: str) -> bytes:
        # Building a key validates both tokens (two regex matches): memoized, bounded.
        key = self._key_memo.get((policy, identifier))
        if key is None:
            if len(self._key_memo) >= KEY_MEMO_SIZE:
                self._key_memo.clear()
            key = self.keys.ratelimit(policy, identifier).encode()
            self._key_memo[(policy, identifier)] = key
        return key


class Script:
    """A Lua script's `EVALSHA` and `EVAL` command prefixes (`numkeys` 1), pre-encoded.

    Bytes skip redis-py's per-argument encoder on the hot path. The caller sends `evalsha`
    and falls back to `eval` on `NOSCRIPT`, which runs the script and caches it again in
    the same round trip.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.evalsha = (b"EVALSHA", self.sha.encode(), b"1")
        self.eval = (b"EVAL", source.encode(), b"1")
