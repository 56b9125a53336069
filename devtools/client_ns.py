"""Clients with addresses of their own, in a network namespace: the client-identity step.

Why not 127.0.0.2 and 127.0.0.3: a connection from the host's loopback to a published port
reaches the container with the bridge gateway's address whatever the daemon's mode. With the
userland proxy (the default) docker-proxy opens the connection itself; with
`"userland-proxy": false` Docker sets `route_localnet=1` on its bridges and MASQUERADEs every
packet of local origin going into a bridge (`-m addrtype --src-type LOCAL`). Either way nginx
sees one client. Traffic that arrives from outside the host is DNAT-ed and keeps its source —
so the test's clients live in a namespace of their own (a veth pair; addresses from
198.18.0.0/15, the range reserved for network tests) and connect to the published port on the
host's end of the pair, like clients on other machines.

Run inside the namespace: `python -m devtools.client_ns URL SOURCE [X-Forwarded-For ...]`
sends one GET per forwarded value ("" for none) from SOURCE and prints one JSON line per answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Final

import httpx

from devtools.docker_engine import ROOT, run

NAMESPACE: Final = "rpct-clients"
HOST_SIDE: Final = "rpct-h"
CLIENT_SIDE: Final = "rpct-c"
NET: Final = "198.18.77"
HOST_ADDRESS: Final = f"{NET}.1"
CLIENT_ADDRESSES: Final = (f"{NET}.2", f"{NET}.3")


def unavailable() -> str | None:
    """Why client namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    return None


@contextlib.contextmanager
def client_namespace() -> Iterator[None]:
    _remove()
    steps = [
        ("netns", "add", NAMESPACE),
        ("link", "add", HOST_SIDE, "type", "veth", "peer", "name", CLIENT_SIDE),
        ("link", "set", CLIENT_SIDE, "netns", NAMESPACE),
        ("addr", "add", f"{HOST_ADDRESS}/24", "dev", HOST_SIDE),
        ("link", "set", HOST_SIDE, "up"),
        *[
            ("-n", NAMESPACE, "addr", "add", f"{a}/24", "dev", CLIENT_SIDE)
            for a in CLIENT_ADDRESSES
        ],
        ("-n", NAMESPACE, "link", "set", CLIENT_SIDE, "up"),
        ("-n", NAMESPACE, "link", "set", "lo", "up"),
    ]
    try:
        for step in steps:
            run("ip", *step)
        yield
    finally:
        _remove()


def _remove() -> None:
    run("ip", "link", "del", HOST_SIDE, check=False)  # takes its peer with it
    run("ip", "netns", "del", NAMESPACE, check=False)


def get_from(source: str, port: int, path: str, forwarded: list[str]) -> list[dict[str, str]]:
    """GET http://<host side>:port/path from `source`, once per forwarded value."""
    url = f"http://{HOST_ADDRESS}:{port}{path}"
    done = subprocess.run(
        ["ip", "netns", "exec", NAMESPACE, sys.executable, "-m", "devtools.client_ns",
         url, source, *forwarded],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


def main(argv: list[str]) -> int:
    url, source, *forwarded = argv
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        for value in forwarded or [""]:
            headers = {"X-Forwarded-For": value} if value else {}
            answer = client.get(url, headers=headers)
            remaining = answer.headers.get("x-ratelimit-remaining", "")
            line = {"status": str(answer.status_code), "remaining": remaining, "sent": value}
            sys.stdout.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
