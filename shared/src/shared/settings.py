"""Settings every service reads: the environment and `.env`, validated once at start.

`load_settings()` turns a validation failure into `SettingsError`, whose message is one line
per bad variable, named as in the environment (``REDIS_PORT``) — never a traceback wall, and
never the value of a secret.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from shared.errors import SettingsError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+\s*)?(second|minute|hour|day)s?\s*$")
_PERIOD_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
SECRET_FIELDS: Final = frozenset({"redis_password", "service_token"})
URL_FIELDS: Final = frozenset({"redis_url", "cache_redis_url", "database_url"})


def parse_duration(value: object) -> float:
    """Seconds from `3s`, `250ms`, `10m`, `24h`, `7d` or a bare number of seconds."""
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
        raise ValueError("expected a duration such as 3s, 10m or 24h")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError("expected a duration such as 250ms, 3s, 10m, 24h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class RateSpec(BaseModel):
    """`<count>/<period>` such as `100/minute`; `10/30 seconds` is accepted too."""

    model_config = ConfigDict(frozen=True)

    limit: int = Field(gt=0)
    period: int = Field(gt=0, description="window length in seconds")

    @classmethod
    def parse(cls, value: object) -> RateSpec:
        if isinstance(value, RateSpec):
            return value
        match = _RATE.match(str(value))
        if match is None:
            raise ValueError("expected <count>/<second|minute|hour>, e.g. 100/minute")
        multiplier = int(match.group(2)) if match.group(2) else 1
        return cls(limit=int(match.group(1)), period=multiplier * _PERIOD_SECONDS[match.group(3)])

    def __str__(self) -> str:
        return f"{self.limit}/{self.period}s"


Rate = Annotated[RateSpec, NoDecode, BeforeValidator(RateSpec.parse)]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class CacheInvalidation(StrEnum):
    WRITE_AND_EVENT = "write+event"
    WRITE = "write"
    EVENT = "event"
    TTL = "ttl"

    @property
    def by_writer(self) -> bool:
        return self in {CacheInvalidation.WRITE, CacheInvalidation.WRITE_AND_EVENT}

    @property
    def by_event(self) -> bool:
        return self in {CacheInvalidation.EVENT, CacheInvalidation.WRITE_AND_EVENT}


class RateAlgorithm(StrEnum):
    SLIDING_WINDOW = "sliding-window"
    GCRA = "gcra"


def normalise_database_url(url: str) -> str:
    """Point bare `postgresql://` / `sqlite://` URLs at the async drivers we ship."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as postgresql://user@host/db or sqlite:///file.db")
    base = scheme.split("+", 1)[0]
    if base in {"postgres", "postgresql"}:
        return (
            f"postgresql+asyncpg://{rest}"
            if "+" not in scheme
            else url.replace("postgres://", "postgresql://", 1)
        )
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}" if "+" not in scheme else url
    raise ValueError(f"unsupported database scheme {scheme!r}: use postgresql or sqlite")


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


class Settings(BaseSettings):
    """Every variable of DESIGN.md's Settings section plus the knobs each mechanism needs."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    app_env: Literal["development", "test", "production"] = "production"

    # Redis, with the seed's names and defaults; REDIS_URL wins over them.
    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr = SecretStr("")
    redis_db: int = Field(0, ge=0)
    redis_max_retries: int = Field(3, ge=0)
    redis_pool_size: int = Field(10, ge=1)
    redis_min_idle_conns: int = Field(5, ge=0)
    redis_read_timeout: Duration = 3.0
    redis_write_timeout: Duration = 3.0
    redis_url: str | None = None
    cache_redis_url: str | None = None

    database_url: str = "sqlite+aiosqlite:///.devstack/app.db"
    database_pool_size: int = Field(10, ge=1)
    key_prefix: str = Field("app", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    # Cache.
    user_cache_ttl: Duration = 600.0
    list_cache_ttl: Duration = 300.0
    negative_cache_ttl: Duration = 5.0
    cache_lease_ttl: Duration = 2.0
    cache_lease_wait: Duration = 0.05
    cache_max_value_bytes: int = Field(1_048_576, ge=1)
    cache_invalidation: CacheInvalidation = CacheInvalidation.WRITE_AND_EVENT
    cache_warmup_ids: CommaList = []
    cache_warmup_recent: int = Field(0, ge=0)
    near_cache_size: int = Field(10_000, ge=0)
    near_cache_ttl: Duration = 2.0
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_reset_timeout: Duration = 2.0

    # Streams and the outbox relay.
    stream_maxlen: int = Field(1_000_000, ge=1000)
    outbox_poll_interval: Duration = 5.0
    outbox_batch_size: int = Field(500, ge=1)
    consumer_name: str | None = None
    stream_claim_idle: Duration = 30.0
    stream_max_deliveries: int = Field(5, ge=1)
    stream_max_records: int = Field(100, ge=1)
    stream_block: Duration = 1.0
    consumer_idle_limit: Duration = 3600.0
    housekeeping_interval: Duration = 60.0

    # Sessions.
    session_idle_ttl: Duration = 86400.0
    session_absolute_ttl: Duration = 604800.0
    session_max_per_user: int = Field(10, ge=1)
    session_service_url: str = "http://127.0.0.1:8001"
    session_service_timeout: Duration = 2.0
    service_token: SecretStr = SecretStr("")
    cookie_secure: bool | None = None

    # Rate limiting.
    rate_limit_enabled: bool = True
    rate_limit_algorithm: RateAlgorithm = RateAlgorithm.SLIDING_WINDOW
    rate_limit_default: Rate = RateSpec(limit=100, period=60)
    rate_limit_auth: Rate = RateSpec(limit=5, period=60)
    rate_limit_user: Rate = RateSpec(limit=60, period=60)
    rate_limit_fail_closed: CommaList = []
    trusted_proxies: Annotated[list[Network], NoDecode, BeforeValidator(_split_commas)] = []

    # Logging and ports.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    api_port: int = Field(8000, ge=1, le=65535)
    session_port: int = Field(8001, ge=1, le=65535)
    invalidator_port: int = Field(8002, ge=1, le=65535)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("redis_url", "cache_redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("cache_warmup_ids")
    @classmethod
    def _uuids(cls, value: list[str]) -> list[str]:
        from uuid import UUID  # noqa: PLC0415 - local: only this validator needs it

        return [str(UUID(item)) for item in value]

    @property
    def redis_dsn(self) -> str:
        """The data Redis: REDIS_URL, else one built from the REDIS_* parts."""
        if self.redis_url:
            return self.redis_url
        password = self.redis_password.get_secret_value()
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def cache_redis_dsn(self) -> str:
        """The cache Redis: CACHE_REDIS_URL, else the data Redis."""
        return self.cache_redis_url or self.redis_dsn

    @property
    def secure_cookies(self) -> bool:
        """COOKIE_SECURE when set, else on everywhere but development and test."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self.app_env == "production"

    def rate_fails_closed(self, policy: str) -> bool:
        return policy in self.rate_limit_fail_closed


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ("?",)
    field = str(loc[0])
    name = field.upper()
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if field in SECRET_FIELDS:
        return f"invalid setting {name}: {message}"
    shown = error.get("input")
    if isinstance(shown, str) and field in URL_FIELDS:
        shown = redact_url(shown)
    return f"invalid setting {name}={shown!r}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; raise `SettingsError` with one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors(include_url=False)]
        raise SettingsError("; ".join(lines)) from None
    except SourceError as exc:
        # e.g. a value that had to be JSON and was not; the message names the field.
        raise SettingsError(f"invalid setting: {exc}") from None
