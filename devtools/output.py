"""What `make run` prints: its own lines and its children's, every one of them redacted.

No line leaves the launcher without passing `Console.redact`: URL passwords, the secret
values it knows (SERVICE_TOKEN, REDIS_PASSWORD, the passwords inside the URLs it was given),
bearer tokens and session ids. Children write through pipes, so their logs — a traceback
that quotes a DSN included — go through the same filter.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import IO, Final
from urllib.parse import unquote, urlsplit

from shared.settings import redact_url

# Shorter values are not secrets worth the name, and hiding them would garble every line.
MIN_SECRET_LENGTH: Final = 4
_BEARER: Final = re.compile(r"(?i)(?P<head>\bbearer\s+)[^\s\"',;]+")
# A session id after the cookie's name or a `session_id` field (shared.sessionids' shape).
_SESSION: Final = re.compile(
    r"(?i)(?P<head>\bsession(?:[_-]?id)?[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9_-]{43,128}"
)


def url_password(url: str | None) -> str | None:
    """The password inside a URL, as written (no error on a malformed one)."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class Console:
    """stdout for progress, stderr for the one `error:` line; thread-safe, redacted."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def hide(self, *values: str | None) -> None:
        """Never print these values (nor their percent-decoded forms)."""
        for value in values:
            for form in {value, unquote(value)} if value else set():
                if len(form) >= MIN_SECRET_LENGTH and form not in self._secrets:
                    self._secrets.append(form)
        self._secrets.sort(key=len, reverse=True)  # a secret inside another: longest first

    def redact(self, text: str) -> str:
        text = redact_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\g<head>***", text)
        return _SESSION.sub(r"\g<head>***", text)

    def say(self, line: str) -> None:
        self._write(self._out, line)

    def error(self, message: str) -> None:
        self._write(self._err, f"error: {message}")

    def _write(self, stream: IO[str], text: str) -> None:
        shown = self.redact(text)
        with self._lock:
            stream.write(shown + "\n")
            stream.flush()


class Pump(threading.Thread):
    """Copy a child's output line by line, each prefixed with its name; keep the last line."""

    def __init__(self, name: str, stream: IO[bytes], console: Console) -> None:
        super().__init__(name=f"pump-{name}", daemon=True)
        self.label = name
        self.stream = stream
        self.console = console
        self.last_line = ""

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                self.last_line = line.strip()
            self.console.say(f"{self.label:<11}| {line}")
        self.stream.close()
