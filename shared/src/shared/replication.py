"""Writes that count once a replica holds them: a script, then `WAIT 1 <timeout>`.

`WAIT` answers for the writes made on its own connection, so it goes on the connection that
ran the script, to the primary that serves the script's keys: a pipeline of `EVALSHA` and
`WAIT` on a standalone or Sentinel client (a pipeline is one pooled connection), and on a
cluster both written together to one connection of the key's primary (`shared.redispy`;
redis-py's cluster pipeline would send a keyless `WAIT` to a random node). A `WAIT` anywhere
else answers for a connection that wrote nothing: at once, and falsely.

`WAIT` for a replica that is not there blocks for its whole timeout, so a primary's replicas
are counted first (`INFO replication`, `connected_slaves`), once per `RECHECK_SECONDS` per
primary, and a primary without one is not waited for. A primary whose replica let a `WAIT`
time out is not waited for either until the next count: a stalled replica costs one write
per primary per `RECHECK_SECONDS` the full timeout, not every write. A write that must not
count unless a replica holds it (a lock's fence: `shared.lock`) asks with
`wait_stalled=True`: it is waited for all the same, and pays the timeout each time.

What a write's caller learns is its `Replication`; what to do when no replica confirmed is
the caller's choice (the session service acknowledges and counts it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT

from shared import redispy
from shared.connections import pipeline_place

logger = logging.getLogger(__name__)

# How long a primary's replica count is trusted: a replica that (re)attaches is waited for
# within this long, and a stalled one costs one full timeout per primary per this long.
RECHECK_SECONDS: Final = 5.0
# A cluster redirection is followed this many times before the ordinary path takes over.
_ATTEMPTS: Final = 3
_SERVER: Final = "the primary"  # the one primary of a standalone or Sentinel client
# The cluster is moving the slot (ASK, TRYAGAIN) or failing over (CLUSTERDOWN): the client's
# ordinary path knows how to follow; such a write is not waited for.
_REROUTE: Final = (AskError, TryAgainError, ClusterDownError)


class Replication(StrEnum):
    """What is known of a write's copy on a replica when it is acknowledged."""

    CONFIRMED = "confirmed"  # a replica acknowledged it
    TIMED_OUT = "timed_out"  # WAIT sent; no replica acknowledged within the timeout
    NO_REPLICA = "no_replica"  # not asked: no replica connected, or one timed out just now
    UNCHECKED = "unchecked"  # not asked: written by the client's ordinary path (see above)
    OFF = "off"  # waiting is turned off (timeout 0)


@dataclass(frozen=True, slots=True)
class Acked:
    reply: Any
    replication: Replication


@dataclass(slots=True)
class _Count:
    replicas: int
    until: float
    stalled: bool = False  # a replica let a WAIT time out since this count was taken


class ReplicaWait:
    """Runs scripts whose writes must reach a replica before they count (module docstring).

    `timeout_ms` bounds each `WAIT`; 0 turns waiting off. It must stay under the client's
    socket timeout, or the read of `WAIT`'s reply times out first. `recheck`: seconds a
    primary's replica count is trusted.
    """

    def __init__(
        self, client: Redis | RedisCluster, timeout_ms: int, *, recheck: float = RECHECK_SECONDS
    ) -> None:
        self._client = client
        self.timeout_ms = timeout_ms
        self._recheck = recheck
        self._counts: dict[str, _Count] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._degraded: set[str] = set()

    async def run(
        self,
        script: AsyncScript,
        keys: Sequence[KeyT],
        args: Sequence[EncodableT],
        *,
        wait_stalled: bool = False,
    ) -> Acked:
        """The script's reply, once a replica holds its writes or the wait gave up.

        `wait_stalled`: wait also on a primary whose replica let a `WAIT` time out since its
        last count (skipped otherwise, `NO_REPLICA`: see the module docstring).
        """
        if self.timeout_ms <= 0:
            return Acked(await script(keys=keys, args=args), Replication.OFF)
        if isinstance(self._client, RedisCluster):
            return await self._on_cluster(self._client, script, keys, args, wait_stalled)
        return await self._on_server(self._client, script, keys, args, wait_stalled)

    async def _on_server(
        self,
        client: Redis,
        script: AsyncScript,
        keys: Sequence[KeyT],
        args: Sequence[EncodableT],
        wait_stalled: bool,
    ) -> Acked:
        if not await self._has_replica(_SERVER, client.info, wait_stalled):
            return Acked(await script(keys=keys, args=args), Replication.NO_REPLICA)
        reply, acked = await self._pipelined(client, script, keys, args)
        if isinstance(reply, NoScriptError):
            script.sha = await client.script_load(script.script)
            reply, acked = await self._pipelined(client, script, keys, args)
        return self._settle(_SERVER, reply, acked)

    async def _pipelined(
        self, client: Redis, script: AsyncScript, keys: Sequence[KeyT], args: Sequence[EncodableT]
    ) -> list[Any]:
        # A pipeline is one connection, and redis-py retries it whole on that connection.
        async with client.pipeline(transaction=False) as pipe:
            _ = pipe.evalsha(script.sha, len(keys), *keys, *args)
            _ = pipe.execute_command("WAIT", 1, self.timeout_ms)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _on_cluster(
        self,
        client: RedisCluster,
        script: AsyncScript,
        keys: Sequence[KeyT],
        args: Sequence[EncodableT],
        wait_stalled: bool,
    ) -> Acked:
        _ = await client.initialize()  # a no-op once the client has its slot map
        first = keys[0]
        key = first.decode() if isinstance(first, bytes) else str(first)
        for _ in range(_ATTEMPTS):
            try:
                node = client.get_node_from_key(key)
                assert node is not None  # only a replica may be missing from the slot map
                replies = await self._pair_on(
                    client, node, script, keys, args, wait_stalled=wait_stalled
                )
            except RedisClusterException:  # the slot is not covered (yet): the client waits
                break
            except (RedisConnectionError, RedisTimeoutError):
                break  # the node is not to be had (dead, failing over): the client's own way
            if replies is None:
                return Acked(await script(keys=keys, args=args), Replication.NO_REPLICA)
            reply, acked = replies
            if isinstance(reply, NoScriptError):
                script.sha = await client.script_load(script.script)
            elif isinstance(reply, MovedError):
                await redispy.follow_moved(client, reply)
            elif isinstance(reply, _REROUTE):
                break
            else:
                return self._settle(node.name, reply, acked)
        return Acked(await script(keys=keys, args=args), Replication.UNCHECKED)

    async def _pair_on(
        self,
        client: RedisCluster,
        node: ClusterNode,
        script: AsyncScript,
        keys: Sequence[KeyT],
        args: Sequence[EncodableT],
        *,
        wait_stalled: bool,
    ) -> list[Any] | None:
        """EVALSHA and WAIT on one connection of `node`; None when it has no replica."""
        info = partial(client.info, target_nodes=node)
        if not await self._has_replica(node.name, info, wait_stalled):
            return None
        async with pipeline_place(client):  # a node connection, counted as a pipeline's
            evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
            return await redispy.send_together(node, evalsha, ("WAIT", 1, self.timeout_ms))

    def _settle(self, name: str, reply: Any, acked: Any) -> Acked:
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):  # written, but WAIT's answer was lost
            return Acked(reply, Replication.UNCHECKED)
        count = self._counts.get(name)
        if acked > 0:
            if count is not None:
                count.stalled = False
            self._recovered(name)
            return Acked(reply, Replication.CONFIRMED)
        # Not waited for again until the next count (unless `wait_stalled`): see the module
        # docstring. The replicas are still counted: a wait that insists finds them.
        replicas = count.replicas if count is not None else 1
        self._counts[name] = _Count(replicas, time.monotonic() + self._recheck, stalled=True)
        self._degrade(name, f"no replica acknowledged within {self.timeout_ms} ms")
        return Acked(reply, Replication.TIMED_OUT)

    async def _has_replica(
        self, name: str, info: Callable[..., Awaitable[Any]], wait_stalled: bool = False
    ) -> bool:
        """Whether primary `name` has a replica to wait for; `info` is its INFO command."""
        count = self._counts.get(name)
        if count is None or count.until <= time.monotonic():
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:  # one probe per primary at a time; the others read its answer
                count = self._counts.get(name)
                if count is None or count.until <= time.monotonic():
                    section = await info("replication")
                    replicas = int(section.get("connected_slaves", 0))
                    count = _Count(replicas, time.monotonic() + self._recheck)
                    self._counts[name] = count
                    if replicas == 0:  # a fact of the deployment (standalone), or a lost replica
                        self._degrade(name, "no replica connected", logging.INFO)
        return count.replicas > 0 and (wait_stalled or not count.stalled)

    def _degrade(self, name: str, why: str, level: int = logging.WARNING) -> None:
        if name not in self._degraded:
            self._degraded.add(name)
            logger.log(
                level,
                "writes to Redis at %s: %s; acknowledged without a replica's copy until one "
                "confirms again",
                name,
                why,
            )

    def _recovered(self, name: str) -> None:
        if name in self._degraded:
            self._degraded.discard(name)
            logger.info("writes to Redis at %s: a replica confirms them again", name)
