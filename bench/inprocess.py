"""The api with tracing off and on in one process, taking turns: CPU per request of each.

A child of `api_read.py` (`python bench/inprocess.py ...`). Two apps built by
`api.main:create_app` from the same settings, the second with the variables of a deployment
with a 1 % sampler (OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG 0.01, OTLP/HTTP to
`--endpoint`), are opened in one process and called directly as ASGI apps: no HTTP server,
so uvicorn's share — the same for both — is left out and the ratio is the stricter one. They
take turns of TURN requests for the same cached user, every other round in reverse order.
Each turn charges its main-thread CPU to its app; every other thread's CPU (the span
exporter's encoding and sending, the final flush included) is charged to the traced app.
Both sides meet the same moments of the machine, whose speed drifts by tens of percent
between the rounds and processes of a wrk run.

Prints `INPROCESS [off_cpu_s, on_cpu_s, other_threads_cpu_s, off_requests, on_requests]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping, MutableMapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TURN = 500  # requests per turn
TRACED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
Message = dict[str, Any]


def _scope(method: str, path: str, state: Mapping[str, Any], body: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),  # what a server hands each request: a copy of the lifespan's
    }


async def _call(
    app: Any, state: Mapping[str, Any], method: str, path: str, body: bytes = b""
) -> Message:
    """One request; its status, headers and body."""
    answer: Message = {"body": b""}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        else:
            answer["body"] += message.get("body", b"")

    await app(_scope(method, path, state, body), receive, send)
    return answer


async def _nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _drop(_: MutableMapping[str, Any]) -> None:
    return None


async def run(endpoint: str, rounds: int) -> list[float]:
    from api.main import create_app  # after the environment is set

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", *TRACED):
        os.environ.pop(name, None)
    apps = {"off": create_app()}
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **TRACED})
    apps["on"] = create_app()
    async with AsyncExitStack() as stack:
        states: dict[str, Mapping[str, Any]] = {}
        for side, app in apps.items():
            state = await stack.enter_async_context(app.router.lifespan_context(app))
            states[side] = state or {}
        body = {
            "email": f"{uuid.uuid4().hex}@example.com",
            "name": "Bench",
            "password": "bench-pw-1",
        }
        created = await _call(apps["off"], states["off"], "POST", "/v1/users", orjson.dumps(body))
        path = f"/v1/users/{orjson.loads(created['body'])['id']}"
        for side, app in apps.items():  # both caches hold the user; the near cache too
            for _ in range(20):
                answer = await _call(app, states[side], "GET", path)
            assert answer["status"] == 200, answer
            assert answer["headers"][b"x-cache"] == b"HIT", answer
        cpu = dict.fromkeys(apps, 0.0)
        process, thread = time.process_time(), time.thread_time()
        for n in range(rounds):
            for side in ("off", "on") if n % 2 == 0 else ("on", "off"):
                app, state = apps[side], states[side]
                mark = time.thread_time()
                for _ in range(TURN):
                    await app(_scope("GET", path, state), _nothing, _drop)
                cpu[side] += time.thread_time() - mark
        done = rounds * TURN
    # The lifespans closed: the traced app's provider flushed what it still held.
    others = (time.process_time() - process) - (time.thread_time() - thread)
    return [cpu["off"], cpu["on"], others, done, done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the OTLP receiver's URL")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.endpoint, args.rounds))
    print("INPROCESS " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
