"""Auto-pipelining on a Redis Cluster: one link per primary, each command routed by its slot.

`ClusterAutoPipeline(cluster).execute("GET", key)` is `AutoPipeline.execute` for a
`RedisCluster` (`shared.autopipeline.auto_pipeline` picks it): the command goes on the
`shared.pipelink.Link` to the primary that serves its key's slot, where it shares round
trips with every other command for that primary. The slot map is the cluster client's own
(`redispy.slot_primary`), so the two never disagree about the topology, and redis-py's
routing (about 60 µs of client CPU per command, docs/scaling.md) stays off the hot path.

`execute_batch(commands)` sends many commands at once: all of one primary's in one write
on its link, every primary in parallel, replies in order with errors in place (the
invalidator's purges, decision 0035).

Routing key, derived from the command (never guessed):
- `GET`, `SET`, `INCR` and the other single-key commands of `SINGLE_KEY_COMMANDS`: the first
  argument;
- `EVAL` / `EVALSHA` with `numkeys` ≥ 1: the first key; every key must share its slot, else
  `RedisClusterException` before anything is sent (redis-py's rule);
- `DEL`, `UNLINK`, `EXISTS` (`EVERY_ARGUMENT_A_KEY`): their slot; every key must share it,
  as a script's (redis-py's `delete()` splits such a command per slot, its `execute_command`
  does not);
- any other command, or a script without keys: no link; it goes through the cluster
  client's own `execute_command`, which routes it (slowly, but right).

Failures, each handled where it is cheapest:
- `MOVED` (the slot has a new owner: a reshard or a failover seen first by this command):
  the slot map is patched as redis-py patches it and the command is sent once more, on the
  new owner's link;
- `ASK`, `TRYAGAIN`, `CLUSTERDOWN` (a live node answered: a slot migrating, a failover in
  progress), a second `MOVED`, and a lost connection or a read timeout: the command falls
  back to the cluster client, which follows `ASK`, waits out `TRYAGAIN`, re-reads the slot
  map and retries under its policy. A link whose connection failed is closed; the next
  command for its node connects again, and a link to a node that no longer serves slots is
  dropped when the next link is made. A live node's link is kept on `ASK`, `TRYAGAIN` and
  `CLUSTERDOWN`: closing it would fail the other commands in flight on it.

Replies are raw, as `AutoPipeline`'s, except on the fallback path, where redis-py's response
callback of a command applies (`SET` answers `True` there, not `b"OK"`); `GET`, `EVAL` and
`EVALSHA` have none. Each link's connection is one of its node's own
(`redispy.node_connection`), so `RedisCluster.aclose()` closes it with the others.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared import redispy
from shared.pipelink import MAX_BATCH, Link

_key_slot: Final = redispy.key_slot
_slot_primary: Final = redispy.slot_primary

# Commands with exactly one key, which is their first argument.
SINGLE_KEY_COMMANDS: Final = frozenset(
    {"GET", "SET", "GETDEL", "GETEX", "INCR", "INCRBY", "DECR", "DECRBY", "EXPIRE", "PEXPIRE",
     "TTL", "PTTL", "HGET", "HSET", "HINCRBY"}
)  # fmt: skip
# Commands whose every argument is a key.
EVERY_ARGUMENT_A_KEY: Final = frozenset({"DEL", "UNLINK", "EXISTS"})
_FIRST_KEY: Final = 1
_SCRIPT: Final = 2
_KEYS: Final = 3
# Every spelling a caller may send (the limiter sends bytes): one dict lookup per command.
_ROUTES: Final[dict[EncodableT, int]] = {
    spelling: route
    for names, route in (
        (SINGLE_KEY_COMMANDS, _FIRST_KEY),
        ({"EVAL", "EVALSHA"}, _SCRIPT),
        (EVERY_ARGUMENT_A_KEY, _KEYS),
    )
    for name in names
    for spelling in (name, name.lower(), name.encode(), name.lower().encode())
}
# A live node answered: the command goes to the cluster client, the link stays.
_REDIRECTED: Final = (AskError, TryAgainError, ClusterDownError)
# The link failed: it is closed already; the command goes to the cluster client.
_LOST: Final = (RedisConnectionError, RedisTimeoutError)


class ClusterAutoPipeline:
    def __init__(self, cluster: RedisCluster, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        # Weak, as AutoPipeline's: the registry must not keep the client alive.
        self._cluster = weakref.ref(cluster)
        self._encode: Callable[[Any], bytes] = cluster.get_encoder().encode
        # The client's slot map itself (not a copy): redis-py and this router share it.
        self._slot_map = redispy.slot_map(cluster)
        self._links: dict[str, _NodeLink] = {}  # by node name ("host:port")
        self.max_batch = max_batch
        self.batches = 0  # round trips made, over every link (for tests and benchmarks)
        self.commands = 0  # commands sent on links
        self.largest_batch = 0
        self.fallbacks = 0  # commands sent through the cluster client instead
        self.redirects = 0  # MOVED replies followed

    @property
    def cluster(self) -> RedisCluster:
        cluster = self._cluster()
        if cluster is None:
            raise RuntimeError("the cluster client of this auto-pipeline is gone")
        return cluster

    @property
    def links(self) -> dict[str, bool]:
        """Each node a link was made to, and whether that link is open now."""
        return {name: held.is_open for name, held in self._links.items()}

    async def execute(self, *args: EncodableT) -> Any:
        """Send one command on its slot's primary with the others queued meanwhile; its
        raw reply."""
        # Flattened, as this is every request's path: a GET costs ~0.6 µs of client CPU
        # more than on one server's AutoPipeline (route, CRC16, map, link).
        slot: int | None
        if _ROUTES.get(args[0]) == _FIRST_KEY and len(args) > 1:
            key = args[1]
            slot = _key_slot(key if type(key) is bytes else self._encode(key))
        else:
            slot = self.slot_of(args)
        node = None if slot is None else _slot_primary(self._slot_map, slot)
        if slot is None or node is None:
            # No key to route by, or no slot map yet (the cluster client reads it now).
            return await self._fallback(args)
        held = self._links.get(node.name)
        try:
            if held is not None and held.node is node:
                link = held.link
                if link is not None and link.open:
                    return await link.submit(args)
                return await held.submit(args)
            return await (await self._link_to(node)).submit(args)
        except MovedError as moved:
            return await self._moved(moved, slot, args)
        except (*_REDIRECTED, *_LOST):
            return await self._fallback(args)

    async def execute_batch(self, commands: Sequence[tuple[EncodableT, ...]]) -> list[Any]:
        """Send every command on its slot's primary: all of one primary's commands in one
        write on its link, every primary at once. The raw replies in order, each error in
        its command's place as the exception (as `pipeline.execute(raise_on_error=False)`).

        No order holds between primaries: a caller that needs one command after others
        awaits them first. Each command is on its own for failures, as with `execute`: a
        `MOVED` is followed once on the new owner's link; `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, a
        second `MOVED` or a lost link sends it through the cluster client; a command with
        no key to route by (or before the slot map is read) goes there at once; a script or
        a `DEL` whose keys span slots gets `RedisClusterException` and is not sent."""
        replies: list[Any] = [None] * len(commands)
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        alone: list[int] = []
        for position, args in enumerate(commands):
            try:
                slot = self.slot_of(args)
            except RedisClusterException as exc:
                replies[position] = exc
                continue
            node = None if slot is None else _slot_primary(self._slot_map, slot)
            if node is None:
                alone.append(position)
            else:
                by_node.setdefault(node.name, (node, []))[1].append(position)
        _ = await asyncio.gather(
            *(self._node_batch(node, at, commands, replies) for node, at in by_node.values()),
            *(self._settle(position, commands[position], None, replies) for position in alone),
        )
        return replies

    async def _node_batch(
        self,
        node: ClusterNode,
        positions: list[int],
        commands: Sequence[tuple[EncodableT, ...]],
        replies: list[Any],
    ) -> None:
        """One primary's share of `execute_batch`: one write, then each failure on its own."""
        batch = [commands[position] for position in positions]
        outcomes: list[Any]
        try:
            futures = await (await self._link_to(node)).submit_many(batch)
        except _LOST as exc:  # the link did not open: every command goes the slow way
            outcomes = [exc] * len(batch)
        else:
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        again: list[Awaitable[None]] = []
        for position, args, outcome in zip(positions, batch, outcomes, strict=True):
            if isinstance(outcome, (MovedError, *_REDIRECTED, *_LOST)):
                again.append(self._settle(position, args, outcome, replies))
            else:
                replies[position] = outcome
        if again:
            _ = await asyncio.gather(*again)

    async def _settle(
        self,
        position: int,
        args: tuple[EncodableT, ...],
        failure: BaseException | None,
        replies: list[Any],
    ) -> None:
        """A command the batch could not answer: after its `MOVED`, or the cluster client's."""
        try:
            if isinstance(failure, MovedError) and (slot := self.slot_of(args)) is not None:
                replies[position] = await self._moved(failure, slot, args)
            else:
                replies[position] = await self._fallback(args)
        except Exception as exc:  # noqa: BLE001 - each command's error is its own reply
            replies[position] = exc

    def slot_of(self, args: tuple[EncodableT, ...]) -> int | None:
        """The slot a command routes by; None when it has no routing key we can derive."""
        route = _ROUTES.get(args[0]) if len(args) > 1 else None
        if route is None:
            return None
        if route == _FIRST_KEY:
            return self._slot(args[1])
        if route == _KEYS:
            slots = {self._slot(key) for key in args[1:]}
            if len(slots) != 1:
                raise RedisClusterException(f"{args[0]!r} - all keys must map to the same key slot")
            return slots.pop()
        try:
            numkeys = int(args[2])
        except (IndexError, TypeError, ValueError):
            return None  # malformed: the server says how
        if numkeys < 1 or len(args) < 3 + numkeys:
            return None  # no key (any primary may run it), or malformed
        slots = {self._slot(key) for key in args[3 : 3 + numkeys]}
        if len(slots) != 1:
            raise RedisClusterException(f"{args[0]!r} - all keys must map to the same key slot")
        return slots.pop()

    def _slot(self, key: EncodableT) -> int:
        return _key_slot(key if type(key) is bytes else self._encode(key))

    async def _moved(self, moved: MovedError, slot: int, args: tuple[EncodableT, ...]) -> Any:
        self.redirects += 1
        try:
            await redispy.follow_moved(self.cluster, moved)
            node = _slot_primary(self._slot_map, slot)
        except (KeyError, RedisClusterException):  # the map was reset meanwhile
            node = None
        if node is None:
            return await self._fallback(args)
        try:
            return await (await self._link_to(node)).submit(args)
        except (MovedError, *_REDIRECTED, *_LOST):
            return await self._fallback(args)

    async def _fallback(self, args: tuple[EncodableT, ...]) -> Any:
        """The command through the cluster client (its routing, redirects and retries)."""
        self.fallbacks += 1
        name = args[0]
        # redis-py routes by the command's name as text (the limiter sends it as bytes).
        command = name.decode() if isinstance(name, bytes) else str(name)
        try:
            return await self.cluster.execute_command(command.upper(), *args[1:])
        except (AttributeError, RuntimeError) as exc:
            # redis-py 8.1's cluster client closes every connection on CLUSTERDOWN (and on
            # every fifth MOVED) under the commands still using them, which then fail with
            # AttributeError on a writer that is gone (uvloop: RuntimeError on a closed
            # transport): seen in failovers. It is a lost connection, and callers (retries,
            # breakers) must see it as one.
            raise RedisConnectionError(f"connection closed under the command: {exc}") from exc

    async def _link_to(self, node: ClusterNode) -> _NodeLink:
        """The link to `node`, made if it has none; a new one drops the links to nodes
        that are no primary now (failed over, demoted, forgotten)."""
        held = self._links.get(node.name)
        if held is not None and held.node is node:
            return held
        primaries = {primary.name: primary for primary in self.cluster.get_primaries()}
        stale = [old for name, old in self._links.items() if primaries.get(name) is not old.node]
        for old in stale:
            del self._links[old.node.name]
        held = self._links[node.name] = _NodeLink(node, self)
        for old in stale:
            await old.drop()
        return held


class _NodeLink:
    """The link to one primary, on a connection of the node's own, (re)connected on demand:
    every caller that arrives while it connects waits for the same connect, in order."""

    def __init__(self, node: ClusterNode, counters: ClusterAutoPipeline) -> None:
        self.node = node
        self._counters = counters
        self._conn = redispy.node_connection(node)
        self.link: Link | None = None
        self._opening: asyncio.Future[Link] | None = None

    @property
    def is_open(self) -> bool:
        return self.link is not None and self.link.open

    def submit(self, args: tuple[EncodableT, ...]) -> Awaitable[Any]:
        link = self.link
        if link is not None and link.open:
            return link.submit(args)
        return self._submit_when_open(args)

    async def submit_many(self, batch: list[tuple[EncodableT, ...]]) -> list[asyncio.Future[Any]]:
        """`Link.submit_many` on this node's link, opened first if it is not open."""
        link = self.link
        if link is None or not link.open:
            link = await self._open_link()
        return link.submit_many(batch)

    async def _submit_when_open(self, args: tuple[EncodableT, ...]) -> Any:
        link = await self._open_link()
        return await link.submit(args)

    async def _open_link(self) -> Link:
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open())
            opening.add_done_callback(self._opened)
        return await asyncio.shield(opening)

    def _opened(self, opening: asyncio.Future[Link]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self.link = opening.result()

    async def _open(self) -> Link:
        conn = self._conn
        if redispy.stream_writer(conn) is not None:  # a failed link's socket: start afresh
            await conn.disconnect(nowait=True)
        # One attempt: on failure the command falls back to the cluster client's retries.
        await redispy.connect_once(conn)
        return Link.attach(self._counters, conn)

    async def drop(self) -> None:
        """Close this link for good (its node is no primary now)."""
        if self.link is not None and self.link.open:
            self.link.close(RedisConnectionError("the node is no primary now"))
        await self._conn.disconnect(nowait=True)
        redispy.forget_node_connection(self.node, self._conn)
