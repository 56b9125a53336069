"""Faults injected into the running compose stack, each with what must hold afterwards.

- an invalidator replica killed while events flow: the survivor claims its pending entries;
- the data Redis restarted: sessions survive (AOF), every service reconnects by itself;
- the cache Redis filled past maxmemory: it evicts, nobody sees an error;
- an api replica killed under load through nginx: no acknowledged write lost, errors only
  for requests that were in flight on it;
- `down` then `up` without `-v`: users, sessions and the stream are still there.

Every load loop is bounded in count and in time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import httpx

from devtools.compose_flows import PASSWORD, FlowError, Probe, check, drained, eventually
from devtools.compose_stack import PROJECT
from shared.events import UserUpdated, UserUpdatedPayload
from shared.keys import INVALIDATOR_GROUP, SESSION_GROUP

SENTINEL: Final = "compose-test: must be purged"


async def invalidator_killed(p: Probe) -> None:
    victim = p.stack.containers("invalidator")[0]
    prefix = victim["Config"]["Hostname"] + "-"  # consumer names are <hostname>-<id>
    ids = [uuid.uuid4() for _ in range(3000)]
    dead_before = await p.data.xlen(p.keys.dead_letters())
    done = asyncio.Event()
    producer = asyncio.create_task(_publish(p, ids, done))
    try:
        held = await _kill_holding_entries(p, victim["Id"], prefix)
    finally:
        await asyncio.sleep(1)  # events keep flowing after the kill, to the survivor only
        done.set()
        published = await producer
    started = time.monotonic()
    await eventually(functools.partial(drained, p, INVALIDATOR_GROUP), "XPENDING 0", within=90)
    await eventually(lambda: p.purged(ids[:published]), "every purge done", within=30)
    check(await p.data.xlen(p.keys.dead_letters()) == dead_before, "entries were dead-lettered")
    p.log(
        f"killed {victim['Name'][1:]} holding {held} pending entries; {published} events, "
        f"XPENDING 0 and every key purged {time.monotonic() - started:.1f} s after the flow ended"
    )
    p.stack.compose("up", "-d", "--wait", "invalidator")


async def _publish(p: Probe, ids: list[uuid.UUID], done: asyncio.Event) -> int:
    """For 10 users every 50 ms, until told to stop (or `ids` run out): a cached value that
    must go, then its user.updated event."""
    sent = 0
    while sent < len(ids) and not done.is_set():
        chunk = ids[sent : sent + 10]
        await p.cache.mset({p.keys.user(uid): SENTINEL for uid in chunk})
        pipe = p.data.pipeline(transaction=False)
        for uid in chunk:
            event = UserUpdated(source="compose-test", payload=UserUpdatedPayload(user_id=uid))
            pipe.xadd(p.keys.user_events(), event.fields())  # type: ignore[arg-type,unused-awaitable]
        await pipe.execute()
        sent += len(chunk)
        await asyncio.sleep(0.05)
    return sent


async def _kill_holding_entries(p: Probe, container: str, prefix: str) -> int:
    """Freeze the replica until it is caught holding unacked entries, then SIGKILL it."""
    for _ in range(150):
        await asyncio.to_thread(p.stack.docker, "pause", container)
        held = await _held_by(p, prefix)
        if held:
            await asyncio.to_thread(p.stack.docker, "kill", container)
            return held
        await asyncio.to_thread(p.stack.docker, "unpause", container)
        await asyncio.sleep(0.01)
    raise FlowError("never caught the invalidator replica holding a pending entry")


async def _held_by(p: Probe, prefix: str) -> int:
    summary: dict[str, Any] = await p.data.xpending(p.keys.user_events(), INVALIDATOR_GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"].startswith(prefix))


async def data_redis_restarted(p: Probe) -> None:
    """SIGKILL, then start: no shutdown save, so the session comes back from the AOF alone."""
    check((await p.data.config_get("appendonly"))["appendonly"] == "yes", "AOF is off")
    account = await p.login(await p.register("restart"))
    length = await p.data.xlen(p.keys.user_events())
    await asyncio.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
    (redis,) = p.stack.containers("redis")
    started = time.monotonic()
    await asyncio.to_thread(p.stack.docker, "kill", redis["Id"])
    p.stack.compose("up", "-d", "--wait", "redis")
    await p.reconnect()
    await eventually(lambda: _me_ok(p, account), "the session survives the restart", within=60)
    await eventually(lambda: _health_ok(p), "api /health back to ok", within=60)
    renamed = await p.http.patch(
        f"/v1/users/{account.id}", json={"name": "after"}, headers=account.cookie
    )
    check(renamed.status_code == 200, f"PATCH after the restart: {renamed.status_code}")
    await eventually(lambda: _grew(p, length), "the outbox relay publishes again", within=30)
    uid = uuid.uuid4()
    await p.cache.set(p.keys.user(uid), SENTINEL)
    event = UserUpdated(source="compose-test", payload=UserUpdatedPayload(user_id=uid))
    await p.data.xadd(p.keys.user_events(), event.fields())  # type: ignore[arg-type]  # bytes values
    await eventually(lambda: p.purged([uid]), "the invalidators consume again", within=60)
    for group in (INVALIDATOR_GROUP, SESSION_GROUP):
        await eventually(functools.partial(drained, p, group), f"{group} drained", within=60)
    took = time.monotonic() - started
    p.log(f"data Redis SIGKILLed and started: session kept; every service back in {took:.1f} s")


async def _me_ok(p: Probe, account: Any) -> bool:
    return await p.me_status(account) == 200


async def _health_ok(p: Probe) -> bool:
    answer = await p.http.get("/health")
    return answer.status_code == 200 and answer.json()["status"] == "ok"


async def _grew(p: Probe, length: int) -> bool:
    return int(await p.data.xlen(p.keys.user_events())) > length


async def cache_filled(p: Probe) -> None:
    """maxmemory lowered to 16 MB for the step, 40 MB written: LRU evicts, no write fails."""
    account = await p.register("cachefill")
    limit = (await p.cache.config_get("maxmemory"))["maxmemory"]
    before = int((await p.cache.info("stats"))["evicted_keys"])
    await p.cache.config_set("maxmemory", "16mb")
    value = "x" * 65536
    try:
        for start in range(0, 640, 32):
            pipe = p.cache.pipeline(transaction=False)
            for n in range(start, start + 32):
                pipe.set(f"compose-test:fill:{n}", value, ex=600)  # type: ignore[unused-awaitable]
            await pipe.execute()  # an OOM error would raise here
            reads = await asyncio.gather(*[p.http.get(f"/v1/users/{account.id}") for _ in range(4)])
            check(all(r.status_code == 200 for r in reads), "reads failed while the cache evicts")
        evicted = int((await p.cache.info("stats"))["evicted_keys"]) - before
        check(evicted > 0, "nothing was evicted")
        check(await _health_ok(p), "api /health not ok while the cache evicts")
    finally:
        await p.cache.config_set("maxmemory", str(limit))
        await p.cache.delete(*[f"compose-test:fill:{n}" for n in range(640)])
    p.log(f"cache Redis at 16 MB took 40 MB: {evicted} keys evicted, every write and read ok")


@dataclass
class Call:
    method: str
    started: float
    status: int  # 0: no answer (connection error)
    user_id: str | None = None


async def api_replica_killed(p: Probe) -> None:
    seed = await p.register("seed")
    victim = p.stack.containers("api")[0]
    calls: list[Call] = []
    stop = time.monotonic() + 8  # the load lasts 8 s at most, 2 000 calls at most
    workers = 8
    load = [asyncio.create_task(_worker(p, seed.id, calls, stop)) for _ in range(workers)]
    await asyncio.sleep(2)
    await asyncio.to_thread(p.stack.docker, "kill", victim["Id"])
    killed = time.monotonic()
    await asyncio.gather(*load)
    acked = [c.user_id for c in calls if c.status == 201 and c.user_id]
    failed = [c for c in calls if c.status not in {200, 201}]
    check(not [c for c in failed if c.method == "GET"], f"GETs failed: {failed}")
    check(all(c.started < killed for c in failed), f"failures after the kill: {failed}")
    check(len(failed) <= workers, f"{len(failed)} failures for {workers} requests in flight")
    lost = await _missing(p, acked)
    check(not lost, f"acknowledged registrations lost: {lost}")
    p.log(
        f"killed {victim['Name'][1:]} under load: {len(calls)} calls, {len(acked)} acknowledged "
        f"writes all present, {len(failed)} failed (in flight on it: {[c.status for c in failed]})"
    )
    p.stack.compose("up", "-d", "--wait", "api")
    await _both_replicas_serve(p, seed.id)


async def _both_replicas_serve(p: Probe, user_id: str) -> None:
    """After the restart nginx sends traffic to the restarted replica again (its access log
    names the upstream of every request) — once `fail_timeout` (5 s) since its last failure
    has passed."""
    since = p.stack.now()
    edge = f"{PROJECT}_edge"
    addresses = [
        c["NetworkSettings"]["Networks"][edge]["IPAddress"] for c in p.stack.containers("api")
    ]
    served: dict[str, int] = {}

    async def spread() -> bool:
        for _ in range(10):
            answer = await p.http.get(f"/v1/users/{user_id}")
            check(answer.status_code == 200, f"GET after the restart: {answer.status_code}")
        log = p.stack.proxy_log(since)
        served.update({a: log.count(f"upstream={a}:") for a in addresses})
        return all(served.values())

    took = await eventually(spread, "both replicas serve again", within=30, every=0.5)
    p.log(f"nginx sends requests to the restarted replica again after {took:.1f} s: {served}")


async def _worker(p: Probe, seed: str, calls: list[Call], stop: float) -> None:
    while time.monotonic() < stop and len(calls) < 2000:
        started = time.monotonic()
        email = f"load-{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": email, "name": "load", "password": PASSWORD}
        for method, request in (
            ("POST", p.http.post("/v1/auth/register", json=body)),
            ("GET", p.http.get(f"/v1/users/{seed}")),
        ):
            try:
                answer = await request
            except httpx.HTTPError:
                calls.append(Call(method, started, 0))
                continue
            user = answer.json().get("id") if answer.status_code == 201 else None
            calls.append(Call(method, started, answer.status_code, user))
            started = time.monotonic()


async def _missing(p: Probe, ids: list[str]) -> list[str]:
    missing = []
    for start in range(0, len(ids), 16):
        chunk = ids[start : start + 16]
        answers = await asyncio.gather(*[p.http.get(f"/v1/users/{i}") for i in chunk])
        missing += [i for i, a in zip(chunk, answers, strict=True) if a.status_code != 200]
    return missing


async def down_then_up(p: Probe) -> None:
    account = await p.login(await p.register("persist"))
    total = (await p.http.get("/v1/users", params={"limit": 1})).json()["total"]
    length = await p.data.xlen(p.keys.user_events())
    p.stack.compose("down")
    p.stack.compose("up", "-d", "--wait")
    await p.reconnect()
    check(await p.me_status(account) == 200, "the session did not survive down/up")
    check((await p.http.get(f"/v1/users/{account.id}")).status_code == 200, "the user is gone")
    after = (await p.http.get("/v1/users", params={"limit": 1})).json()["total"]
    check(after >= total, f"users: {total} before, {after} after")
    check(await p.data.xlen(p.keys.user_events()) >= length, "the stream lost entries")
    groups = {g["name"] for g in await p.data.xinfo_groups(p.keys.user_events())}
    check({INVALIDATOR_GROUP, SESSION_GROUP} <= groups, f"groups after down/up: {groups}")
    p.log(f"down/up without -v: {after} users, session, {length}+ stream entries and groups kept")
