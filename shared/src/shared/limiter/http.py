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

import ipaddress
import math
from collections.abc import Sequence

from starlette.types import Scope

from shared.limiter.model import Decision, Policy
from shared.settings import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def rate_limit_headers(applied: Sequence[tuple[Policy, Decision]]) -> list[tuple[str, str]]:
    if not applied:
        return []
    # The binding decision: a denial if any, else the one with the least left.
    tightest = min(applied, key=lambda item: (item[1].allowed, item[1].remaining, item[0].limit))
    decision = tightest[1]
    headers = [
        ("x-ratelimit-limit", str(decision.limit)),
        ("x-ratelimit-remaining", str(decision.remaining)),
        ("x-ratelimit-reset", str(decision.reset_epoch)),
        ("ratelimit-policy", ", ".join(_policy_item(p) for p, _ in applied)),
        ("ratelimit", ", ".join(_state_item(p, d) for p, d in applied)),
    ]
    denied = [d for _, d in applied if not d.allowed]
    if denied:
        headers.append(("retry-after", str(max(d.retry_after_seconds for d in denied))))
    return headers


def _policy_item(policy: Policy) -> str:
    return f'"{policy.name}";q={policy.limit};w={max(1, round(policy.period))}'


def _state_item(policy: Policy, decision: Decision) -> str:
    return f'"{policy.name}";r={decision.remaining};t={math.ceil(decision.reset_after)}'


def client_ip(scope: Scope, trusted: Sequence[Network]) -> str:
    """The client's identity: the peer, or the first untrusted X-Forwarded-For hop."""
    client = scope.get("client")
    address = _parse_ip(client[0]) if client else None
    if address is None:
        return "unknown"
    if _trusted(address, trusted):
        for hop in reversed(_forwarded_for(scope)):
            parsed = _parse_ip(hop)
            if parsed is None:
                break  # garbage from a trusted hop: keep the last address we can vouch for
            address = parsed
            if not _trusted(address, trusted):
                break
    return identity(address)


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
