"""A local Sentinel set for tests and benchmarks: a primary, a replica and three sentinels.

Every process is a `RedisServer` child on a free port of 127.0.0.1, killed by PID. Each
sentinel gets a config file of its own in its own directory, because Sentinel rewrites its
config as it learns the topology. With `down-after-milliseconds 1000` a killed primary's
replica was promoted in about 1.5 s here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from devtools.redis_server import RedisServer

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(0.05)


def _call(port: int, *args: object) -> Any:
    client = redis.Redis(
        port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True
    )
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]  # unannotated
    finally:
        client.close()


def _answers(port: int, *args: object) -> Any:
    try:
        return _call(port, *args)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None


class LocalSentinel:
    """A primary, one replica of it and `sentinels` sentinels watching it as `master_name`."""

    def __init__(
        self,
        master_name: str = MASTER_NAME,
        sentinels: int = 3,
        binary: str | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        self.master_name = master_name
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="redis-sentinel-")).resolve()
        # The replica's first sync would wait 5 s for others to share it: none will.
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(binary, data_dir=self.data_dir / "primary", extra_args=fast_sync)
        self.replica = RedisServer(
            binary,
            data_dir=self.data_dir / "replica",
            extra_args=(*fast_sync, "--replicaof", "127.0.0.1", str(self.primary.port)),
        )
        self.servers = [self.primary, self.replica]
        self.sentinels = [
            RedisServer(
                binary,
                data_dir=self.data_dir / f"sentinel-{i}",
                extra_args=("--sentinel",),
                config_file=self.data_dir / f"sentinel-{i}" / "sentinel.conf",
            )
            for i in range(sentinels)
        ]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels' `(host, port)`, as REDIS_SENTINELS lists them."""
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def start(self, timeout: float = 60.0) -> LocalSentinel:
        # 60 s: on a loaded machine a sentinel can judge the new primary down (1 s) and fail
        # over before the set has settled; the replica is then found again on a later poll.
        for server in self.servers:
            server.start()
        _wait(self._replica_linked, timeout, "the replica's link to the primary")
        quorum = len(self.sentinels) // 2 + 1
        for sentinel in self.sentinels:
            sentinel.data_dir.mkdir(parents=True, exist_ok=True)
            assert sentinel.config_file is not None
            sentinel.config_file.write_text(
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}\n"
            )
            sentinel.start()
        _wait(self._sentinels_agree, timeout, "every sentinel seeing the replica and its peers")
        return self

    def master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        for sentinel in self.sentinels:
            found = _answers(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            if found:
                return next(server for server in self.servers if server.port == int(found[1]))
        raise RuntimeError("no sentinel names a master")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current master by PID; it is returned for `wait_for_promotion`."""
        primary = self.master()
        primary.kill()
        return primary

    def wait_for_promotion(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """After `old` was killed: the server promoted in its place, once it is master and
        every sentinel names it with no failover in progress. A sentinel answers
        GET-MASTER-ADDR-BY-NAME with the promoted replica while its failover still runs, but
        its SENTINEL MASTER state (what redis-py's discovery checks) stays the old master's,
        down, until the switch: a client asking then finds no master."""

        def promoted() -> bool:
            found = _answers(
                self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
            if not found or int(found[1]) == old.port:
                return False
            role = _answers(int(found[1]), "ROLE")
            if not role or role[0] != "master":
                return False
            return all(self._names_a_healthy_master(s.port, int(found[1])) for s in self.sentinels)

        _wait(promoted, timeout, f"a promotion in place of port {old.port}")
        return self.master()

    def _names_a_healthy_master(self, sentinel_port: int, port: int) -> bool:
        state = _answers(sentinel_port, "SENTINEL", "MASTER", self.master_name)
        if not state or int(state.get("port", 0)) != port:
            return False
        flags = set(str(state.get("flags", "")).split(","))
        return flags == {"master"}

    def restart(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed server again; the sentinels turn a former master into a replica.

        That takes about 10 s here: a sentinel reconfigures a returning master on its next
        INFO poll of it, every 10 s.
        """
        server.start()

        def linked_replica() -> bool:
            info = _answers(server.port, "INFO", "replication")
            return bool(info) and info.get("master_link_status") == "up"

        _wait(linked_replica, timeout, f"port {server.port} replicating the new master")

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.kill()

    def __enter__(self) -> LocalSentinel:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a start that timed out leaves no process behind
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _replica_linked(self) -> bool:
        info = _answers(self.replica.port, "INFO", "replication")
        return bool(info) and info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        others = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            state = _answers(sentinel.port, "SENTINEL", "MASTER", self.master_name)
            if not state or int(state.get("num-slaves", 0)) < 1:
                return False
            if int(state.get("num-other-sentinels", 0)) < others:
                return False
        return True
