"""Client identity from the peer address and X-Forwarded-For (pure: no sockets)."""

from __future__ import annotations

import ipaddress

import pytest

from shared.limiter.http import client_ip
from shared.settings import Network

TRUSTED: list[Network] = [
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("fd00::/8"),
]


def scope(peer: str | None, *forwarded: str) -> dict[str, object]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 1234) if peer else None, "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # untrusted peer: the header is ignored, whatever it says
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),
        ("203.0.113.5", [], "203.0.113.5"),
        # trusted peer: the rightmost untrusted hop
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["198.51.100.7, 10.9.9.9"], "198.51.100.7"),
        # several headers are one list, in order
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
        # every hop trusted: the leftmost one
        ("10.0.0.2", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        # trusted peer without the header: the peer
        ("10.0.0.2", [], "10.0.0.2"),
        # garbage from a trusted hop: stop at the last address we can vouch for
        ("10.0.0.2", ["198.51.100.7, not-an-ip"], "10.0.0.2"),
        ("10.0.0.2", ["not-an-ip, 198.51.100.7"], "198.51.100.7"),
        # IPv6 is limited per /64; IPv4-mapped IPv6 is IPv4
        ("2001:db8:aa:bb:1:2:3:4", [], "2001:db8:aa:bb::"),
        ("::ffff:198.51.100.9", [], "198.51.100.9"),
        ("fd00::1", ["[2001:db8::1]"], "2001:db8::"),
        # no peer at all (a unix socket): one shared bucket
        (None, ["1.2.3.4"], "unknown"),
    ],
)
def test_client_ip(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_ip(scope(peer, *forwarded), TRUSTED) == expected


def test_nothing_is_trusted_by_default() -> None:
    assert client_ip(scope("127.0.0.1", "1.2.3.4"), []) == "127.0.0.1"
