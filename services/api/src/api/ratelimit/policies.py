"""The api's rate policies and the routes they cover."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from api.config import ApiSettings
from shared.limiter import Policy

# Everything that creates an account or checks a password costs an argon2 hash and can tell
# whether an email is taken: the stricter `auth` policy, per client IP, on all of them.
AUTH_ROUTES: Final = frozenset(
    {("POST", "/v1/auth/register"), ("POST", "/v1/auth/login"), ("POST", "/v1/users")}
)
EXEMPT_PATHS: Final = frozenset({"/health", "/metrics"})


@dataclass(frozen=True, slots=True)
class Policies:
    default: Policy
    auth: Policy
    user: Policy
    fail_closed: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Policies:
        algorithm = settings.rate_limit_algorithm
        return cls(
            default=Policy.from_spec("default", settings.rate_limit_default, algorithm),
            auth=Policy.from_spec("auth", settings.rate_limit_auth, algorithm),
            user=Policy.from_spec("user", settings.rate_limit_user, algorithm),
            fail_closed=frozenset(settings.rate_limit_fail_closed),
        )

    def for_request(self, method: str, path: str) -> tuple[Policy, ...]:
        """The per-IP policies of a request, checked before the app (`user` comes later)."""
        if (method, path) in AUTH_ROUTES:
            return (self.default, self.auth)
        return (self.default,)

    def all(self) -> tuple[Policy, ...]:
        return (self.default, self.auth, self.user)
