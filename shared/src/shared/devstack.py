"""`.devstack/env`: what a running `make run` tells the tools beside it (`platformctl`).

`locate()` reads a tool's settings in this order: the environment, then `.env`, then the
stack's file — and says where the Redis it will use came from.

The launcher writes the file once its Redis answers and removes it when it stops. It names
the Redis the stack uses (with its password when REDIS_URL had one, hence mode 0600), the
cache Redis, the key prefix, the api's port, and the launcher's pid, so a file left behind
by a killed launcher is recognised as stale rather than pointing a tool at a dead Redis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

# python-dotenv comes with pydantic-settings (which reads `.env` with it): the same parser
# reads this file, so a value means here what it would mean in `.env`.
from dotenv import dotenv_values

from shared.settings import CommonSettings, load_settings, redact_url

S = TypeVar("S", bound=CommonSettings)

STACK_ENV: Final = Path(".devstack") / "env"
FILE_NAME: Final = STACK_ENV.name
PID_VARIABLE: Final = "DEVSTACK_PID"
VARIABLES: Final = (
    "REDIS_MODE",
    "REDIS_URL",
    "REDIS_CLUSTER_NODES",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "CACHE_REDIS_URL",
    "KEY_PREFIX",
    "API_PORT",
)


@dataclass(frozen=True)
class StackEnv:
    path: Path
    pid: int | None
    values: dict[str, str]

    @property
    def alive(self) -> bool:
        """Whether the launcher that wrote the file still runs."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a process of another user: it exists
        return True


def _quoted(value: str) -> str:
    # Single quotes: python-dotenv takes the text literally but for `\\` and `\'`.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write(path: Path, values: Mapping[str, str], pid: int) -> None:
    """Write the file atomically, readable by its owner only (it may hold a password)."""
    lines = [
        f"# written by make run (pid {pid}) for platformctl; removed when it stops",
        f"{PID_VARIABLE}={pid}",
        *(f"{name}={_quoted(values[name])}" for name in VARIABLES if values.get(name)),
    ]
    temporary = path.with_name(f".{path.name}.{pid}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was there already with wider bits
        os.write(fd, ("\n".join(lines) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read(path: Path) -> StackEnv | None:
    """The file's values (only the known variables), or None when there is no file."""
    if not path.is_file():
        return None
    raw = dotenv_values(path)
    pid = raw.get(PID_VARIABLE) or ""
    values = {name: value for name in VARIABLES if (value := raw.get(name))}
    return StackEnv(path=path, pid=int(pid) if pid.isdigit() else None, values=values)


def remove(path: Path, pid: int) -> None:
    """Remove the file if this pid wrote it (a newer launcher's file stays)."""
    found = read(path)
    if found is not None and found.pid == pid:
        path.unlink(missing_ok=True)


# The environment naming a Redis is an explicit choice: the stack's file is not read then
# (its REDIS_URL would otherwise beat the environment's REDIS_HOST, since a URL wins).
_EXPLICIT_REDIS: Final = frozenset(
    {
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_MODE",
        "REDIS_SENTINELS",
        "REDIS_CLUSTER_NODES",
    }
)
_REDIS_PARTS: Final = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")


@dataclass(frozen=True)
class Located(Generic[S]):
    """Settings and where each of their variables came from."""

    settings: S
    environment: frozenset[str]
    dotenv: frozenset[str]
    stack: StackEnv | None  # the stack's file, when it was read
    note: str  # why the stack's file was not read, when that needs saying

    def origin(self, variable: str) -> str | None:
        if variable in self.environment:
            return "the environment"
        if variable in self.dotenv:
            return ".env"
        if self.stack is not None and variable in self.stack.values:
            return f"{self.stack.path}, written by make run pid {self.stack.pid}"
        return None

    def describe(self, *, cache: bool = False) -> str:
        """`<url, password masked> (<where it came from>), key prefix <p>`."""
        settings = self.settings
        if cache and settings.cache_redis_url:
            url, why = (
                settings.cache_redis_url,
                f"CACHE_REDIS_URL from {self.origin('CACHE_REDIS_URL')}",
            )
        else:
            url, why = settings.redis_dsn, self._data_origin()
            if cache:
                why = f"CACHE_REDIS_URL unset: the data Redis, {why}"
        note = f"; {self.note}" if self.note else ""
        return f"{redact_url(url)} ({why}{note}), key prefix {settings.key_prefix}"

    def _data_origin(self) -> str:
        if self.settings.redis_url:
            return f"REDIS_URL from {self.origin('REDIS_URL')}"
        parts = [f"{name} from {where}" for name in _REDIS_PARTS if (where := self.origin(name))]
        if parts:
            return "REDIS_URL unset: built from " + ", ".join(parts)
        return "REDIS_URL unset: the default" + ("" if self.note else "; no running make run here")


def _names(values: Mapping[str, str | None]) -> frozenset[str]:
    # Matched case-insensitively, as pydantic-settings matches them. An empty value counts as
    # unset (`_env_ignore_empty` below), as it does for make run: `REDIS_URL=` in `.env` must
    # not hide the Redis the stack started.
    return frozenset(name.upper() for name, value in values.items() if value)


def locate(cls: type[S], stack_path: Path = STACK_ENV) -> Located[S]:
    """`cls` read from the environment, then `.env`, then a running stack's file.

    The stack's file is skipped when the environment names a Redis, and when the launcher
    that wrote it is gone (`note` says so). Raises `SettingsError` like `load_settings`.
    """
    environment = _names(os.environ)
    dotenv = _names(dotenv_values(".env")) if Path(".env").is_file() else frozenset()
    try:
        stack, note = read(stack_path), ""
    except OSError as exc:  # another user's 0600 file, say
        stack, note = None, f"{stack_path} unreadable: {exc.strerror}"
    if stack is not None and not stack.alive:
        stack, note = None, f"{stack_path} ignored: the make run that wrote it is gone"
    elif stack is not None and environment & _EXPLICIT_REDIS:
        stack = None
    if stack is None:
        settings = load_settings(cls, _env_ignore_empty=True)
        return Located(settings, environment, dotenv, None, note)
    # Later files win in pydantic-settings, and the environment beats both.
    settings = load_settings(cls, _env_file=(stack.path, ".env"), _env_ignore_empty=True)
    return Located(settings, environment, dotenv, stack, note)
