"""The session service's settings: `StreamSettings` (it consumes group `session`) plus
session lifetimes and the service token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from shared.settings import (
    Duration,
    StreamSettings,
    check_replica_wait,
    replica_wait_ms,
    settings_or_exit,
)

SERVICE: Final = "session"
# 32 characters of a random token are far beyond guessing over HTTP.
MIN_TOKEN_LENGTH: Final = 32


class SessionSettings(StreamSettings):
    session_idle_ttl: Annotated[Duration, Field(gt=0)] = 86400.0
    session_absolute_ttl: Annotated[Duration, Field(gt=0)] = 604800.0
    session_max_per_user: int = Field(10, ge=1)
    # How long a create, rotate, destroy or revoke waits for a replica to hold it (WAIT);
    # 0 turns the wait off (docs/decisions/0033-session-writes-wait-for-a-replica.md). Only a
    # value that was set is checked against REDIS_READ_TIMEOUT: the default gives way to a
    # short read timeout instead (`Timeouts.of`).
    session_replica_wait: Annotated[Duration, Field(ge=0, validate_default=False)] = 0.25
    service_token: SecretStr = SecretStr("")
    session_port: int = Field(8001, ge=1, le=65535)

    @field_validator("service_token")
    @classmethod
    def _token_in_production(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Without a token anyone who can reach the port mints sessions for any user.
        if info.data.get("app_env") == "production" and (
            len(value.get_secret_value()) < MIN_TOKEN_LENGTH
        ):
            raise ValueError(
                f"APP_ENV=production needs a token of at least {MIN_TOKEN_LENGTH} characters"
            )
        return value

    _wait_within_read_timeout = field_validator("session_replica_wait")(check_replica_wait)


def load(**overrides: Any) -> SessionSettings:
    """The environment's settings, or one line naming the bad variable and exit code 2."""
    return settings_or_exit(SessionSettings, **overrides)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """SESSION_IDLE_TTL / SESSION_ABSOLUTE_TTL / SESSION_REPLICA_WAIT in whole milliseconds,
    as the scripts and WAIT use them."""

    idle_ms: int
    absolute_ms: int
    replica_wait_ms: int

    @classmethod
    def of(cls, settings: SessionSettings) -> Timeouts:
        idle = max(1, round(settings.session_idle_ttl * 1000))
        absolute = max(1, round(settings.session_absolute_ttl * 1000))
        wait = replica_wait_ms(settings.session_replica_wait, settings.redis_read_timeout)
        # An idle timeout longer than the absolute one would never apply: clamp it.
        return cls(idle_ms=min(idle, absolute), absolute_ms=absolute, replica_wait_ms=wait)
