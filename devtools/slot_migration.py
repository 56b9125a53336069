"""Moving one hash slot between the primaries of a local cluster, as `redis-cli --cluster
reshard` does it, for tests of `ASK` and `MOVED` on real servers.

`begin` leaves the slot half moved (the source answers `ASK` for the keys it let go);
`finish` makes the target its owner on every primary (the others answer `MOVED`);
`give_back` returns it to the source, finishing a move a failure left half done.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from devtools.redis_server import RedisServer


async def call(port: int, *args: object) -> Any:
    """One command to the node on `port` (replies decoded)."""
    async with Redis(port=port, decode_responses=True) as node:
        return await node.execute_command(*args)  # type: ignore[no-untyped-call]  # unannotated


async def begin(slot: int, source: RedisServer, target: RedisServer) -> None:
    """Mark `slot` migrating from `source` to `target` and move its keys: `source` now
    answers ASK for them."""
    source_id = await call(source.port, "CLUSTER", "MYID")
    target_id = await call(target.port, "CLUSTER", "MYID")
    await call(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    await call(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = await call(source.port, "CLUSTER", "GETKEYSINSLOT", slot, 100)
    if keys:
        await call(source.port, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


async def finish(slot: int, target: RedisServer, primaries: list[RedisServer]) -> None:
    """`target` owns `slot` now, on every primary: the others answer MOVED."""
    target_id = await call(target.port, "CLUSTER", "MYID")
    for primary in [target, *(p for p in primaries if p is not target)]:
        await call(primary.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)


async def give_back(
    slot: int,
    source: RedisServer,
    target: RedisServer,
    primaries: list[RedisServer],
    *,
    finished: bool,
) -> None:
    """`slot` served by `source` again, its keys with it: the migration to `target` is
    finished first if a failure left it half done."""
    if not finished:
        await begin(slot, source, target)  # any key still on the source
        await finish(slot, target, primaries)
    await begin(slot, target, source)
    await finish(slot, source, primaries)
