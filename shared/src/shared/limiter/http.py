"""HTTP side of rate limiting that any service can use: client identity and headers.

`client_ip`: the peer address; `X-Forwarded-For` counts only when the peer is in the trusted
networks (TRUSTED_PROXIES), walked from the right past trusted hops — the first untrusted hop
is the client, so a client cannot choose its identity by sending the header itself. IPv6
clients are identified by their /64, the block one subscriber gets.

`rate_limit_headers`: `X-RateLimit-Limit/-Remaining/-Reset` (unix seconds) of the tightest
decision, the IETF draft's `RateLimit-Policy` (`"name";q=<limit>;w=<window s>`) and
`RateLimit` (`"name";r=<remaining>;t=<seconds to reset>`) listing every policy applied, and
`Retry-After` (whole seconds, rounded up) when a policy denied.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Sequence

from starlette.types import Scope

from shared.limiter.model import Decision, Policy
from shared.settings import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def rate_limit_headers(applied: Sequence[tuple[Policy, Decision]]) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in rate_limit_raw_headers(applied)]


def rate_limit_raw_headers(applied: Sequence[tuple[Policy, Decision]]) -> list[tuple[bytes, bytes]]:
    """`rate_limit_headers` as the ASGI byte pairs, on every limited response: kept cheap."""
    if not applied:
        return []
    if len(applied) == 1:  # the common case: one policy, no `min`, a cached policy header
        policy, decision = applied[0]
        return _headers(
            decision, _policy_header((policy,)), _state_item(policy, decision), [decision]
        )
    # The binding decision: a denial if any, else the one with the least left.
    tightest = min(applied, key=lambda item: (item[1].allowed, item[1].remaining, item[0].limit))
    state = ", ".join(_state_item(p, d) for p, d in applied)
    policies = _policy_header(tuple(p for p, _ in applied))
    return _headers(tightest[1], policies, state, [d for _, d in applied])


def _headers(
    decision: Decision, policies: bytes, state: str, decisions: Sequence[Decision]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-ratelimit-limit", b"%d" % decision.limit),
        (b"x-ratelimit-remaining", b"%d" % decision.remaining),
        (b"x-ratelimit-reset", b"%d" % decision.reset_epoch),
        (b"ratelimit-policy", policies),
        (b"ratelimit", state.encode()),
    ]
    denied = [d.retry_after_seconds for d in decisions if not d.allowed]
    if denied:
        headers.append((b"retry-after", b"%d" % max(denied)))
    return headers


@functools.lru_cache(maxsize=64)
def _policy_header(policies: tuple[Policy, ...]) -> bytes:
    # Policies are frozen and few: the header for a given set never changes.
    return ", ".join(_policy_item(p) for p in policies).encode()


def _policy_item(policy: Policy) -> str:
    return f'"{policy.name}";q={policy.limit};w={max(1, round(policy.period))}'


def _state_item(policy: Policy, decision: Decision) -> str:
    return f'"{policy.name}";r={decision.remaining};t={math.ceil(decision.reset_after)}'


def client_ip(scope: Scope, trusted: Sequence[Network]) -> str:
    """The client's identity: the peer, or the first untrusted X-Forwarded-For hop."""
    client = scope.get("client")
    if not client:
        return "unknown"
    peer, peer_trusted = _peer(client[0], tuple(trusted))
    if not peer_trusted:
        return peer  # the common case: no parsing per request (memoized per peer address)
    address = _parse_ip(client[0])
    assert address is not None  # a trusted peer parsed as an address
    for hop in reversed(_forwarded_for(scope)):
        parsed = _parse_ip(hop)
        if parsed is None:
            break  # garbage from a trusted hop: keep the last address we can vouch for
        address = parsed
        if not _trusted(address, trusted):
            break
    return identity(address)


@functools.lru_cache(maxsize=4096)
def _peer(host: str, trusted: tuple[Network, ...]) -> tuple[str, bool]:
    """(identity of the peer address, whether it is a trusted proxy); bounded memo."""
    address = _parse_ip(host)
    if address is None:
        return "unknown", False
    return identity(address), _trusted(address, trusted)


def identity(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
    return str(address)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def _forwarded_for(scope: Scope) -> list[str]:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    return [hop for value in values for hop in value.split(",") if hop.strip()]
