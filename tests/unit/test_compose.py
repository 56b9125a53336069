"""docker-compose.yml against the settings: no Docker engine here, so the file is checked.

Every service has a healthcheck; dependencies wait for health; the app services' commands,
ports and environment agree with `StackSettings` (every variable is a field, every value loads),
and each is built from its own Dockerfile whose command matches the compose one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.settings import StackSettings
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
# service name → (import package, port field)
APPS: dict[str, tuple[str, str]] = {
    "api": ("api", "api_port"),
    "session": ("session_service", "session_port"),
    "invalidator": ("invalidator", "invalidator_port"),
}


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: the defaults."""
    return VARIABLE.sub(lambda m: m.group(2) or "", text)


COMPOSE: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_TEXT))
SERVICES: dict[str, Any] = COMPOSE["services"]


def default_port(field: str) -> int:
    return int(StackSettings.model_fields[field].default)


def command_of(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_the_services_of_the_design() -> None:
    assert set(SERVICES) == {"redis", "redis-cache", "postgres", *APPS}


def test_every_variable_has_a_default() -> None:
    for match in VARIABLE.finditer(COMPOSE_TEXT):
        assert match.group(2) is not None, f"${{{match.group(1)}}} has no default"
    assert "$" not in interpolate(COMPOSE_TEXT)


@pytest.mark.parametrize("name", sorted({"redis", "redis-cache", "postgres", *APPS}))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert len(check["test"]) > 1
    assert check["interval"]
    assert check["retries"] > 0


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health(name: str) -> None:
    for target, condition in SERVICES[name].get("depends_on", {}).items():
        assert target in SERVICES
        assert condition == {"condition": "service_healthy"}
        assert "healthcheck" in SERVICES[target]


def test_data_redis_persists_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert "--appendonly yes" in command_of(redis)
    assert "--maxmemory-policy noeviction" in command_of(redis)
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_cache_redis_is_bounded_lru_without_persistence() -> None:
    cache = SERVICES["redis-cache"]
    assert cache["image"] == "redis:7-alpine"
    assert "--maxmemory 256mb" in command_of(cache)
    assert "--maxmemory-policy allkeys-lru" in command_of(cache)
    assert "--appendonly no" in command_of(cache)
    assert "volumes" not in cache
    assert cache["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_has_a_volume_and_pg_isready() -> None:
    postgres = SERVICES["postgres"]
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    assert any("/var/lib/postgresql/data" in volume for volume in postgres["volumes"])
    assert set(COMPOSE["volumes"]) == {"redis-data", "postgres-data"}


@pytest.mark.parametrize("name", sorted(APPS))
def test_app_command_and_port_match_the_settings(name: str) -> None:
    package, port_field = APPS[name]
    port = default_port(port_field)
    command = command_of(SERVICES[name])
    assert f"uvicorn {package}.main:create_app --factory --host 0.0.0.0 --port {port}" in command
    published = [str(p) for p in SERVICES[name]["ports"]]
    assert len(published) == 1
    host, container = published[0].split(":")
    assert int(container) == port
    assert int(host.split("-")[0]) == port
    assert f"http://127.0.0.1:{port}/health" in " ".join(SERVICES[name]["healthcheck"]["test"])


@pytest.mark.parametrize("name", sorted(APPS))
def test_app_environment_is_made_of_settings_that_load(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {key: str(value) for key, value in SERVICES[name]["environment"].items()}
    fields = {field.upper() for field in StackSettings.model_fields}
    assert set(environment) <= fields, set(environment) - fields
    for key in fields:
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(StackSettings, _env_file=None)
    assert settings.redis_dsn == "redis://redis:6379/0"
    assert settings.cache_redis_dsn == "redis://redis-cache:6379/0"
    assert getattr(settings, APPS[name][1]) == default_port(APPS[name][1])
    if name == "api":
        assert settings.database_url.startswith("postgresql+asyncpg://app:")
        assert settings.database_url.endswith("@postgres:5432/app")
        assert settings.session_service_url == f"http://session:{default_port('session_port')}"


def test_the_invalidator_runs_two_instances() -> None:
    assert SERVICES["invalidator"]["deploy"]["replicas"] == 2


@pytest.mark.parametrize("name", sorted(APPS))
def test_each_app_is_built_from_its_dockerfile(name: str) -> None:
    build = SERVICES[name]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
    assert dockerfile.splitlines()[1] == "FROM python:3.11-slim"
    assert f"uv sync --frozen --no-dev --package {project['project']['name']}" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    image_command = yaml.safe_load(cmd.group(1))
    assert " ".join(image_command) == command_of(SERVICES[name])
