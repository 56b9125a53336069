"""docker-compose.yml, services/Dockerfile and the nginx config, checked against each other and the
settings. (`make compose-test` builds and runs the stack for real; this runs everywhere.)

The stack: nginx (`proxy`, the only published port) in front of two api replicas; a one-shot
`migrate` the api waits for; the session service internal, with a required SERVICE_TOKEN; two
invalidators; two Redis roles; PostgreSQL with a volume. Every long-running service has a
healthcheck, every dependency waits for health (or for `migrate` to finish), the app services'
environment is made of settings that load (`StackSettings`; `ApiSettings` for `migrate`), and
each image's command is the compose one.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.config import ApiSettings
from devtools.settings import StackSettings
from shared.settings import load_settings
from shared.tracing import exporting

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
NGINX_TEXT = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
NGINX = "\n".join(line.split("#")[0] for line in NGINX_TEXT.splitlines())  # directives only
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-|:?\?)([^}]*))?\}")
# Required variables (`${NAME:?message}`) and what the test gives them.
REQUIRED = {"SERVICE_TOKEN": "t" * 40}
# service name → (import package, port field)
APPS: dict[str, tuple[str, str]] = {
    "api": ("api", "api_port"),
    "session": ("session_service", "session_port"),
    "invalidator": ("invalidator", "invalidator_port"),
}
LONG_RUNNING = sorted({"proxy", "redis", "redis-cache", "postgres", *APPS})


def interpolate(text: str) -> str:
    """Compose's interpolation with an empty environment: defaults, and REQUIRED's values."""

    def value(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        if kind and "?" in kind:
            return REQUIRED[name]
        return default or ""

    return VARIABLE.sub(value, text)


COMPOSE: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_TEXT))
SERVICES: dict[str, Any] = COMPOSE["services"]


def default_port(field: str) -> int:
    return int(StackSettings.model_fields[field].default)


def command_of(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_the_services_of_the_stack() -> None:
    assert set(SERVICES) == {"proxy", "migrate", "redis", "redis-cache", "postgres", *APPS}


def test_every_variable_has_a_default_but_the_service_token() -> None:
    for match in VARIABLE.finditer(COMPOSE_TEXT):
        name, kind, _ = match.groups()
        assert kind is not None, f"${{{name}}} has neither a default nor a required message"
        assert ("?" in kind) == (name in REQUIRED), f"${{{name}}}: {kind}"
    assert "$" not in interpolate(COMPOSE_TEXT)
    # No default token anyone could guess: compose refuses to start without one.
    assert re.search(r"SERVICE_TOKEN: \$\{SERVICE_TOKEN:\?[^}]+\}", COMPOSE_TEXT)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck_and_restarts(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert len(check["test"]) > 1
    assert check["interval"]
    assert check["retries"] > 0
    assert SERVICES[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health_or_for_migrations(name: str) -> None:
    for target, condition in SERVICES[name].get("depends_on", {}).items():
        assert target in SERVICES
        if target == "migrate":
            assert condition == {"condition": "service_completed_successfully"}
        else:
            assert condition["condition"] == "service_healthy"
            assert "healthcheck" in SERVICES[target]


def test_migrations_run_once_in_a_one_shot_service_the_api_waits_for() -> None:
    migrate, api = SERVICES["migrate"], SERVICES["api"]
    assert command_of(migrate) == "python -m api.migrate"
    assert migrate["image"] == api["image"]
    assert "build" not in migrate  # built once, by the api service
    assert migrate["pull_policy"] == "never"
    assert migrate["restart"] == "no"
    assert "ports" not in migrate
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert api["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert migrate["environment"]["DATABASE_URL"] == api["environment"]["DATABASE_URL"]
    for name in APPS:  # not in any replica's start any more
        assert "migrate" not in command_of(SERVICES[name])
        assert "migrate" not in dockerfile_cmd(name)


def test_replicas() -> None:
    assert SERVICES["api"]["deploy"]["replicas"] == 2
    assert SERVICES["invalidator"]["deploy"]["replicas"] == 2


def test_only_the_proxy_publishes_a_port() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"proxy"}
    (port,) = SERVICES["proxy"]["ports"]
    host, container = str(port).split(":")
    assert int(host) == default_port("api_port")  # HTTP_PORT's default: where the api used to be
    assert f"listen {container};" in NGINX


def test_nginx_forwards_to_the_api_replicas_and_overwrites_x_forwarded_for() -> None:
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx/default.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert f"server api:{default_port('api_port')} " in NGINX
    assert "proxy_pass http://api;" in NGINX
    # Overwrite, never append: a client's own header must not reach the api.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in NGINX
    assert "$proxy_add_x_forwarded_for" not in NGINX
    # Only requests that failed to connect, or idempotent ones, go to the other replica:
    # POST and PATCH are never re-sent.
    assert "proxy_next_upstream error timeout;" in NGINX
    assert "non_idempotent" not in NGINX
    # nginx resolves `api` at start: when compose recreates the replicas, it restarts nginx.
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy", "restart": True}}


def test_the_api_trusts_the_proxy_address_only() -> None:
    proxy_address = SERVICES["proxy"]["networks"]["edge"]["ipv4_address"]
    (edge,) = COMPOSE["networks"]["edge"]["ipam"]["config"]
    subnet = ipaddress.ip_network(edge["subnet"])
    dynamic = ipaddress.ip_network(edge["ip_range"])
    assert ipaddress.ip_address(proxy_address) in subnet
    assert ipaddress.ip_address(proxy_address) not in dynamic  # never handed to another container
    assert ipaddress.ip_address(edge["gateway"]) not in dynamic
    assert ipaddress.ip_address(edge["gateway"]) != ipaddress.ip_address(proxy_address)
    assert SERVICES["api"]["environment"]["TRUSTED_PROXIES"] == proxy_address
    assert "--no-proxy-headers" in command_of(SERVICES["api"])
    # The proxy reaches the api and nothing else; the api is on both networks.
    assert set(SERVICES["proxy"]["networks"]) == {"edge"}
    assert set(SERVICES["api"]["networks"]) == {"edge", "backend"}
    for name in ("migrate", "session", "invalidator", "redis", "redis-cache", "postgres"):
        assert SERVICES[name]["networks"] == ["backend"]


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
def test_app_command_and_health_match_the_settings(name: str) -> None:
    package, port_field = APPS[name]
    port = default_port(port_field)
    command = command_of(SERVICES[name])
    assert f"uvicorn {package}.main:create_app --factory --host 0.0.0.0 --port {port}" in command
    assert f"http://127.0.0.1:{port}/health" in " ".join(SERVICES[name]["healthcheck"]["test"])


@pytest.mark.parametrize("name", [*sorted(APPS), "migrate"])
def test_app_environment_is_made_of_settings_that_load(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {key: str(value) for key, value in SERVICES[name]["environment"].items()}
    # The standard OpenTelemetry variables are the SDK's, not settings: tracing stays off
    # until the operator gives an endpoint.
    otel = {key: value for key, value in environment.items() if key.startswith("OTEL_")}
    assert not exporting(otel), otel
    environment = {key: value for key, value in environment.items() if key not in otel}
    fields = {field.upper() for field in StackSettings.model_fields}
    assert set(environment) <= fields, set(environment) - fields
    for key in fields:
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    if name == "migrate":  # the api's image and settings, nothing more
        migrate = load_settings(ApiSettings, _env_file=None)
        assert migrate.database_url.endswith("@postgres:5432/app")
        return
    settings = load_settings(StackSettings, _env_file=None)
    assert settings.redis_dsn == "redis://redis:6379/0"
    assert settings.cache_redis_dsn == "redis://redis-cache:6379/0"
    assert settings.service_token.get_secret_value() == REQUIRED["SERVICE_TOKEN"]
    assert getattr(settings, APPS[name][1]) == default_port(APPS[name][1])
    if name == "api":
        assert settings.database_url.startswith("postgresql+asyncpg://app:")
        assert settings.database_url.endswith("@postgres:5432/app")
        assert settings.session_service_url == f"http://session:{default_port('session_port')}"
        assert [str(n) for n in settings.trusted_proxies] == [
            f"{SERVICES['proxy']['networks']['edge']['ipv4_address']}/32"
        ]


DOCKERFILE = (ROOT / "services" / "Dockerfile").read_text()


def dockerfile_stage(name: str) -> str:
    """The text of stage `name` of services/Dockerfile, up to the next FROM."""
    found = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert found is not None, name
    return found.group(1)


def dockerfile_cmd(name: str) -> str:
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile_stage(name), re.M)
    assert cmd is not None
    return " ".join(yaml.safe_load(cmd.group(1)))


def test_one_dockerfile_two_stages_and_a_target_per_service() -> None:
    stages = re.findall(r"^FROM .*$", DOCKERFILE, re.M)
    assert stages == [
        "FROM python:3.11-slim AS build",
        "FROM python:3.11-slim AS runtime",
        *(f"FROM runtime AS {name}" for name in APPS),
    ]
    builder = dockerfile_stage("build")
    assert 'uv sync --frozen --no-dev --package "$PACKAGE" --no-editable' in builder
    # The final image: the venv copied from the build stage, no uv, a non-root user.
    final = dockerfile_stage("runtime")
    assert "COPY --from=build /app/.venv /app/.venv" in final
    assert "uv" not in DOCKERFILE.split("AS runtime", 1)[1].replace("uvicorn", "")
    user = re.findall(r"^USER (\S+)$", final, re.M)
    assert user
    assert user[-1] not in {"root", "0"}


@pytest.mark.parametrize("name", sorted(APPS))
def test_each_app_image_is_its_target_with_its_package_and_the_compose_command(
    name: str,
) -> None:
    build = SERVICES[name]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "services/Dockerfile"
    assert build["target"] == name
    assert SERVICES[name]["image"] == f"redis-platform/{name}:latest"
    project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
    assert build["args"] == {"PACKAGE": project["project"]["name"], "SOURCE": f"services/{name}"}
    assert dockerfile_cmd(name) == command_of(SERVICES[name])


def test_the_build_context_leaves_caches_and_environments_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/.venv", "**/__pycache__", ".mypy_cache", ".env"} <= ignored


def test_the_test_override_publishes_only_redis_on_loopback() -> None:
    override = yaml.safe_load((ROOT / "devtools" / "compose.test.yml").read_text())["services"]
    for name, service in override.items():
        assert name in SERVICES
        for port in service.get("ports", []):
            assert name in {"redis", "redis-cache"}
            assert str(port).startswith("127.0.0.1:")
