"""Settings every service reads: the environment and `.env`, validated once at start.

`load_settings()` turns a validation failure into `SettingsError`, whose message is one line
per bad variable, named as in the environment (``REDIS_PORT``) — never a traceback wall, and
never the value of a secret.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
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
URL_FIELDS: Final = frozenset(
    {"redis_url", "cache_redis_url", "database_url", "session_service_url"}
)
# `scheme://user:password@` — the password part, wherever it sits in a text. It runs to the
# last `@` before a space or the next URL, so a password with an unencoded `@` or `/` is
# hidden whole, not cut at its first `@`.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?:(?!://)\S)*@")
# `?password=…`: how redis-py takes the password of a `unix://` socket URL.
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>[?&](?:password|passwd|pwd)=)[^&#\s]*")


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


def parse_networks(value: object) -> object:
    """`10.0.0.0/8, 192.168.1.7, ::1` → networks; a bare address is a /32 (or /128)."""
    items = _split_commas(value)
    if not isinstance(items, list):
        return items
    networks: list[Network] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        try:
            # strict=False: `10.0.0.1/24` means the network it sits in, as operators write it.
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return networks


NetworkList = Annotated[list[Network], NoDecode, BeforeValidator(parse_networks)]


HostPort = tuple[str, int]


def parse_host_port(text: str) -> HostPort:
    """`host:port` (or `[v6-address]:port`) → `(host, port)`."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not host:port")
    return host, int(port)


def parse_host_ports(value: object) -> object:
    items = _split_commas(value)
    if not isinstance(items, list):
        return items
    return [item if isinstance(item, tuple) else parse_host_port(str(item)) for item in items]


HostPortList = Annotated[list[HostPort], NoDecode, BeforeValidator(parse_host_ports)]


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


class RedisMode(StrEnum):
    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where one Redis role lives; `shared.connections.make_redis` turns it into a client.

    `url`: standalone, the server; cluster, one seed node (more in `seeds`) and the
    credentials; sentinel, only the credentials, the database number and TLS (its host is
    ignored: the sentinels name the master).
    """

    mode: RedisMode
    url: str
    seeds: tuple[HostPort, ...] = ()
    sentinels: tuple[HostPort, ...] = ()
    master: str = "mymaster"


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


def redact_url(text: str) -> str:
    """The text with the password of every URL in it replaced by `***`.

    A regex rather than `urlsplit`, so a malformed URL (a bad port, say) is redacted too.
    """
    return _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", text))


class CommonSettings(BaseSettings):
    """What every service and tool reads: Redis (both roles), the key prefix, breakers,
    request bounds and logging. Each service subclasses it with its own variables.

    Fields are the environment variables, lower-cased (`REDIS_PORT` → `redis_port`).
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    app_env: Literal["development", "test", "production"] = "production"

    # Redis, with the seed's names and defaults; REDIS_URL wins over them. The topology comes
    # first: the validators of the fields after it check them against the mode.
    redis_mode: RedisMode = RedisMode.STANDALONE
    cache_redis_mode: RedisMode | None = None
    redis_url: str | None = None
    cache_redis_url: str | None = None
    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr = SecretStr("")
    redis_db: int = Field(0, ge=0)
    redis_max_retries: int = Field(3, ge=0)
    redis_pool_size: int = Field(10, ge=1)
    redis_min_idle_conns: int = Field(5, ge=0)
    redis_read_timeout: Duration = 3.0
    redis_write_timeout: Duration = 3.0
    redis_cluster_nodes: HostPortList = Field(default_factory=list)
    # validate_default: sentinel mode without sentinels is an error even when it is unset.
    redis_sentinels: Annotated[HostPortList, Field(validate_default=True)] = Field(
        default_factory=list
    )
    redis_sentinel_master: str = Field("mymaster", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    key_prefix: str = Field("app", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_reset_timeout: Duration = 2.0
    # Streams are capped (XADD MAXLEN ~) by every publisher and by DLQ replays.
    stream_maxlen: int = Field(1_000_000, ge=1000)
    # Every request body is bounded (declared or streamed): 413 beyond this many bytes.
    max_request_bytes: int = Field(1_048_576, ge=1)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", "cache_redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        mode = _mode_of(info.data, cache=info.field_name == "cache_redis_url")
        if mode is RedisMode.STANDALONE:
            _check_url(value, {"redis", "rediss", "unix"})
        else:
            # Sentinel: the URL carries credentials and the db only, so it needs no host.
            _check_url(value, {"redis", "rediss"}, host=mode is RedisMode.CLUSTER)
        if mode is RedisMode.CLUSTER and _url_db(value) != 0:
            raise ValueError("a Redis Cluster has only database 0")
        return value

    @field_validator("redis_db")
    @classmethod
    def _cluster_db(cls, value: int, info: ValidationInfo) -> int:
        data = info.data
        # REDIS_DB counts only where no URL replaces it: the data role, or a cache role
        # that falls back to the data Redis.
        data_cluster = _mode_of(data, cache=False) is RedisMode.CLUSTER
        cache_cluster = _mode_of(data, cache=True) is RedisMode.CLUSTER
        in_use = not data.get("redis_url") and (
            data_cluster or (cache_cluster and not data.get("cache_redis_url"))
        )
        if value != 0 and in_use:
            raise ValueError("a Redis Cluster has only database 0")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_for_sentinel_mode(
        cls, value: list[HostPort], info: ValidationInfo
    ) -> list[HostPort]:
        modes = {_mode_of(info.data, cache=False), _mode_of(info.data, cache=True)}
        if not value and RedisMode.SENTINEL in modes:
            raise ValueError(
                "required when REDIS_MODE or CACHE_REDIS_MODE is sentinel: "
                "the sentinels as comma-separated host:port"
            )
        return value

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
    def cache_mode(self) -> RedisMode:
        """CACHE_REDIS_MODE, else REDIS_MODE."""
        return self.cache_redis_mode or self.redis_mode

    @property
    def redis_target(self) -> RedisTarget:
        """The data role: its mode, URL and, by mode, cluster seeds or sentinels."""
        return self._target(self.redis_mode, self.redis_dsn)

    @property
    def cache_redis_target(self) -> RedisTarget:
        """The cache role, as `redis_target` (a sentinel cache shares the sentinels)."""
        return self._target(self.cache_mode, self.cache_redis_dsn)

    def _target(self, mode: RedisMode, url: str) -> RedisTarget:
        if mode is RedisMode.CLUSTER:
            return RedisTarget(mode, url, seeds=tuple(self.redis_cluster_nodes))
        if mode is RedisMode.SENTINEL:
            sentinels = tuple(self.redis_sentinels)
            return RedisTarget(mode, url, sentinels=sentinels, master=self.redis_sentinel_master)
        return RedisTarget(mode, url)


class StreamSettings(CommonSettings):
    """`CommonSettings` plus what a consumer group member needs (session, invalidator,
    `platformctl`)."""

    consumer_name: str | None = None
    stream_state_dir: str | None = None
    stream_claim_idle: Duration = 30.0
    stream_max_deliveries: int = Field(5, ge=1)
    stream_max_records: int = Field(100, ge=1)
    stream_block: Duration = 1.0
    consumer_idle_limit: Duration = 3600.0
    housekeeping_interval: Duration = 60.0
    # The dead-letter stream: approximate MAXLEN, and the bytes of one entry a letter keeps
    # (a bigger entry is kept truncated and cannot be replayed).
    dlq_maxlen: int = Field(100_000, ge=1)
    dlq_max_entry_bytes: int = Field(65_536, ge=1024)


def check_replica_wait(value: float, info: ValidationInfo) -> float:
    """A `*_REPLICA_WAIT` that was set must be shorter than REDIS_READ_TIMEOUT: WAIT's answer
    is a reply like any other, and the socket's timeout must outlast it."""
    read_timeout = info.data.get("redis_read_timeout")
    if read_timeout is not None and value >= read_timeout:
        raise ValueError(f"must be shorter than REDIS_READ_TIMEOUT ({read_timeout:g}s)")
    return value


def replica_wait_ms(wait: float, read_timeout: float) -> int:
    """A `*_REPLICA_WAIT` in ms; an unset default gives way to a shorter read timeout."""
    if wait >= read_timeout:  # the default only: a value that was set was checked
        wait = read_timeout / 2
    return round(wait * 1000)


def check_http_url(value: str) -> str:
    """An `http://` or `https://` URL without its trailing slash, or `ValueError`."""
    _check_url(value, {"http", "https"})
    return value.rstrip("/")


def _mode_of(data: dict[str, Any], *, cache: bool) -> RedisMode:
    """The mode of a role from the fields validated so far (standalone if that one was bad)."""
    mode = data.get("redis_mode") or RedisMode.STANDALONE
    return (data.get("cache_redis_mode") or mode) if cache else mode


def _url_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def _check_url(value: str, schemes: set[str], *, host: bool = True) -> None:
    parts = urlsplit(value)
    wanted = ", ".join(f"{scheme}://" for scheme in sorted(schemes))
    if parts.scheme not in schemes:
        raise ValueError(f"expected a URL starting with {wanted}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError:
        raise ValueError("the port is not a number between 0 and 65535") from None
    if host and parts.scheme != "unix" and not parts.hostname:
        raise ValueError("the URL has no host")


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ("?",)
    field = str(loc[0])
    name = field.upper()
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if field in SECRET_FIELDS:
        return f"invalid setting {name}: {message}"
    shown = error.get("input")
    if shown == []:  # unset, or set to nothing: there is no value to show
        return f"invalid setting {name}: {message}"
    if isinstance(shown, str) and field in URL_FIELDS:
        shown = redact_url(shown)
    return f"invalid setting {name}={shown!r}: {message}"


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S], /, **overrides: Any) -> S:
    """Read the environment into `cls`; raise `SettingsError` naming every bad variable,
    on one line."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines: dict[str, str] = {}
        for err in exc.errors(include_url=False):
            # A union type reports once per member: keep the first message per variable.
            lines.setdefault(str((err.get("loc") or ("?",))[0]), _describe(dict(err)))
        raise SettingsError("; ".join(lines.values())) from None
    except SourceError as exc:
        # A value that had to be JSON and was not; pydantic-settings names the field.
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1).upper() if found else "?"
        raise SettingsError(f"invalid setting {name}: not valid JSON") from None


def settings_or_exit(cls: type[S], /, **overrides: Any) -> S:
    """`load_settings()` for a process start: a bad value prints one line and exits 2.

    A traceback would bury the one fact the operator needs: which variable, and why.
    """
    try:
        return load_settings(cls, **overrides)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
