"""Policies from settings, and what a policy accepts (pure)."""

from __future__ import annotations

import pytest

from api.config import ApiSettings
from api.ratelimit.policies import Policies
from shared.limiter import Policy
from shared.settings import RateAlgorithm, load_settings


def test_policies_follow_the_settings() -> None:
    settings = load_settings(
        ApiSettings,
        _env_file=None,
        rate_limit_default="10/second",
        rate_limit_auth="3/minute",
        rate_limit_user="100/hour",
        rate_limit_algorithm="gcra",
        rate_limit_fail_closed="auth,user",
    )
    policies = Policies.from_settings(settings)
    assert policies.default == Policy("default", 10, 1.0, RateAlgorithm.GCRA)
    assert policies.auth == Policy("auth", 3, 60.0, RateAlgorithm.GCRA)
    assert policies.user == Policy("user", 100, 3600.0, RateAlgorithm.GCRA)
    assert policies.fail_closed == {"auth", "user"}


def test_defaults_are_the_designs() -> None:
    policies = Policies.from_settings(load_settings(ApiSettings, _env_file=None))
    assert (policies.default.limit, policies.default.period) == (100, 60.0)
    assert (policies.auth.limit, policies.auth.period) == (5, 60.0)
    assert (policies.user.limit, policies.user.period) == (60, 60.0)
    assert policies.default.algorithm is RateAlgorithm.SLIDING_WINDOW
    assert policies.fail_closed == frozenset({"auth"})  # sign-in never falls back to per-instance


@pytest.mark.parametrize(("limit", "period"), [(0, 60.0), (5, 0.0)])
def test_a_policy_needs_a_limit_and_a_period(limit: int, period: float) -> None:
    with pytest.raises(ValueError, match="policy"):
        Policy("p", limit, period)


def test_period_in_milliseconds() -> None:
    assert Policy("p", 1, 0.5).period_ms == 500
