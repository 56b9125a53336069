"""The compose stack under test: one project, the users' file plus the test override.

`devtools/compose.test.yml` adds what only the test needs: the two Redis servers published on
127.0.0.1 (free ports chosen here) for assertions, a short STREAM_CLAIM_IDLE, and rate limits
high enough for the load steps. Everything else is docker-compose.yml as users run it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any, Final

from devtools.docker_engine import ROOT, DockerSetupError, run

PROJECT: Final = "rpct"  # not the directory's name: a user's own `make up` stack stays untouched
FILES: Final = (ROOT / "docker-compose.yml", ROOT / "devtools" / "compose.test.yml")
# The proxy↔api network of the test stack; not docker-compose.yml's default, so the test can
# run beside a `make up` stack on the same engine.
EDGE_NETWORK: Final = "172.30.199"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    http_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    cache_port: int = field(default_factory=free_port)
    # 48 URL-safe characters: above the 32 the session service demands in production.
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(36))

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "SERVICE_TOKEN": self.service_token,
            "HTTP_PORT": str(self.http_port),
            "EDGE_NETWORK": os.environ.get("RPCT_EDGE_NETWORK", EDGE_NETWORK),
            "RPCT_REDIS_PORT": str(self.redis_port),
            "RPCT_CACHE_PORT": str(self.cache_port),
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        files = [arg for path in FILES for arg in ("-f", str(path))]
        done = run(
            "docker", "compose", *files, "-p", PROJECT, *args,
            check=False, timeout=timeout, env=self.env,
        )  # fmt: skip
        if check and done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise DockerSetupError(f"docker compose {' '.join(args)} failed:\n" + "\n".join(tail))
        return done.stdout

    def containers(self, service: str) -> list[dict[str, Any]]:
        """`docker inspect` of the service's containers (running or not), by replica number."""
        ids = self.compose("ps", "-a", "-q", service).split()
        if not ids:
            return []
        found: list[dict[str, Any]] = json.loads(run("docker", "inspect", *ids).stdout)
        return sorted(
            found, key=lambda c: int(c["Config"]["Labels"]["com.docker.compose.container-number"])
        )

    def published(self, service: str) -> list[str]:
        """Host ports of the service's running containers."""
        ports = []
        for container in self.containers(service):
            for bindings in (container["NetworkSettings"]["Ports"] or {}).values():
                ports += [f"{b['HostIp']}:{b['HostPort']}" for b in bindings or []]
        return ports

    def now(self) -> str:
        """The engine's clock, for `docker logs --since`."""
        return run("docker", "info", "--format", "{{.SystemTime}}").stdout.strip()

    def proxy_log(self, since: str) -> str:
        (proxy,) = self.containers("proxy")
        return run("docker", "logs", "--since", since, proxy["Id"]).stdout

    def docker(self, *args: str) -> None:
        run("docker", *args, timeout=120)

    def logs(self, tail: int = 40) -> str:
        done = subprocess.run(
            ["docker", "compose", *[a for p in FILES for a in ("-f", str(p))], "-p", PROJECT,
             "logs", "--no-color", "--tail", str(tail)],
            capture_output=True, text=True, timeout=120, check=False, env=self.env,
        )  # fmt: skip
        return done.stdout + done.stderr
