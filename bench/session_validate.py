"""Session validation: the store's lookup vs a raw redis-py GET of a same-sized value.

`RedisSessionStore.get` is what `GET /v1/sessions/{id}` does behind HTTP: check the id's
shape, SHA-256 it, one `GET`, parse the record (and its `data`). The baseline is a raw
`GET` of a value of the same byte size, same client, same server, alternating in short
chunks so noise from other work lands on both. Target: store >= 0.7x raw.

The HTTP hop is measured apart: the same lookup over HTTP (keep-alive httpx client, service
token on) against `uvicorn session_service.main:create_app --factory` as a process.

    .venv/bin/python bench/session_validate.py [--ops 20000] [--chunk 500] [--http-ops 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.launcher import Launcher
from devtools.redis_server import RedisServer
from session_service.adapters.store import RedisSessionStore
from shared.keys import Keys
from shared.sessionids import session_hash as hash_session_id

PREFIX = "bench"
DATA = {"role": "member", "locale": "en-GB", "mfa": True}
TOKEN = "bench-token"


async def timed(call: Callable[[], Awaitable[Any]], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        await call()
    return time.perf_counter() - started


async def store_vs_raw(client: Redis, ops: int, chunk: int) -> tuple[str, float, float, int]:
    keys = Keys(PREFIX)
    store = RedisSessionStore(
        client, keys, idle_ms=3_600_000, absolute_ms=86_400_000, max_per_user=10
    )
    created = await store.create(str(uuid.uuid4()), DATA)
    sid = created.issued.session_id
    record = await client.get(keys.session(created.issued.record.user_id, hash_session_id(sid)))
    assert record is not None
    twin = f"{PREFIX}:bench:twin"
    await client.set(twin, b"x" * len(record))  # same size as the session record

    async def ours() -> Any:
        return await store.get(sid)

    async def raw() -> Any:
        return await client.get(twin)

    await timed(raw, chunk)  # warm the connection and both code paths
    await timed(ours, chunk)
    spent = {"ours": 0.0, "raw": 0.0}
    for _ in range(ops // chunk):
        spent["raw"] += await timed(raw, chunk)
        spent["ours"] += await timed(ours, chunk)
    done = (ops // chunk) * chunk
    return sid, done / spent["ours"], done / spent["raw"], len(record)


async def start_service(launcher: Launcher, url: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": url,
        "KEY_PREFIX": PREFIX,
        "SERVICE_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "APP_ENV": "test",
        "STREAM_STATE_DIR": tempfile.mkdtemp(prefix="bench-state-"),
    }
    service = launcher.start_service(
        "session_service.main:create_app", env, options=("--no-access-log",), wait=False
    )
    await service.wait_healthy_async()
    return service.url


async def over_http(base: str, sid: str, ops: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=5) as http:

        async def call() -> Any:
            response = await http.get(f"/v1/sessions/{sid}")
            assert response.status_code == 200
            return response

        await timed(call, min(ops, 200))
        return ops / await timed(call, ops)


async def run(url: str, ops: int, chunk: int, http_ops: int) -> None:
    client = Redis.from_url(url)
    try:
        sid, ours, raw, size = await store_vs_raw(client, ops, chunk)
    finally:
        await client.aclose()
    with Launcher(Path(tempfile.mkdtemp(prefix="bench-session-"))) as launcher:
        http = await over_http(await start_service(launcher, url), sid, http_ops)
    print(f"session record size                  : {size} bytes")
    print(f"raw redis-py GET, same-sized value   : {raw:>8.0f} ops/s  {1e6 / raw:>7.1f} us/op")
    print(f"RedisSessionStore.get (the lookup)   : {ours:>8.0f} ops/s  {1e6 / ours:>7.1f} us/op")
    print(f"ratio store / raw                    : {ours / raw:.2f}x (target >= 0.7x)")
    record(
        "session_validate",
        figure="RedisSessionStore.get, sequential",
        value=ours,
        unit="ops/s",
        baseline=f"raw redis-py GET of a {size}-byte value {raw:.0f} ops/s",
        ratio=ours / raw,
        target=">= 0.7",
    )
    print(f"GET /v1/sessions/{{id}} over HTTP     : {http:>8.0f} ops/s  {1e6 / http:>7.1f} us/op")
    print(
        f"HTTP hop cost (per call)             : {1e6 / http - 1e6 / ours:>7.1f} us "
        f"({http / ours:.2f}x of the store call)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--http-ops", type=int, default=3_000)
    args = parser.parse_args()
    with RedisServer() as server:
        asyncio.run(run(server.url, args.ops, args.chunk, args.http_ops))


if __name__ == "__main__":
    main()
