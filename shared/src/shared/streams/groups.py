"""Consumer groups and consumer names.

Two traps of FastStream's Redis streams this module closes:

- FastStream creates a group at `$` on first start, so entries published before any consumer
  ever ran are skipped. `ensure_group` creates it at `0` with MKSTREAM and tolerates
  BUSYGROUP, so it is safe to call on every start, from every instance, in any order.
- A consumer name that changes on every start (FastStream's default is random) leaves the
  previous incarnation's pending entries to the idle-time reclaim. `consumer_name` is stable
  per instance slot, so a restarted process reads its own pending entries back at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Final

from redis.exceptions import ResponseError

from shared.connections import RedisClient
from shared.settings import StreamSettings

logger = logging.getLogger(__name__)

# Instances on one host take the first free slot; 64 is far more replicas than one host runs.
_MAX_SLOTS: Final = 64
# Slot files stay locked (flock) for the life of the process: the lock is what tells a second
# instance on this host that the slot is taken, and the kernel drops it when the process dies,
# even on SIGKILL. Process-wide on purpose: the identity belongs to the process.
_HELD: dict[str, tuple[int, str]] = {}


async def ensure_group(redis: RedisClient, stream: str, group: str) -> bool:
    """Create `group` on `stream` at id 0 (MKSTREAM); True if created, False if it existed."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    logger.info("created consumer group %s on %s at id 0", group, stream)
    return True


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/redis-platform`, else ~/.local/state/redis-platform."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "redis-platform"


def consumer_name(settings: StreamSettings, group: str, state_dir: Path | None = None) -> str:
    """This instance's stable consumer name in `group`.

    `CONSUMER_NAME` when set. Otherwise `<hostname>-<id>`, where `<id>` is persisted in
    `<state_dir>/<group>-<slot>.id` and the slot file is flock-ed while this process lives:
    a restarted instance gets the same slot (and name) back, a second live instance on the
    same host gets the next slot. Without a writable state dir the name is random (and a
    warning says so): its pending entries then wait for another consumer's reclaim.
    """
    if settings.consumer_name:
        return settings.consumer_name
    host = socket.gethostname().split(".")[0] or "host"
    configured = Path(settings.stream_state_dir) if settings.stream_state_dir else None
    directory = state_dir or configured or default_state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for slot in range(_MAX_SLOTS):
            ident = _take_slot(directory / f"{group}-{slot}.id")
            if ident is not None:
                return f"{host}-{ident}"
    except OSError as exc:
        logger.warning("no writable consumer state dir %s (%s): random name", directory, exc)
    return f"{host}-{uuid.uuid4().hex[:8]}"


def _take_slot(path: Path) -> str | None:
    key = str(path)
    if key in _HELD:
        return None  # held by this very process (a second consumer of the same group)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    ident = os.read(fd, 64).decode("ascii", "replace").strip()
    if not ident:
        ident = uuid.uuid4().hex[:8]
        os.write(fd, ident.encode("ascii"))
        os.fsync(fd)
    _HELD[key] = (fd, ident)
    return ident


def release_consumer_names() -> None:
    """Unlock every slot this process holds (tests; a process exit does it by itself)."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()
