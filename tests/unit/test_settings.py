"""Settings: every default, a bad value of each kind, secrets, URL precedence, start-up exit."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from api.config import ApiSettings
from devtools.settings import StackSettings
from invalidator.config import InvalidatorSettings
from session_service.config import SessionSettings
from shared.errors import SettingsError
from shared.settings import (
    CacheInvalidation,
    CommonSettings,
    RateAlgorithm,
    RateSpec,
    RedisMode,
    RedisTarget,
    load_settings,
    parse_duration,
    redact_url,
)

ROOT = Path(__file__).resolve().parents[2]

# Every field with its default. A new field fails `test_every_field_has_a_checked_default`
# until it is added here (and to .env.example and the README's table).
DEFAULTS: dict[str, Any] = {
    "app_env": "production",
    "redis_host": "localhost",
    "redis_port": 6379,
    "redis_db": 0,
    "redis_max_retries": 3,
    "redis_pool_size": 10,
    "redis_min_idle_conns": 5,
    "redis_read_timeout": 3.0,
    "redis_write_timeout": 3.0,
    "redis_url": None,
    "cache_redis_url": None,
    "redis_mode": RedisMode.STANDALONE,
    "cache_redis_mode": None,
    "redis_cluster_nodes": [],
    "redis_sentinels": [],
    "redis_sentinel_master": "mymaster",
    "database_url": "sqlite+aiosqlite:///.devstack/app.db",
    "database_pool_size": 10,
    "key_prefix": "app",
    "user_cache_ttl": 600.0,
    "list_cache_ttl": 300.0,
    "negative_cache_ttl": 5.0,
    "cache_lease_ttl": 2.0,
    "cache_lease_wait": 0.05,
    "cache_max_value_bytes": 1_048_576,
    "cache_invalidation": CacheInvalidation.WRITE_AND_EVENT,
    "cache_warmup_ids": [],
    "cache_warmup_recent": 0,
    "near_cache_size": 10_000,
    "near_cache_ttl": 2.0,
    "breaker_failure_threshold": 3,
    "breaker_reset_timeout": 2.0,
    "stream_maxlen": 1_000_000,
    "outbox_poll_interval": 5.0,
    "outbox_batch_size": 500,
    "outbox_linger": 0.005,
    "outbox_replica_wait": 0.25,
    "consumer_name": None,
    "stream_state_dir": None,
    "stream_claim_idle": 30.0,
    "stream_max_deliveries": 5,
    "stream_max_records": 100,
    "stream_block": 1.0,
    "consumer_idle_limit": 3600.0,
    "housekeeping_interval": 60.0,
    "dlq_maxlen": 100_000,
    "dlq_max_entry_bytes": 65_536,
    "session_idle_ttl": 86400.0,
    "session_absolute_ttl": 604800.0,
    "session_max_per_user": 10,
    "session_replica_wait": 0.25,
    "session_service_url": None,
    "session_service_timeout": 2.0,
    "cookie_secure": None,
    "rate_limit_enabled": True,
    "rate_limit_algorithm": RateAlgorithm.SLIDING_WINDOW,
    "rate_limit_default": RateSpec(limit=100, period=60),
    "rate_limit_auth": RateSpec(limit=5, period=60),
    "rate_limit_user": RateSpec(limit=60, period=60),
    "rate_limit_fail_closed": ["auth"],
    "trusted_proxies": [],
    "max_request_bytes": 1_048_576,
    "log_level": "INFO",
    "log_format": "json",
    "api_port": 8000,
    "session_port": 8001,
    "invalidator_port": 8002,
}
SECRETS = {"redis_password", "service_token"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of ours from the caller's environment, and no `.env` in the cwd."""
    for name in list(os.environ):
        if name.lower() in StackSettings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def load(**env: str) -> StackSettings:
    """Settings as a process would read them from these environment variables (with a
    service token, which production requires of the session service)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"SERVICE_TOKEN": "t" * 32, **env}.items():
            patch.setenv(name, value)
        return load_settings(StackSettings)


def error_for(name: str, value: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(**{name: value})
    return str(caught.value)


def test_every_field_has_a_checked_default() -> None:
    assert set(StackSettings.model_fields) == set(DEFAULTS) | SECRETS


COMMON = {"app_env", "redis_url", "cache_redis_url", "key_prefix", "log_level", "log_format"}


@pytest.mark.parametrize(
    ("cls", "own", "foreign"),
    [
        (CommonSettings, COMMON, {"database_url", "stream_block", "session_absolute_ttl"}),
        (
            ApiSettings,
            COMMON | {"database_url", "rate_limit_auth", "near_cache_size", "api_port"},
            {"stream_block", "session_absolute_ttl", "invalidator_port"},
        ),
        (
            SessionSettings,
            COMMON | {"stream_block", "session_absolute_ttl", "service_token", "session_port"},
            {"database_url", "rate_limit_auth", "invalidator_port"},
        ),
        (
            InvalidatorSettings,
            COMMON | {"stream_block", "invalidator_port"},
            {"database_url", "session_absolute_ttl", "service_token"},
        ),
    ],
)
def test_each_service_reads_only_its_own_variables(
    cls: type[CommonSettings], own: set[str], foreign: set[str]
) -> None:
    assert own <= set(cls.model_fields)
    assert not foreign & set(cls.model_fields)


def test_session_service_url_follows_the_session_port() -> None:
    assert load().session_service == "http://127.0.0.1:8001"
    assert load(SESSION_PORT="9101").session_service == "http://127.0.0.1:9101"
    explicit = load(SESSION_PORT="9101", SESSION_SERVICE_URL="http://session:8001/")
    assert explicit.session_service == "http://session:8001"


def test_production_session_service_needs_a_long_service_token() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(SessionSettings)
    assert str(caught.value).startswith("invalid setting SERVICE_TOKEN: APP_ENV=production needs")
    with pytest.raises(SettingsError):
        load_settings(SessionSettings, service_token="x" * 31)
    assert load_settings(SessionSettings, service_token="x" * 32).service_token
    assert (
        load_settings(SessionSettings, app_env="development").service_token.get_secret_value() == ""
    )


@pytest.mark.parametrize(("field", "expected"), sorted(DEFAULTS.items()))
def test_default(field: str, expected: Any) -> None:
    assert getattr(load(), field) == expected


def test_secret_defaults_are_empty_and_hidden() -> None:
    settings = load(APP_ENV="development", SERVICE_TOKEN="")
    for field in SECRETS:
        assert getattr(settings, field).get_secret_value() == ""
    token = "tok-" + "9" * 32
    shown = repr(load(REDIS_PASSWORD="hunter2", SERVICE_TOKEN=token))
    assert "hunter2" not in shown
    assert token not in shown


def test_seed_names_are_read_from_the_environment() -> None:
    settings = load(
        REDIS_HOST="redis.internal",
        REDIS_PORT="6380",
        REDIS_DB="2",
        REDIS_POOL_SIZE="20",
        REDIS_READ_TIMEOUT="250ms",
        SESSION_IDLE_TTL="30m",
        SESSION_ABSOLUTE_TTL="7d",
        RATE_LIMIT_AUTH="10/hour",
        TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.7,::1",
        CACHE_INVALIDATION="ttl",
        LOG_LEVEL="debug",
    )
    assert settings.redis_dsn == "redis://redis.internal:6380/2"
    assert settings.redis_pool_size == 20
    assert settings.redis_read_timeout == 0.25
    assert settings.session_idle_ttl == 1800.0
    assert settings.session_absolute_ttl == 604800.0
    assert settings.rate_limit_auth == RateSpec(limit=10, period=3600)
    assert settings.trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
    ]
    assert settings.cache_invalidation is CacheInvalidation.TTL
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3.0), ("250ms", 0.25), ("10m", 600.0), ("24h", 86400.0), ("7d", 604800.0), ("5", 5.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("REDIS_PORT", "abc", "valid integer"),
        ("REDIS_PORT", "70000", "less than or equal to 65535"),
        ("REDIS_POOL_SIZE", "0", "greater than or equal to 1"),
        ("REDIS_READ_TIMEOUT", "3x", "expected a duration"),
        ("SESSION_IDLE_TTL", "-5s", "expected a duration"),
        ("USER_CACHE_TTL", "0", "greater than 0"),
        ("RATE_LIMIT_AUTH", "5/fortnight", "expected <count>/<second|minute|hour>"),
        ("RATE_LIMIT_DEFAULT", "0/minute", "greater than 0"),
        ("CACHE_INVALIDATION", "sometimes", "'write+event', 'write', 'event' or 'ttl'"),
        ("RATE_LIMIT_ALGORITHM", "leaky", "'sliding-window' or 'gcra'"),
        ("LOG_FORMAT", "xml", "'json' or 'console'"),
        ("REDIS_URL", "http://localhost:6379", "redis://"),
        ("REDIS_URL", "redis://localhost:99999/0", "port"),
        ("CACHE_REDIS_URL", "memcached://x", "redis://"),
        ("DATABASE_URL", "mysql://db/app", "unsupported database scheme"),
        ("SESSION_SERVICE_URL", "session:8001", "http://"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33", "'10.0.0.0/33' is not an IP address"),
        ("RATE_LIMIT_ENABLED", "maybe", "valid boolean"),
        ("COOKIE_SECURE", "perhaps", "valid boolean"),
        ("KEY_PREFIX", "app:x", "pattern"),
        ("KEY_PREFIX", "", "pattern"),
        ("CACHE_WARMUP_IDS", "not-a-uuid", "UUID"),
        ("DLQ_MAXLEN", "0", "greater than or equal to 1"),
        ("OUTBOX_LINGER", "2s", "less than or equal to 1"),
        ("DLQ_MAX_ENTRY_BYTES", "100", "greater than or equal to 1024"),
        ("REDIS_MODE", "replicated", "'standalone', 'cluster' or 'sentinel'"),
        ("CACHE_REDIS_MODE", "Cluster", "'standalone', 'cluster' or 'sentinel'"),
        ("REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2", "'10.0.0.2' is not host:port"),
        ("REDIS_SENTINELS", "s1:26379, s2:0", "'s2:0' is not host:port"),
        ("REDIS_SENTINEL_MASTER", "my master", "pattern"),
    ],
)
def test_bad_value_names_the_variable_on_one_line(name: str, value: str, problem: str) -> None:
    message = error_for(name, value)
    assert message.startswith(f"invalid setting {name}=")
    assert problem in message
    assert "\n" not in message


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load(REDIS_PORT="x", LOG_FORMAT="xml")
    message = str(caught.value)
    assert "REDIS_PORT" in message
    assert "LOG_FORMAT" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "redis://admin:hunter2@localhost:notaport/0"),
        ("REDIS_URL", "http://admin:hunter2@localhost:6379/0"),
        ("CACHE_REDIS_URL", "http://:hunter2@cache:6379"),
        ("DATABASE_URL", "mysql://app:hunter2@db/app"),
        ("SESSION_SERVICE_URL", "ftp://svc:hunter2@session"),
    ],
)
def test_secrets_in_urls_are_never_echoed(name: str, value: str) -> None:
    message = error_for(name, value)
    assert name in message
    assert "hunter2" not in message
    assert ":***@" in message


def test_redact_url_keeps_the_user_and_host() -> None:
    assert redact_url("rediss://alice:p%40ss@h:6380/1") == "rediss://alice:***@h:6380/1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_redis_url_wins_over_the_parts() -> None:
    settings = load(REDIS_URL="redis://other:7000/3", REDIS_HOST="ignored", REDIS_PORT="1")
    assert settings.redis_dsn == "redis://other:7000/3"


def test_parts_build_the_url_with_a_quoted_password() -> None:
    settings = load(REDIS_HOST="h", REDIS_PORT="6380", REDIS_DB="4", REDIS_PASSWORD="p@ss:/x")
    assert settings.redis_dsn == "redis://:p%40ss%3A%2Fx@h:6380/4"


def test_cache_redis_defaults_to_the_data_redis() -> None:
    assert load().cache_redis_dsn == "redis://localhost:6379/0"
    assert load(REDIS_URL="redis://data:1/0").cache_redis_dsn == "redis://data:1/0"
    split = load(REDIS_URL="redis://data:1/0", CACHE_REDIS_URL="redis://cache:2/0")
    assert split.redis_dsn == "redis://data:1/0"
    assert split.cache_redis_dsn == "redis://cache:2/0"


def test_the_cache_role_takes_the_data_mode_unless_told() -> None:
    assert load().redis_target == RedisTarget(RedisMode.STANDALONE, "redis://localhost:6379/0")
    assert load(REDIS_MODE="cluster").cache_mode is RedisMode.CLUSTER
    split = load(REDIS_MODE="cluster", CACHE_REDIS_MODE="standalone")
    assert split.redis_target.mode is RedisMode.CLUSTER
    assert split.cache_redis_target.mode is RedisMode.STANDALONE


def test_cluster_seeds_are_the_url_and_the_node_list() -> None:
    settings = load(
        REDIS_MODE="cluster",
        REDIS_URL="redis://:pw@10.0.0.1:7000",
        REDIS_CLUSTER_NODES="10.0.0.2:7000, [fd00::3]:7000",
    )
    assert settings.redis_target == RedisTarget(
        RedisMode.CLUSTER,
        "redis://:pw@10.0.0.1:7000",
        seeds=(("10.0.0.2", 7000), ("fd00::3", 7000)),
    )


def test_sentinel_mode_finds_the_master_through_the_sentinels() -> None:
    settings = load(
        REDIS_MODE="sentinel",
        REDIS_SENTINELS="s1:26379,s2:26379,s3:26379",
        REDIS_SENTINEL_MASTER="data",
        REDIS_URL="redis://:pw@/2",  # credentials and db only: the sentinels name the host
    )
    target = settings.redis_target
    assert target.mode is RedisMode.SENTINEL
    assert target.sentinels == (("s1", 26379), ("s2", 26379), ("s3", 26379))
    assert (target.master, target.url) == ("data", "redis://:pw@/2")
    assert settings.cache_redis_target == target


@pytest.mark.parametrize("mode_variable", ["REDIS_MODE", "CACHE_REDIS_MODE"])
def test_sentinel_mode_without_sentinels_names_redis_sentinels(mode_variable: str) -> None:
    message = error_for(mode_variable, "sentinel")
    assert message.startswith("invalid setting REDIS_SENTINELS: required when REDIS_MODE")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_URL": "redis://h:7000/1"}, "REDIS_URL"),
        ({"REDIS_DB": "2"}, "REDIS_DB"),
        ({"CACHE_REDIS_URL": "redis://h:7000/3"}, "CACHE_REDIS_URL"),
    ],
)
def test_a_cluster_has_only_database_0(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(REDIS_MODE="cluster", **env)
    assert str(caught.value).startswith(f"invalid setting {named}=")
    assert "only database 0" in str(caught.value)


def test_redis_db_is_not_checked_when_a_url_replaces_it() -> None:
    settings = load(REDIS_MODE="cluster", REDIS_URL="redis://h:7000", REDIS_DB="2")
    assert settings.redis_target.url == "redis://h:7000"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite:///tmp/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_url_is_normalised_to_the_async_driver(given: str, expected: str) -> None:
    assert load(DATABASE_URL=given).database_url == expected


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEY_PREFIX=fromfile\nREDIS_PORT=6390\n")
    settings = load(REDIS_PORT="6391")
    assert settings.key_prefix == "fromfile"
    assert settings.redis_port == 6391


def test_cookies_are_secure_outside_development() -> None:
    assert load().secure_cookies is True
    assert load(APP_ENV="development").secure_cookies is False
    assert load(APP_ENV="development", COOKIE_SECURE="true").secure_cookies is True
