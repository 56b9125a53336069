"""GET /v1/users/{id} on the cache-hit path vs the least a FastAPI endpoint can do.

In one run, against one private redis-server, each server as `uvicorn --workers 1 --loop uvloop
--http httptools` on 127.0.0.1:
  api        the real api, every middleware on (request id, metrics, logging, the rate limiter
             with a limit too high to reject), near cache off: one Redis GET per request
  api+near   the same with the in-process near cache on
  redis      bench/bare_app.py: one Redis GET + orjson decode of the same cached object
             (default redis-py client: no socket timeouts)
  redis+t/o  the same with the api's own client (make_redis: timeouts, retries, blocking pool)
  dict       bench/bare_app.py: the same object from an in-process dict
  api+otel, api+near+otel
             the api (near cache off / on) with tracing on: OTEL_TRACES_SAMPLER=
             parentbased_traceidratio, ARG 0.01 (a 1 % sampler), exporting OTLP/HTTP to a
             receiver process (`python -m devtools.otlp`); `--no-tracing` leaves them out
  api@REF    with `--ref REF`: the api of another commit (its sources from `git archive`, run
             on this workspace's environment), tracing off: "today's" api in the same run
  api@cluster  with `--cluster`: the api with REDIS_MODE=cluster on a local cluster of 3
             primaries (no replicas, as the standalone server has none), near cache off:
             its limiter check and cache GET go through the cluster auto-pipeline
Load: `wrk` (Debian package) with 50 connections, else a bounded Python httpx load generator
(which is itself the bottleneck: its ratios are indicative only). Endpoints take turns over
a few rounds and each reports its best round. Prints req/s, p50/p99 and the ratios against
the bare Redis endpoint. Targets: api >= 0.8x redis, api+near >= 1.0x; tracing on at 1 %
within 10 % of the same api with it off; with --ref, tracing off within 2 % of api@REF;
with --cluster, api@cluster >= 0.9x api.
The machine has 2 cores shared by server, load generator and other work: compare ratios
from the same run, not absolute figures across runs.

    .venv/bin/python bench/api_read.py [--seconds 3] [--rounds 3] [--connections 50]
        [--no-tracing] [--ref main] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record
from devtools.gitref import export_tree, source_path
from devtools.launcher import Launcher
from devtools.otlp import receiver_process
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer
from shared.keys import Keys

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
MAX_PYTHON_REQUESTS = 200_000


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = float("nan")  # the server process's CPU time per request (user + system)


# Base URL -> PID of every server started, for its CPU time per request: a figure the other
# work on a shared machine disturbs far less than requests/s.
SERVERS: dict[str, int] = {}
_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(url: str) -> float:
    """Seconds of CPU the process serving `url` has used so far (nan when unknown)."""
    pid = SERVERS.get("/".join(url.split("/")[:3]))
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


# `--app-dir`: bench.* imports from the repository, while each server runs in an empty
# directory of its own (devtools.launcher), so no `.env` is read.
UVICORN = (
    "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
    "--log-level", "warning", "--app-dir", str(ROOT),
)  # fmt: skip


def start_server(
    launcher: Launcher, app: str, env: dict[str, str], *, health: str = "/health"
) -> str:
    """`uvicorn <app> --factory` with the benchmark's flags; its URL once `health` answers."""
    service = launcher.start_service(app, env, options=UVICORN, health=health)
    SERVERS[service.url] = service.popen.pid
    return service.url


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(name: str, url: str, seconds: float, connections: int) -> Result:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    subprocess.run([*args[:3], "-d1s", url], capture_output=True, check=True)  # warm up
    cpu = server_cpu(url)
    out = subprocess.run(args, capture_output=True, check=True, text=True).stdout
    cpu = server_cpu(url) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Result(name, rps, p50, p99, int(bad.group(1)) if bad else 0, cpu / count * 1e6)


async def _python_load(url: str, seconds: float, connections: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) < MAX_PYTHON_REQUESTS:
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += response.status_code != 200

        await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies), latencies, errors


def run_python(name: str, url: str, seconds: float, connections: int) -> Result:
    asyncio.run(_python_load(url, 1.0, connections))  # warm up
    started, cpu = time.perf_counter(), server_cpu(url)
    count, latencies, errors = asyncio.run(_python_load(url, seconds, connections))
    elapsed, cpu = time.perf_counter() - started, server_cpu(url) - cpu
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))]

    return Result(name, count / elapsed, quantile(0.50), quantile(0.99), errors, cpu / count * 1e6)


def traced(env: dict[str, str], endpoint: str) -> dict[str, str]:
    """`env` with tracing on: a 1 % sampler, exporting to `endpoint`."""
    return {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }


def api_env(redis_url: str, database_url: str, near: bool) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "KEY_PREFIX": "bench",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        # The limiter runs on every request; the limit only has to be out of reach.
        "RATE_LIMIT_DEFAULT": "1000000000/minute",
        "NEAR_CACHE_SIZE": "10000" if near else "0",
        "NEAR_CACHE_TTL": "60s",
        # The bare endpoint's client has 50 connections for 50 concurrent requests: same here.
        "REDIS_POOL_SIZE": "50",
    }


def seed_user(url: str) -> str:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Bench", "password": "bench-pw-1"}
    user_id: str = httpx.post(f"{url}/v1/users", json=body, timeout=10).json()["id"]
    for _ in range(3):
        response = httpx.get(f"{url}/v1/users/{user_id}", timeout=10)
        assert response.status_code == 200, response.text
    return user_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per endpoint per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--no-tracing", dest="tracing", action="store_false")
    parser.add_argument("--ref", help="also run this commit's api (tracing off) as a baseline")
    parser.add_argument("--cluster", action="store_true", help="add the api on a local cluster")
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python
    print(f"load generator: {'wrk' if load is run_wrk else 'python httpx (wrk not found)'}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    with ExitStack() as stack, RedisServer(data_dir=workdir / "redis") as redis:
        env = api_env(redis.url, database_url, near=False)
        migrate = [str(VENV_BIN / "python"), "-m", "api.migrate"]
        subprocess.run(migrate, env=env, check=True, capture_output=True)
        urls = start_all(stack, redis.url, database_url)
        endpoint = None
        if args.tracing:
            receiver, endpoint = receiver_process()
            stack.callback(stop, receiver)
            urls.update(start_traced(stack, endpoint, redis.url, database_url, urls["api"]))
        if args.ref:
            urls.update(start_ref(stack, args.ref, redis.url, database_url, urls["api"]))
        if args.cluster:
            local = stack.enter_context(LocalCluster(replicas=0))
            urls["api@cluster"] = start_on_cluster(stack, local.url, database_url, urls["api"])
        # Every endpoint in every round, so a burst of other work on the shared machine lands
        # on all of them rather than on one; each compared pair back to back (a traced api
        # right after its untraced twin), and every other round in reverse order, so neither
        # side of a pair is always measured first.
        order = paired_order(list(urls))
        rounds = [
            [
                load(n, urls[n], args.seconds, args.connections)
                for n in (order if r % 2 == 0 else order[::-1])
            ]
            for r in range(args.rounds)
        ]
        in_process = {}
        if endpoint is not None:
            for name, near in (("api", False), ("api+near", True)):
                env = api_env(redis.url, database_url, near=near)
                in_process[name] = run_in_process(env, endpoint)
    report([best(name, rounds) for name in urls], rounds)
    for name, sums in in_process.items():
        report_in_process(name, sums)


def paired_order(names: list[str]) -> list[str]:
    """`names` with each compared contender right after its reference: `api+otel` after
    `api`, `api+near+otel` after `api+near`, `api@REF` and `api@cluster` after `api`."""
    references = {n: "api" for n in names if n.startswith("api@")}
    references |= {"api+otel": "api", "api+near+otel": "api+near"}
    order = [n for n in names if n not in references]
    for name in names:
        if name in references:
            order.insert(order.index(references[name]) + 1, name)
    return order


def start_all(stack: ExitStack, redis_url: str, database_url: str) -> dict[str, str]:
    """Every server up at once (idle ones cost nothing); the URL each endpoint is read at."""
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-servers-"))))
    env = api_env(redis_url, database_url, near=False)
    api_url = start_server(launcher, "api.main:create_app", env)
    user_id = seed_user(api_url)
    bare_env = {**env, "BENCH_REDIS_URL": redis_url, "BENCH_KEY": Keys("bench").user(user_id)}
    # The bare app has no /health: its OpenAPI document answers once it is up.
    bare_url = start_server(launcher, "bench.bare_app:create_app", bare_env, health="/openapi.json")
    near_env = api_env(redis_url, database_url, near=True)
    near_url = start_server(launcher, "api.main:create_app", near_env)
    path = f"/v1/users/{user_id}"
    httpx.get(f"{near_url}{path}", timeout=10)
    return {
        "redis": f"{bare_url}/redis/{user_id}",
        "redis+t/o": f"{bare_url}/redis-timeouts/{user_id}",
        "api": f"{api_url}{path}",
        "api+near": f"{near_url}{path}",
        "dict": f"{bare_url}/dict/{user_id}",
    }


def run_in_process(env: dict[str, str], endpoint: str) -> list[float]:
    """`bench/inprocess.py` in a child process: the api with tracing off and on, taking turns
    in one process; its sums (see that module)."""
    child = [sys.executable, str(Path(__file__).with_name("inprocess.py")), "--endpoint", endpoint]
    done = subprocess.run(child, env=env, capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("INPROCESS ")), None)
    if done.returncode or line is None:
        raise SystemExit(f"the in-process comparison failed:\n{done.stdout}\n{done.stderr}")
    sums: list[float] = json.loads(line.removeprefix("INPROCESS "))
    return sums


def report_in_process(name: str, sums: list[float]) -> None:
    """Tracing on ÷ off at equal CPU, in one process: CPU per request off ÷ on."""
    off_cpu, on_cpu, others, off_n, on_n = sums
    off, on, export = off_cpu / off_n * 1e6, on_cpu / on_n * 1e6, others / on_n * 1e6
    ratio = off / (on + export)
    print(
        f"{name}+otel / {name}, in one process: off {off:.1f} us, on {on:.1f} us + other"
        f" threads {export:.1f} us CPU per request -> {ratio:.3f}x (target >= 0.90x)"
    )
    record(
        "api_read",
        figure=f"{name}+otel ÷ {name}, in one process taking turns, CPU per request",
        value=on + export,
        unit="us CPU/request",
        baseline=f"{name} (tracing off) {off:.1f} us CPU/request, the same process",
        ratio=ratio,
        target=">= 0.90",
    )


def start_traced(
    stack: ExitStack, endpoint: str, redis_url: str, database_url: str, api_url: str
) -> dict[str, str]:
    """The api with tracing on (near cache off and on), exporting to the receiver at
    `endpoint`."""
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-traced-"))))
    path = urlsplit(api_url).path
    urls = {}
    for name, near in (("api+otel", False), ("api+near+otel", True)):
        env = traced(api_env(redis_url, database_url, near=near), endpoint)
        url = start_server(launcher, "api.main:create_app", env)
        httpx.get(f"{url}{path}", timeout=10)  # fills the near cache
        urls[name] = f"{url}{path}"
    return urls


def start_ref(
    stack: ExitStack, ref: str, redis_url: str, database_url: str, api_url: str
) -> dict[str, str]:
    """The api of commit `ref`, tracing off, on the same Redis and database."""
    tree = export_tree(ref)
    stack.callback(shutil.rmtree, tree, ignore_errors=True)
    env = {**api_env(redis_url, database_url, near=False), "PYTHONPATH": source_path(tree)}
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-ref-"))))
    url = start_server(launcher, "api.main:create_app", env)
    path = urlsplit(api_url).path
    return {f"api@{ref}": f"{url}{path}"}


def start_on_cluster(stack: ExitStack, cluster_url: str, database_url: str, api_url: str) -> str:
    """The api with REDIS_MODE=cluster (data and cache), its cache warmed for the user."""
    env = {**api_env(cluster_url, database_url, near=False), "REDIS_MODE": "cluster"}
    launcher = stack.enter_context(Launcher(Path(tempfile.mkdtemp(prefix="bench-cluster-"))))
    url = start_server(launcher, "api.main:create_app", env)
    health = httpx.get(f"{url}/health", timeout=10).json()
    if "nodes" not in health["components"]["redis"]:  # a cluster client lists the nodes
        print("WARNING: api@cluster did not build a cluster client (REDIS_MODE not wired)")
    path = urlsplit(api_url).path
    for _ in range(3):
        response = httpx.get(f"{url}{path}", timeout=10)
        assert response.status_code == 200, response.text
    return f"{url}{path}"


def best(name: str, rounds: list[list[Result]]) -> Result:
    """The round with the highest throughput, and the lowest CPU per request of any round:
    the least disturbed by other work."""
    mine = [r for results in rounds for r in results if r.name == name]
    top = max(mine, key=lambda r: r.rps)
    return replace(top, cpu_us=min(r.cpu_us for r in mine))


def report(results: list[Result], rounds: list[list[Result]]) -> None:
    by_name = {r.name: r for r in results}
    baseline = by_name["redis"].rps
    print(
        f"{'endpoint':<14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}"
        f" {'x redis':>7} {'cpu us/req':>10}"
    )
    for r in results:
        print(
            f"{r.name:<14} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.errors:>7}"
            f" {r.rps / baseline:>7.2f} {r.cpu_us:>10.1f}"
        )
    print(f"api / bare redis      = {by_name['api'].rps / baseline:.2f}x (target >= 0.8x)")
    print(f"api+near / bare redis = {by_name['api+near'].rps / baseline:.2f}x (target >= 1.0x)")
    print(f"api+near / dict       = {by_name['api+near'].rps / by_name['dict'].rps:.2f}x")
    configured = by_name["redis+t/o"].rps
    print(f"api / bare redis with the api's client = {by_name['api'].rps / configured:.2f}x")
    for name, bound in (("api", "0.8"), ("api+near", "1.0")):
        record(
            "api_read",
            figure=f"{name}: GET /v1/users/{{id}}, cache hit, best round",
            value=by_name[name].rps,
            unit="req/s",
            baseline=f"bare Redis endpoint {baseline:.0f} req/s",
            ratio=by_name[name].rps / baseline,
            target=f">= {bound}",
        )
    # Tracing's cost is judged in one process (`report_in_process`): between wrk rounds the
    # same server's speed moves by tens of percent here. These are printed for reference.
    pairs: list[tuple[str, str, float | None]] = [
        ("api+otel", "api", None),
        ("api+near+otel", "api+near", None),
    ]
    for ref in (name for name in by_name if name.startswith("api@") and name != "api@cluster"):
        pairs += [("api", ref, 0.98), ("api+otel", ref, 0.90)]
    pairs.append(("api@cluster", "api", 0.90))
    for measured, reference, target in pairs:
        if measured in by_name:
            compare(by_name[measured], by_name[reference], target, rounds)


def compare(
    measured: Result, reference: Result, target: float | None, rounds: list[list[Result]]
) -> None:
    """One contender against another: the ratio of their best rounds, the median of their
    ratios round by round (each pair measured seconds apart: drifts in the machine's other
    work cancel), and the extra CPU per request."""
    paired = []
    for results in rounds:
        by_name = {r.name: r for r in results}
        paired.append(by_name[measured.name].rps / by_name[reference.name].rps)
    cpu = measured.cpu_us / reference.cpu_us - 1
    median = statistics.median(paired)
    print(
        f"{measured.name} / {reference.name}: best {measured.rps / reference.rps:.3f}x req/s,"
        f" per round median {median:.3f}x"
        f" ({min(paired):.3f}-{max(paired):.3f}), {cpu:+.1%} CPU per request"
        + (f" (target >= {target:.2f}x)" if target is not None else " (judged in one process)")
    )
    record(
        "api_read",
        figure=f"{measured.name} ÷ {reference.name}, req/s, median of the rounds' ratios",
        value=measured.rps,
        unit="req/s (best round)",
        baseline=f"{reference.name} {reference.rps:.0f} req/s; {cpu:+.1%} CPU per request",
        ratio=median,
        target=None if target is None else f">= {target:.2f}",
    )


if __name__ == "__main__":
    main()
