"""`make compose-test`: build the compose stack, run it for real, break it, take it down.

Phases, each timed: install (a Docker engine and `docker compose`: devtools/docker_engine.py),
base images (pulled, else stand-ins built from Debian packages: devtools/docker_images.py),
build (`docker compose build`), up (`up -d --build --wait`), flows (devtools/compose_flows.py),
faults (devtools/compose_faults.py), down (`down -v`, also after a failure). Exit 0 when every
step held; 1 with the failing step, the containers' last log lines and the timings otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final

from devtools import compose_faults, compose_flows, docker_images
from devtools.compose_flows import FlowError
from devtools.compose_stack import PROJECT, Stack
from devtools.docker_engine import DockerSetupError, ensure_compose, ensure_engine, run

PROJECT_LABEL: Final = "com.docker.compose.project"
IMAGES: Final = (
    "redis-platform/api:latest",
    "redis-platform/session:latest",
    "redis-platform/invalidator:latest",
)


def say(message: str) -> None:
    sys.stdout.write(f"    {message}\n")
    sys.stdout.flush()


class Timings:
    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        sys.stdout.write(f"\n=== {name}\n")
        sys.stdout.flush()
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - started))
            sys.stdout.write(f"=== {name}: {self.phases[-1][1]:.1f} s\n")

    def report(self) -> str:
        rows = [f"  {name:<12} {seconds:7.1f} s" for name, seconds in self.phases]
        total = sum(seconds for _, seconds in self.phases)
        return "\n".join(["phase timings:", *rows, f"  {'total':<12} {total:7.1f} s"])


async def flows(stack: Stack) -> None:
    async with compose_flows.open_probe(stack, say) as probe:
        await compose_flows.end_to_end(probe)
        compose_flows.only_the_proxy_is_published(stack)
        await compose_flows.client_identity(probe)


async def faults(stack: Stack) -> None:
    steps: list[Callable[[compose_flows.Probe], Awaitable[None]]] = [
        compose_faults.invalidator_killed,
        compose_faults.data_redis_restarted,
        compose_faults.cache_filled,
        compose_faults.api_replica_killed,
        compose_faults.down_then_up,
    ]
    async with compose_flows.open_probe(stack, say) as probe:
        for step in steps:
            started = time.monotonic()
            await step(probe)
            say(f"  ({step.__name__}: {time.monotonic() - started:.1f} s)")


def image_sizes() -> None:
    for image in IMAGES:
        size = json.loads(
            run("docker", "image", "inspect", "--format", "{{json .Size}}", image).stdout
        )
        say(f"{image}: {size / 1e6:.0f} MB")


def main() -> int:
    timings = Timings()
    stack = Stack()
    up = False
    try:
        with timings.phase("install"):
            say(f"engine: {ensure_engine(say)}; compose: {ensure_compose(say)}")
        with timings.phase("base images"):
            for image, how in docker_images.ensure_images(
                docker_images.required_images(), say
            ).items():
                say(f"{image}: {how}")
        with timings.phase("build"):
            stack.compose("build", timeout=1200)
            # The previous build's images, now untagged: only this project's.
            run("docker", "image", "prune", "-f", "--filter", f"label={PROJECT_LABEL}={PROJECT}")
            image_sizes()
        with timings.phase("up"):
            up = True
            # What an interrupted earlier run left (containers, volumes) goes first.
            stack.compose("down", "-v", "--remove-orphans")
            stack.compose("up", "-d", "--build", "--wait", timeout=600)
            say(f"proxy on {stack.base_url}")
        with timings.phase("flows"):
            asyncio.run(flows(stack))
        with timings.phase("faults"):
            asyncio.run(faults(stack))
    except (DockerSetupError, FlowError) as exc:
        sys.stdout.write(f"\nFAILED: {exc}\n")
        if up:
            sys.stdout.write(stack.logs() + "\n")
        status = 1
    except Exception:  # noqa: BLE001 - anything else is a failure too: show it, then clean up
        sys.stdout.write(f"\nFAILED:\n{traceback.format_exc()}\n")
        if up:
            sys.stdout.write(stack.logs() + "\n")
        status = 1
    else:
        status = 0
    finally:
        if up:
            with timings.phase("down"):
                stack.compose("down", "-v", "--remove-orphans", check=False)
    sys.stdout.write("\n" + timings.report() + "\n")
    sys.stdout.write(f"make compose-test: {'passed' if status == 0 else 'FAILED'}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
