"""Where a write's time goes, hop by hop, read from its trace: commit → relay → stream → purge.

In one run: a private redis-server, a fresh PostgreSQL database on 127.0.0.1:5432 (else
SQLite), the api, the session service and the invalidator as `uvicorn` processes with tracing
on (every trace sampled), exporting OTLP/HTTP to a receiver in this process. It signs a user
in and makes `--writes` renames one after the other (`PATCH /v1/users/{id}`, each carrying a
`traceparent` of its own, `--pause` apart), waits for each trace to hold the invalidator's
purge, and prints the median and p90 of each hop, from span timestamps:

  request           the api's SERVER span (the whole PATCH, as the client waited for it)
  commit            `user write`: the transaction, its SQL statements and the COMMIT
  relay wake-up     commit done → the relay's `publish` span starts (OUTBOX_LINGER's 5 ms
                    included: the relay waits that long for more commits)
  xadd → handling   the relay's XADD sent → the invalidator's `process` span starts (the
                    XADD's trip, the consumer's blocked XREADGROUP waking, the parse)
  handling → purged the `process` span's start → its `purge` done
  visible           commit done → the invalidator's purge done (the sum of the three hops
                    above): the write reaches every reader through the event. The writer's
                    own write-through, in the request, comes sooner: `writer update`
  relay publish     `publish`: the XADD round trip, reply included
  invalidator       `process`: parse, purge, ack, for one entry
  purge             `purge`: the pipeline of DELs, INCR and the notices (one round trip)
  writer update     the api's own `write-through` (the new value, stored unless a newer one
                    is there) + `announce` after the commit (read-your-writes)
  xadd → session    the relay's XADD sent → the session group's `process` span starts

Every process shares this machine's 2 cores: the figures are a shape, not a capacity.

    .venv/bin/python bench/write_hops.py [--writes 40] [--pause 0.05]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_degraded import database
from bench.api_read import api_env, start_server
from bench.results import record
from devtools.launcher import Launcher
from devtools.otlp import OtlpReceiver, ReceivedSpan
from devtools.redis_server import RedisServer

VENV_BIN = Path(sys.executable).parent
WITHIN = 30.0  # seconds for every trace to arrive whole
TOKEN = secrets.token_hex(24)


def stack_env(redis_url: str, database_url: str, endpoint: str, state: Path) -> dict[str, str]:
    return {
        **api_env(redis_url, database_url, near=False),
        "SERVICE_TOKEN": TOKEN,
        "RATE_LIMIT_AUTH": "1000/minute",
        "STREAM_STATE_DIR": str(state),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def start_stack(stack: ExitStack, env: dict[str, str]) -> str:
    """Session service, api and invalidator; the api's URL."""
    migrate = [str(VENV_BIN / "python"), "-m", "api.migrate"]
    subprocess.run(migrate, env=env, check=True, capture_output=True)
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-hops-"))))
    session_url = start_server(launcher, "session_service.main:create_app", env)
    env = {**env, "SESSION_SERVICE_URL": session_url}
    api_url = start_server(launcher, "api.main:create_app", env)
    start_server(launcher, "invalidator.main:create_app", env)
    return api_url


def write(api_url: str, writes: int, pause: float) -> list[str]:
    """Sign a user in, rename it `writes` times; the trace id of each rename."""
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Hops", "password": "hops-pw-1"}
    trace_ids = []
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        user = http.post("/v1/auth/register", json=body).json()
        login = http.post("/v1/auth/login", json={k: body[k] for k in ("email", "password")})
        cookie = {"Cookie": f"session={login.cookies['session']}"}
        http.cookies.clear()
        for n in range(writes):
            trace_id = secrets.token_hex(16)
            headers = {**cookie, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
            renamed = http.patch(f"/v1/users/{user['id']}", json={"name": f"H{n}"}, headers=headers)
            renamed.raise_for_status()
            trace_ids.append(trace_id)
            time.sleep(pause)  # one write at a time: latency, not a backlog
    return trace_ids


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan | None:
    found = [s for s in spans if s.service == service and s.name.startswith(name)]
    return found[0] if len(found) == 1 else None


def hops(spans: list[ReceivedSpan]) -> dict[str, float] | None:
    """Each hop of one trace in ms; None while a span is missing."""
    request, commit = one(spans, "api", "PATCH"), one(spans, "api", "user write")
    publish = one(spans, "api", "publish ")
    handling, purge = one(spans, "invalidator", "process "), one(spans, "invalidator", "purge")
    session = one(spans, "session", "process ")
    # A rename's writer stores the new value (`write-through`); a delete's purges (`purge`).
    steps = ("write-through", "purge", "announce")
    writer = [s for s in spans if s.service == "api" and s.name in steps]
    if request is None or commit is None or publish is None or len(writer) != 2:
        return None
    if handling is None or purge is None or session is None:
        return None

    def ms(ns: int) -> float:
        return ns / 1e6

    return {
        "request": request.duration_ms,
        "commit": commit.duration_ms,
        "relay wake-up": ms(publish.start_ns - commit.end_ns),
        "xadd → handling": ms(handling.start_ns - publish.start_ns),
        "handling → purged": ms(purge.end_ns - handling.start_ns),
        "visible": ms(purge.end_ns - commit.end_ns),
        "relay publish": publish.duration_ms,
        "invalidator": handling.duration_ms,
        "purge": purge.duration_ms,
        "writer update": ms(max(s.end_ns for s in writer) - min(s.start_ns for s in writer)),
        "xadd → session": ms(session.start_ns - publish.start_ns),
    }


def collect(receiver: OtlpReceiver, trace_ids: list[str]) -> list[dict[str, float]]:
    deadline = time.monotonic() + WITHIN
    while True:
        found = [hops(receiver.trace(t)) for t in trace_ids]
        done = [h for h in found if h is not None]
        if len(done) == len(trace_ids) or time.monotonic() > deadline:
            if len(done) < len(trace_ids):
                print(f"{len(trace_ids) - len(done)} traces incomplete after {WITHIN:.0f} s")
            return done
        time.sleep(0.2)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def report(rows: list[dict[str, float]]) -> None:
    print(f"\n{len(rows)} writes; ms from span timestamps")
    print(f"| {'hop':<17} | {'median':>7} | {'p90':>7} |")
    print(f"|{'-' * 19}|{'-' * 8}:|{'-' * 8}:|")
    for name in rows[0]:
        values = [row[name] for row in rows]
        print(f"| {name:<17} | {statistics.median(values):>7.2f} | {p90(values):>7.2f} |")
    # A breakdown: no baseline and no target, the figures are recorded as they are.
    for name, figure in (
        ("visible", "commit → purged by the invalidator (visible), median"),
        ("request", "the PATCH as its client waited for it, median"),
    ):
        values = [row[name] for row in rows]
        record(
            "write_hops",
            figure=figure,
            value=statistics.median(values),
            unit="ms",
            baseline=f"none: a breakdown (p90 {p90(values):.2f} ms, {len(rows)} writes)",
            ratio=None,
            target=None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between writes")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-hops-"))
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(data_dir=workdir / "redis"))
        database_url, described = database(stack)
        print(f"database: {described}")
        receiver = stack.enter_context(OtlpReceiver())
        env = stack_env(redis.url, database_url, receiver.url, workdir / "state")
        api_url = start_stack(stack, env)
        write(api_url, 3, args.pause)  # warm up: first connections, first statements
        trace_ids = write(api_url, args.writes, args.pause)
        rows = collect(receiver, trace_ids)
    if rows:
        report(rows)


if __name__ == "__main__":
    main()
