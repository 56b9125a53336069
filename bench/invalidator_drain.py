"""Drain N user events: the invalidator's consumer vs a raw redis-py loop, same run, same Redis.

Both drain the same stream, each in a fresh consumer group created at id 0, alternating
rounds; the figure of each is the median of its rounds.

- raw: `XREADGROUP COUNT 100`, `orjson.loads` of each entry, one pipeline of
  `DEL value lease` + `INCR generation` per event, one `XACK` per batch — the baseline.
- raw-1-incr: the same loop with one INCR per batch, as the invalidator does — so the
  second ratio isolates what the invalidator does beyond purging: validating every envelope,
  metrics, DLQ bookkeeping and, above all (profiled), the PUBLISH of one notice per event
  that no raw loop sends.
- invalidator: `shared.streams.StreamConsumer` + `invalidator.purge.Purger` (what the service
  runs): pydantic validation of every envelope, one purge pipeline per batch, one PUBLISH per
  event on the invalidation channel, the XACK, metrics. Tracing off. Every invalidator
  contender drains in a child process of its own (this script with `--drain`; it times itself,
  start-up left out), so all of them start alike in a fresh interpreter.
- invalidator+otel: the same with tracing on as the service configures it from the standard
  variables (OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG 0.01, OTLP/HTTP export to a
  receiver process), draining a second stream of the same events where 1 % carry a sampled
  `traceparent` (what an api with a 1 % sampler writes: only sampled writes carry one): a
  `process`, a `purge` and an `announce` span for each of those; the spans still queued at
  the end are exported inside the timing. `--no-tracing` leaves it out.
- invalidator@REF (with `--ref REF`): another commit's consumer and purger (its sources from
  `git archive`, ahead of the workspace's on the child's PYTHONPATH), tracing off, on the
  first stream: "today's" invalidator in the same run.
- invalidator@cluster (with `--cluster`): the invalidator (tracing off) through the cluster
  client the service builds for `REDIS_MODE=cluster`, on a local 3-primary cluster (no
  replicas) holding the same events; its slot map is read before the timer starts. Judged
  against the standalone invalidator (target >= 0.90x: every node shares this 2-core
  machine, so the ratio is mostly the client's overhead). With `--ref REF` too,
  invalidator@REF@cluster: the other commit's invalidator on the same cluster.

Usage: .venv/bin/python bench/invalidator_drain.py [--events 50000] [--rounds 3]
       [--no-tracing] [--ref main] [--cluster]
(REDIS_URL to use a running server; else a private redis-server is started.) Note that other
work on this 2-core machine makes single figures noisy; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# Run as `python bench/<file>.py`: the repository root (devtools) is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis, RedisCluster

from bench.results import record
from devtools.gitref import export_tree, source_path
from devtools.launcher import Launcher
from devtools.otlp import receiver_process
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer
from invalidator.config import InvalidatorSettings
from invalidator.metrics import InvalidatorMetrics
from invalidator.usecases import Purger
from shared.connections import RedisClient
from shared.events import (
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.keys import Keys
from shared.settings import load_settings
from shared.streams import ConsumerConfig, StreamConsumer

if TYPE_CHECKING:  # imported where used: the --ref child runs a commit that may predate it
    from shared.tracing import Tracing

BATCH = 100


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # seconds of this process's CPU (time.process_time)


SAMPLED = 0.01  # the share of traced events whose context is sampled
CHUNK = 1_000  # events per turn in the interleaved drain
TIME_LIMIT = 120.0  # seconds per drain: a bound, far above what a drain takes


def make_event(rng: random.Random, users: list[uuid.UUID], *, traced: bool = False) -> bytes:
    uid = rng.choice(users)
    roll = rng.random()
    event: Any
    if roll < 0.25:
        payload = UserCreatedPayload(user_id=uid, email="u@example.com", name="U")
        event = UserCreated(source="bench", payload=payload)
    elif roll < 0.75:
        event = UserUpdated(source="bench", payload=UserUpdatedPayload(user_id=uid))
    elif roll < 0.9:
        event = UserDeleted(source="bench", payload=UserDeletedPayload(user_id=uid))
    else:
        payload_pw = UserPasswordChangedPayload(user_id=uid)
        event = UserPasswordChanged(source="bench", payload=payload_pw)
    # As an api with a 1 % sampler writes them: a context on the sampled writes' events only.
    # Drawn either way, so the traced stream holds the same events as the plain one.
    sampled = rng.random() < SAMPLED
    traceparent = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
    if traced and sampled:
        event = event.model_copy(update={"traceparent": traceparent})
    return bytes(event.to_json())


async def publish(redis: RedisClient, stream: str, count: int, *, traced: bool = False) -> None:
    rng = random.Random(7)
    users = [uuid.uuid4() for _ in range(10_000)]
    for start in range(0, count, 1000):
        pipe = redis.pipeline(transaction=False)
        for _ in range(min(1000, count - start)):
            pipe.xadd(stream, {"data": make_event(rng, users, traced=traced)})  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()


async def drain_raw(
    redis: Redis, keys: Keys, group: str, count: int, *, coalesce: bool = False
) -> Timing:
    stream, gen = keys.user_events(), keys.user_list_gen()
    await redis.xgroup_create(stream, group, id="0")
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while done < count and time.perf_counter() - started < TIME_LIMIT:
        reply: Any = await redis.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=100)
        entries = reply[0][1] if reply else []
        pipe = redis.pipeline(transaction=False)
        for _, fields in entries:
            event = orjson.loads(fields[b"data"])
            if event["type"] != "user.created":
                uid = event["payload"]["user_id"]
                pipe.delete(keys.user(uid), keys.user_lease(uid))  # type: ignore[unused-awaitable]  # queued
            if not coalesce:
                pipe.incr(gen)  # type: ignore[unused-awaitable]  # queued
        if coalesce and entries:
            pipe.incr(gen)  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()
        await redis.xack(stream, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    return Timing(time.perf_counter() - started, time.process_time() - cpu)


def invalidator_consumer(
    redis: RedisClient, keys: Keys, group: str, tracing: Tracing | None = None
) -> StreamConsumer:
    """The invalidator's consumer and purger as the service wires them, on `keys`' stream."""
    settings = load_settings(
        InvalidatorSettings, _env_file=None, key_prefix=keys.prefix, stream_block="100ms"
    )
    config = ConsumerConfig.from_settings(
        settings,
        stream=keys.user_events(),
        group=group,
        consumer="bench",
        dead_letters=keys.dead_letters(),
    )
    metrics = InvalidatorMetrics.create(CollectorRegistry())
    if tracing is None:  # positional, as every commit's constructors take them
        return StreamConsumer(redis, config, Purger(redis, keys, metrics), metrics.stream)
    spans = tracing.spans("invalidator")
    purger = Purger(redis, keys, metrics, spans)
    return StreamConsumer(redis, config, purger, metrics.stream, spans)


async def drain_invalidator(
    redis: RedisClient, keys: Keys, group: str, count: int, *, tracing: Tracing | None = None
) -> Timing:
    consumer = invalidator_consumer(redis, keys, group, tracing)
    started, cpu = time.perf_counter(), time.process_time()
    await consumer.prepare()  # creates the group at 0, as the service does at start
    handled = 0
    while handled < count and time.perf_counter() - started < TIME_LIMIT:
        handled += await consumer.read_new()
    timing = Timing(time.perf_counter() - started, time.process_time() - cpu)
    pending = (await redis.xpending(keys.user_events(), group))["pending"]
    if handled != count or pending:
        raise SystemExit(f"invalidator drained {handled}/{count}, {pending} pending")
    return timing


@dataclass(frozen=True)
class ChildDrain:
    """One invalidator drain in a child process (this script with `--drain`): every
    invalidator contender starts alike, in a fresh interpreter; the child times its own drain,
    start-up left out. `tree`: another commit's sources, imported ahead of the workspace's;
    `tracing_env`: the OTEL_* variables the child's tracing is configured from, as a service's."""

    url: str
    tree: Path | None = None
    tracing_env: dict[str, str] = field(default_factory=dict)
    cluster: bool = False  # `url` is a node of a cluster: the child drains through a cluster client

    async def __call__(self, _redis: Redis, keys: Keys, group: str, count: int) -> Timing:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(self.tracing_env)
        if self.tree is not None:
            env["PYTHONPATH"] = source_path(self.tree)
        argv = [sys.executable, __file__, "--drain", group, "--prefix", keys.prefix]
        argv += ["--url", self.url, "--events", str(count)]
        if self.cluster:
            argv.append("--cluster")
        code, out = await run_child("drain", argv, env)
        if code != 0:
            raise SystemExit(f"the drain in a child process ({self.tree or 'this tree'}) failed")
        line = next(line for line in out.splitlines() if line.startswith("DRAIN "))
        wall, cpu = line.split()[1:]
        return Timing(float(wall), float(cpu))


async def run_child(name: str, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """`argv` as a child process (the launcher's: by PID, output to a log); its exit code
    and output once it ended."""
    with tempfile.TemporaryDirectory(prefix="drain-") as root, Launcher(Path(root)) as launch:
        child = launch.start(name, argv, env)
        code = await asyncio.to_thread(child.popen.wait)
        return code, child.output()


def traced_env(endpoint: str) -> dict[str, str]:
    """Tracing on as a deployment sets it: a 1 % sampler, OTLP/HTTP to `endpoint`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(SAMPLED),
    }


def other_drains(url: str, ref: str | None, cluster_url: str | None) -> dict[str, ChildDrain]:
    """The `--ref` and `--cluster` contenders, each on the plain stream."""
    drains: dict[str, ChildDrain] = {}
    if ref is not None:
        drains[f"invalidator@{ref}"] = ChildDrain(url, tree=export_tree(ref))
    if cluster_url is not None:
        drains["invalidator@cluster"] = ChildDrain(cluster_url, cluster=True)
        if ref is not None:  # the other commit's invalidator on the cluster too
            drains[f"invalidator@{ref}@cluster"] = ChildDrain(
                cluster_url, tree=export_tree(ref), cluster=True
            )
    return drains


async def main(
    events: int,
    rounds: int,
    url: str,
    ref: str | None,
    endpoint: str | None,
    *,
    cluster_url: str | None = None,
) -> None:
    redis = Redis.from_url(url)
    keys = Keys(f"bench{uuid.uuid4().hex[:6]}")
    traced_keys = Keys(f"{keys.prefix}t")
    await publish(redis, keys.user_events(), events)
    on_cluster = None if cluster_url is None else RedisCluster.from_url(cluster_url)
    if on_cluster is not None:  # the same events, on the cluster's stream (one slot)
        await publish(on_cluster, keys.user_events(), events)
    drains: dict[str, Callable[[Redis, Keys, str, int], Awaitable[Timing]]] = {
        "raw": drain_raw,
        "raw-1-incr": functools.partial(drain_raw, coalesce=True),
        "invalidator": ChildDrain(url),
    }
    streams = dict.fromkeys(drains, keys)
    if endpoint is not None:
        await publish(redis, traced_keys.user_events(), events, traced=True)
        drains["invalidator+otel"] = ChildDrain(url, tracing_env=traced_env(endpoint))
        streams["invalidator+otel"] = traced_keys
    for name, child in other_drains(url, ref, cluster_url).items():
        drains[name], streams[name] = child, keys
    results: dict[str, list[float]] = {name: [] for name in drains}
    cpu_us: dict[str, list[float]] = {name: [] for name in drains}
    server_us: dict[str, list[float]] = {name: [] for name in drains}
    interleaved: list[Interleaved] = []
    for n in range(rounds):
        for name, drain in drains.items():
            servers = on_cluster if name.endswith("@cluster") and on_cluster else redis
            before = await server_cpu(servers)
            timing = await drain(redis, streams[name], f"{name}{n}", events)
            server_us[name].append((await server_cpu(servers) - before) / events * 1e6)
            results[name].append(events / timing.wall)
            cpu_us[name].append(timing.cpu / events * 1e6)
            print(
                f"round {n + 1} {name:20s} {events / timing.wall:10,.0f} events/s"
                f" {timing.cpu / events * 1e6:6.1f} us CPU/event,"
                f" Redis {server_us[name][-1]:5.1f} us/event"
            )
        if endpoint is not None:
            run = await interleaved_child(
                endpoint, url, plain=keys, traced=traced_keys, group=f"il{n}", events=events
            )
            interleaved.append(run)
            print(f"round {n + 1} interleaved tracing on ÷ off {run.ratio:.3f}x (CPU per event)")
    report({name: statistics.median(rates) for name, rates in results.items()}, rounds)
    report_cpu(cpu_us)
    if interleaved:
        report_interleaved(interleaved)
    print("\nRedis CPU per event (every server of the topology; the lowest round):")
    for name, costs in server_us.items():
        print(f"  {name:22s} {min(costs):6.1f} us")
    for k in (keys, traced_keys):
        await redis.delete(k.user_events(), k.user_list_gen())
    await redis.aclose()
    if on_cluster is not None:
        await on_cluster.delete(keys.user_events())
        await on_cluster.delete(keys.user_list_gen())
        await on_cluster.aclose()


async def server_cpu(client: RedisClient) -> float:
    """CPU seconds the servers have used (user + sys): the one server, or every cluster node.
    Per event, what a drain costs Redis: reading and acking the stream, the purges and the
    notices (the stream and the cache share these servers here)."""
    if isinstance(client, RedisCluster):
        replies: dict[str, Any] = await client.info("cpu", target_nodes=RedisCluster.ALL_NODES)
        infos = list(replies.values())
    else:
        infos = [await client.info("cpu")]
    return sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos)


def report(median: dict[str, float], rounds: int) -> None:
    raw, raw1, inv = median["raw"], median["raw-1-incr"], median["invalidator"]
    print(f"\nraw redis-py loop     {raw:10,.0f} events/s (median of {rounds})")
    print(f"raw, 1 INCR per batch {raw1:10,.0f} events/s (median of {rounds})")
    print(f"invalidator consumer  {inv:10,.0f} events/s (median of {rounds})")
    print(f"ratio invalidator/raw {inv / raw:10.2f}x   (target >= 0.80x)")
    print(f"ratio invalidator/raw with the same single INCR per batch {inv / raw1:.2f}x")
    judged("invalidator", "raw", median, ">= 0.8", rounds)
    if "invalidator+otel" in median:
        traced = median["invalidator+otel"]
        print(f"invalidator, tracing on at 1 %: {traced:10,.0f} events/s")
        print(f"ratio tracing on (1 %) / off {traced / inv:.3f}x (judged interleaved, below)")
        # Separate processes drift by tens of percent here: the cost of tracing is judged
        # in one process (`report_interleaved`); this is printed for reference.
        judged("invalidator+otel", "invalidator", median, None, rounds)
    if "invalidator@cluster" in median:
        on_cluster = median["invalidator@cluster"]
        print(f"invalidator on a 3-primary cluster: {on_cluster:10,.0f} events/s")
        print(f"ratio cluster / standalone {on_cluster / inv:.3f}x (target >= 0.90x)")
        judged("invalidator@cluster", "invalidator", median, ">= 0.9", rounds)
    for name, rate in median.items():
        if name.startswith("invalidator@") and name.endswith("@cluster"):
            if name != "invalidator@cluster" and "invalidator@cluster" in median:
                on_cluster = median["invalidator@cluster"]
                print(f"{name}: {rate:10,.0f} events/s")
                print(f"ratio invalidator@cluster / {name} {on_cluster / rate:.3f}x")
                judged("invalidator@cluster", name, median, None, rounds)
                print(f"ratio {name} / standalone {rate / inv:.3f}x")
            continue
        if name.startswith("invalidator@"):
            print(f"{name}: {rate:10,.0f} events/s")
            print(f"ratio invalidator (tracing off) / {name} {inv / rate:.3f}x (target >= 0.98x)")
            judged("invalidator", name, median, ">= 0.98", rounds)
            if "invalidator+otel" in median:
                traced = median["invalidator+otel"]
                print(f"ratio tracing on (1 %) / {name} {traced / rate:.3f}x (target >= 0.90x)")
                judged("invalidator+otel", name, median, ">= 0.9", rounds)


def judged(
    measured: str, reference: str, median: dict[str, float], target: str | None, rounds: int
) -> None:
    """One drain's events/s (median of the rounds) against another's, as a RESULT line."""
    record(
        "invalidator_drain",
        figure=f"{measured} ÷ {reference}, events/s, medians of {rounds} rounds",
        value=median[measured],
        unit="events/s",
        baseline=f"{reference} {median[reference]:.0f} events/s",
        ratio=median[measured] / median[reference],
        target=target,
    )


def report_cpu(cpu_us: dict[str, list[float]]) -> None:
    """CPU per event of this process: what each consumer costs, disturbed far less than
    events/s by other work on the machine. Each comparison: the lowest rounds' ratio, and the
    median of the ratios round by round (each pair drained seconds apart)."""
    print("\nCPU per event (this process; the lowest round):")
    for name, costs in cpu_us.items():
        print(f"  {name:22s} {min(costs):6.1f} us")
    pairs = [("invalidator+otel", "invalidator", "tracing on (1 %) vs off")]
    for name in (n for n in cpu_us if n.startswith("invalidator@")):
        if name.endswith("@cluster"):
            if name != "invalidator@cluster":
                pairs.append(("invalidator@cluster", name, f"invalidator@cluster vs {name}"))
            continue
        pairs += [
            ("invalidator", name, f"invalidator (tracing off) vs {name}"),
            ("invalidator+otel", name, f"tracing on (1 %) vs {name}"),
        ]
    for measured, reference, label in pairs:
        if measured not in cpu_us:
            continue
        ours, theirs = cpu_us[measured], cpu_us[reference]
        paired = statistics.median(a / b - 1 for a, b in zip(ours, theirs, strict=True))
        print(
            f"{label}: {min(ours) / min(theirs) - 1:+.1%} CPU per event (lowest rounds),"
            f" {paired:+.1%} (median round by round)"
        )


class Interleaved(NamedTuple):
    """One interleaved child's sums: CPU seconds of the main thread per side, the CPU of every
    other thread (the span exporter's: all of it is the traced side's), events per side."""

    off_cpu: float
    on_cpu: float
    exporter_cpu: float
    off_events: int
    on_events: int

    @property
    def ratio(self) -> float:
        """Traced throughput over untraced at equal CPU: CPU per event off ÷ on."""
        off = self.off_cpu / self.off_events
        on = (self.on_cpu + self.exporter_cpu) / self.on_events
        return off / on


async def interleaved_child(
    endpoint: str, url: str, *, plain: Keys, traced: Keys, group: str, events: int
) -> Interleaved:
    """Run the interleaved drain (`drain_interleaved`) in a child process, as a service
    with tracing on is configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(traced_env(endpoint))
    argv = [sys.executable, __file__, "--interleave", group, "--prefix", plain.prefix]
    argv += ["--traced-prefix", traced.prefix, "--url", url, "--events", str(events)]
    code, out = await run_child("interleave", argv, env)
    if code != 0:
        raise SystemExit(f"the interleaved drain failed:\n{out}")
    line = next(line for line in out.splitlines() if line.startswith("INTERLEAVED "))
    return Interleaved(*orjson.loads(line.removeprefix("INTERLEAVED ")))


async def drain_interleaved(url: str, plain: Keys, traced: Keys, group: str, events: int) -> None:
    """The child of `interleaved_child`: one process, tracing on from the environment; two
    invalidator consumers, tracing off on `plain`'s stream and on on `traced`'s (the same
    events, 1 % with a sampled context), take turns of CHUNK events (order alternating) until
    each drained `events`. Both sides see the same process and the same moments of the
    machine, which drifts by tens of percent between separate processes and rounds here.
    Each side is charged its main-thread CPU; every other thread's CPU (the span exporter's
    encoding and sending, the final flush included) is charged to the traced side."""
    from shared.lifespan import freeze_startup_objects  # this tree's: not for a --ref child
    from shared.tracing import Tracing

    redis = Redis.from_url(url)
    tracing = Tracing.from_environment("invalidator")
    if tracing.provider is None:
        raise SystemExit("the interleaved drain needs OTEL_EXPORTER_OTLP_ENDPOINT")
    sides = {
        "off": invalidator_consumer(redis, plain, group),
        "on": invalidator_consumer(redis, traced, group, tracing),
    }
    for consumer in sides.values():
        await consumer.prepare()
    freeze_startup_objects()
    cpu, done = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0)
    process, thread = time.process_time(), time.thread_time()
    started, turn = time.perf_counter(), 0
    while min(done.values()) < events and time.perf_counter() - started < TIME_LIMIT:
        for side in ("off", "on") if turn % 2 == 0 else ("on", "off"):
            target, mark = min(events, done[side] + CHUNK), time.thread_time()
            while done[side] < target:
                done[side] += await sides[side].read_new()
            cpu[side] += time.thread_time() - mark
        turn += 1
    tracing.provider.force_flush()
    others = (time.process_time() - process) - (time.thread_time() - thread)
    if min(done.values()) < events:
        raise SystemExit(f"interleaved drain: {done} of {events} in {TIME_LIMIT}s")
    result = Interleaved(cpu["off"], cpu["on"], others, done["off"], done["on"])
    print("INTERLEAVED " + orjson.dumps(list(result)).decode(), flush=True)
    await tracing.aclose()
    await redis.aclose()


def report_interleaved(runs: list[Interleaved]) -> None:
    print("\nTracing on (1 %) ÷ off, interleaved in one process (CPU per event):")
    for n, run in enumerate(runs, start=1):
        off = run.off_cpu / run.off_events * 1e6
        on = run.on_cpu / run.on_events * 1e6
        export = run.exporter_cpu / run.on_events * 1e6
        print(
            f"  run {n}: off {off:5.1f} us, on {on:5.1f} us + exporter thread {export:4.1f} us"
            f" -> {run.ratio:.3f}x"
        )
    ratio = statistics.median(run.ratio for run in runs)
    print(f"ratio tracing on (1 %) / off, interleaved {ratio:.3f}x (target >= 0.90x)")
    off_us = statistics.median(run.off_cpu / run.off_events * 1e6 for run in runs)
    record(
        "invalidator_drain",
        figure=f"invalidator+otel ÷ invalidator, interleaved in one process, median of {len(runs)}",
        value=off_us / ratio,
        unit="us CPU/event",
        baseline=f"tracing off {off_us:.1f} us CPU/event, the same process",
        ratio=ratio,
        target=">= 0.9",
    )


async def drain_only(url: str, prefix: str, group: str, events: int, cluster: bool) -> None:
    """The child of `drain_child`: one drain, with tracing when the environment asks for it
    (as a service configures it); its wall and CPU seconds printed last. Traced, the spans
    still queued are exported inside the timing: their cost is the drain's. On a cluster
    (`cluster`), the client the service builds for `REDIS_MODE=cluster`, its slot map read
    before the timer starts (discovery is start-up, not drain)."""
    redis: Any = Redis.from_url(url)
    if cluster:
        await redis.aclose()
        from shared.connections import make_redis  # the --ref child's own, on a cluster too
        from shared.settings import RedisMode

        settings = load_settings(
            InvalidatorSettings, _env_file=None, redis_url=url, redis_mode=RedisMode.CLUSTER
        )
        redis = make_redis(settings.redis_target, settings)
        _ = await redis.initialize()
    tracing = None
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from shared.tracing import Tracing  # the --ref child may predate it: imported when asked

        tracing = Tracing.from_environment("invalidator")
    with contextlib.suppress(ImportError):  # as the service's lifespan does (older commits: no)
        from shared.lifespan import freeze_startup_objects

        freeze_startup_objects()
    started, cpu = time.perf_counter(), time.process_time()
    await drain_invalidator(redis, Keys(prefix), group, events, tracing=tracing)
    if tracing is not None and tracing.provider is not None:
        tracing.provider.force_flush()
    print("DRAIN", time.perf_counter() - started, time.process_time() - cpu, flush=True)
    if tracing is not None:
        await tracing.aclose()
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-tracing", dest="tracing", action="store_false")
    parser.add_argument("--ref", help="also drain with this commit's invalidator (tracing off)")
    parser.add_argument("--drain", help=argparse.SUPPRESS)  # a child's drain: its group
    parser.add_argument("--interleave", help=argparse.SUPPRESS)  # an interleaved child: group
    parser.add_argument("--traced-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also drain on a local 3-primary cluster (REDIS_MODE=cluster) in the same run",
    )
    args = parser.parse_args()
    if args.interleave:
        plain, traced = Keys(args.prefix), Keys(args.traced_prefix)
        asyncio.run(drain_interleaved(args.url, plain, traced, args.interleave, args.events))
        sys.exit(0)
    if args.drain:
        asyncio.run(drain_only(args.url, args.prefix, args.drain, args.events, args.cluster))
        sys.exit(0)
    with contextlib.ExitStack() as stack:
        endpoint = None
        if args.tracing:
            receiver, endpoint = receiver_process()
            stack.callback(receiver.wait, 10)
            stack.callback(receiver.terminate)
        cluster_url = None
        if args.cluster:
            # No replicas: the standalone server has none either.
            cluster_url = stack.enter_context(LocalCluster(replicas=0)).url
        if not (url := os.environ.get("REDIS_URL", "")):
            url = stack.enter_context(RedisServer()).url
        asyncio.run(
            main(args.events, args.rounds, url, args.ref, endpoint, cluster_url=cluster_url)
        )
