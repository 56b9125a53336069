"""Why `make run` stops early.

LaunchError (Exception)   an expected failure (busy port, locked directory, Redis or the
                          database unreachable, a bad setting, a service dead at start):
                          its message is the one `error:` line shown, `code` the exit status
Stop (BaseException)      Ctrl-C or SIGTERM: an orderly stop, exit 0
"""

from __future__ import annotations


class LaunchError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Stop(BaseException):
    """A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it."""
