"""Before `make run` starts anything: its data directory and its ports must be its own.

A second launcher on the same `.devstack/` would start a second redis-server on the same AOF
files, and one on busy ports would find the first stack's services answering its health
checks. So the launcher holds an flock on `<dir>/run.lock` for its whole life (the holder's
pid written inside), and binds every service port itself before any child starts: each
service gets its listening socket handed down (`uvicorn --fd`), so whatever answers on that
port can only be that child.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from devtools.errors import LaunchError

LOCK_NAME: Final = "run.lock"
BACKLOG: Final = 2048  # uvicorn's own default


@contextmanager
def directory_lock(data_dir: Path) -> Iterator[Path]:
    """Hold `<data_dir>/run.lock` until the block ends, or fail at once naming the holder."""
    path = data_dir / LOCK_NAME
    # No O_TRUNC: the holder's pid must survive a loser's open.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LaunchError(
            f"{data_dir} is in use by another make run (pid {holder}): stop that one first, "
            "or give this one its own --dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        # Closing releases the flock; the file stays (unlinking a lock file races a waiter).
        os.close(fd)


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn and redis-server do: a port left in TIME_WAIT is free, a listener is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _busy(label: str, port: int, exc: OSError) -> LaunchError:
    if exc.errno != errno.EADDRINUSE:
        return LaunchError(f"cannot bind port {port} ({label}) on 127.0.0.1: {exc.strerror}")
    # A label in capitals is the variable that chose the port: the way out is to change it.
    advice = f"; stop it or set {label} to a free port" if label.isupper() else ""
    return LaunchError(
        f"port {port} ({label}) is already in use on 127.0.0.1: another stack or program "
        f"listens there{advice}"
    )


def check_distinct(ports: Mapping[str, int]) -> None:
    seen: dict[int, str] = {}
    for variable, port in ports.items():
        if port in seen:
            raise LaunchError(f"{seen[port]} and {variable} are both {port}: give each its own")
        seen[port] = variable


def reserve(listen: Mapping[str, int], probe: Mapping[str, int]) -> dict[str, socket.socket]:
    """Listening sockets for the `listen` ports (variable → port), kept open for the caller;
    `probe` ports (started by a child that binds for itself) are only checked to be free.

    Raises `LaunchError` naming the first busy port; nothing stays bound then.
    """
    check_distinct({**listen, **probe})
    sockets: dict[str, socket.socket] = {}
    try:
        for variable, port in probe.items():
            try:
                _bind(port).close()
            except OSError as exc:
                raise _busy(variable, port, exc) from None
        for variable, port in listen.items():
            try:
                sockets[variable] = _bind(port)
            except OSError as exc:
                raise _busy(variable, port, exc) from None
            sockets[variable].listen(BACKLOG)
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets
