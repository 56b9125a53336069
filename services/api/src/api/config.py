"""The api's settings: `CommonSettings` plus the database, cache, outbox, sign-in and rate
limits. Read once, in the factory."""

from __future__ import annotations

from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import Field, SecretStr, field_validator

from shared.settings import (
    CacheInvalidation,
    CommaList,
    CommonSettings,
    Duration,
    NetworkList,
    Rate,
    RateAlgorithm,
    RateSpec,
    check_http_url,
    check_replica_wait,
    normalise_database_url,
    settings_or_exit,
)

SERVICE_NAME: Final = "api"


class ApiSettings(CommonSettings):
    database_url: str = "sqlite+aiosqlite:///.devstack/app.db"
    database_pool_size: int = Field(10, ge=1)

    # Cache.
    user_cache_ttl: Annotated[Duration, Field(gt=0)] = 600.0
    list_cache_ttl: Annotated[Duration, Field(gt=0)] = 300.0
    negative_cache_ttl: Duration = 5.0
    cache_lease_ttl: Annotated[Duration, Field(gt=0)] = 2.0
    cache_lease_wait: Duration = 0.05
    cache_max_value_bytes: int = Field(1_048_576, ge=1)
    cache_invalidation: CacheInvalidation = CacheInvalidation.WRITE_AND_EVENT
    cache_warmup_ids: CommaList = Field(default_factory=list)
    cache_warmup_recent: int = Field(0, ge=0)
    near_cache_size: int = Field(10_000, ge=0)
    near_cache_ttl: Duration = 2.0

    # The outbox relay.
    outbox_poll_interval: Duration = 5.0
    outbox_batch_size: int = Field(500, ge=1)
    # After a commit wakes it, the relay waits this long so the commits that follow share its
    # round (one transaction, one XADD script, one wake-up per consumer group); 0: at once.
    outbox_linger: Annotated[Duration, Field(ge=0, le=1)] = 0.005
    # How long the relay waits for a replica to hold a published batch (WAIT) before it marks
    # its rows sent; 0 turns the wait off. Unconfirmed rows are published again.
    outbox_replica_wait: Annotated[Duration, Field(ge=0, validate_default=False)] = 0.25

    # Sign-in: the session service and the cookie.
    session_idle_ttl: Annotated[Duration, Field(gt=0)] = 86400.0
    session_service_url: str | None = None
    session_service_timeout: Duration = 2.0
    service_token: SecretStr = SecretStr("")
    cookie_secure: bool | None = None

    # Rate limiting.
    rate_limit_enabled: bool = True
    rate_limit_algorithm: RateAlgorithm = RateAlgorithm.SLIDING_WINDOW
    rate_limit_default: Rate = RateSpec(limit=100, period=60)
    rate_limit_auth: Rate = RateSpec(limit=5, period=60)
    rate_limit_user: Rate = RateSpec(limit=60, period=60)
    # Sign-in must not fall back to a per-instance limit: it refuses (503) while Redis is down.
    rate_limit_fail_closed: CommaList = Field(default_factory=lambda: ["auth"])
    trusted_proxies: NetworkList = Field(default_factory=list)

    api_port: int = Field(8000, ge=1, le=65535)
    # Where SESSION_SERVICE_URL points when it is not set.
    session_port: int = Field(8001, ge=1, le=65535)

    _wait_within_read_timeout = field_validator("outbox_replica_wait")(check_replica_wait)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("session_service_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        return None if not value else check_http_url(value)

    @field_validator("cache_warmup_ids")
    @classmethod
    def _uuids(cls, value: list[str]) -> list[str]:
        return [str(UUID(item)) for item in value]

    @property
    def session_service(self) -> str:
        """SESSION_SERVICE_URL, else the session service on this host's SESSION_PORT."""
        return self.session_service_url or f"http://127.0.0.1:{self.session_port}"

    @property
    def secure_cookies(self) -> bool:
        """COOKIE_SECURE when set, else on everywhere but development and test."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self.app_env == "production"


def load(**overrides: Any) -> ApiSettings:
    """The environment's settings, or one line naming the bad variable and exit code 2."""
    return settings_or_exit(ApiSettings, **overrides)
