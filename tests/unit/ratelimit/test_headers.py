"""Rate-limit response headers from decisions (pure)."""

from __future__ import annotations

from shared.limiter import Decision, Policy
from shared.limiter.http import rate_limit_headers

NOW = 1_800_000_000.25


def decision(limit: int, remaining: int, *, allowed: bool = True, retry: float = 0.0) -> Decision:
    return Decision(allowed, limit, remaining, reset=NOW + 12.5, retry_after=retry, now=NOW)


def test_one_policy() -> None:
    headers = dict(rate_limit_headers([(Policy("default", 100, 60), decision(100, 42))]))
    assert headers == {
        "x-ratelimit-limit": "100",
        "x-ratelimit-remaining": "42",
        "x-ratelimit-reset": str(1_800_000_013),  # rounded up to whole unix seconds
        "ratelimit-policy": '"default";q=100;w=60',
        "ratelimit": '"default";r=42;t=13',
    }


def test_the_tightest_policy_speaks_and_every_policy_is_listed() -> None:
    applied = [
        (Policy("default", 100, 60), decision(100, 90)),
        (Policy("auth", 5, 60), decision(5, 1)),
    ]
    headers = dict(rate_limit_headers(applied))
    assert headers["x-ratelimit-limit"] == "5"
    assert headers["x-ratelimit-remaining"] == "1"
    assert headers["ratelimit-policy"] == '"default";q=100;w=60, "auth";q=5;w=60'
    assert headers["ratelimit"] == '"default";r=90;t=13, "auth";r=1;t=13'
    assert "retry-after" not in headers


def test_a_denial_wins_and_adds_retry_after_in_whole_seconds() -> None:
    applied = [
        (Policy("auth", 5, 60), decision(5, 3)),
        (Policy("user", 60, 60), decision(60, 0, allowed=False, retry=0.2)),
    ]
    headers = dict(rate_limit_headers(applied))
    assert headers["x-ratelimit-limit"] == "60"
    assert headers["retry-after"] == "1"  # never 0: a client would retry at once


def test_no_decision_no_headers() -> None:
    assert rate_limit_headers([]) == []
