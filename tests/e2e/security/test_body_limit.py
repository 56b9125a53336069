"""Request bodies are bounded on every service: 413 in the error shape, nothing buffered.

Black box: the services run as processes; a raw socket sends 10 MB, declared with
`Content-Length` or streamed chunked, and the answer must come back before the body has been
sent, with the server's resident memory barely moved.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..api.conftest import ApiProcess
from ..session.processes import TOKEN, SessionProcess

MIB = 1024 * 1024
TOTAL = 10 * MIB
CHUNK = 64 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_large(
    url: str, path: str, *, chunked: bool, headers: str = ""
) -> tuple[int, dict[str, object], int]:
    """POST `TOTAL` bytes; (status, JSON body, bytes of body sent before the answer came)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {TOTAL}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"{headers}{framing}\r\n\r\n"
    )
    sent = 0
    # A small send buffer, so `sent` tracks what the server took (its own receive buffer,
    # autotuned by the kernel, can still absorb a few MB the app never reads).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    with sock:
        sock.sendall(head.encode())
        if not chunked:
            # A declared length over the bound is answered from the headers alone.
            select.select([sock], [], [], 2.0)
        chunk = b"x" * CHUNK
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
        try:
            while sent < TOTAL:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
                sock.sendall(framed)
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server closed its side after answering
        status, body = _read_response(sock)
    return status, body, sent


def _read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(": ") for h in lines[1:])
        if k.lower() == "content-length"
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def _assert_refused(url: str, pid: int, path: str, headers: str = "") -> None:
    before = rss_bytes(pid)
    for chunked in (False, True):
        status, body, sent = send_large(url, path, chunked=chunked, headers=headers)
        assert status == 413, (chunked, body)
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == "PAYLOAD_TOO_LARGE"
        # The declared one is answered before a byte of its body is sent; the streamed one
        # once the bound (1 MiB) is crossed, long before its 10 MB are through.
        assert sent == 0 if not chunked else sent < TOTAL, (chunked, sent)
    assert rss_bytes(pid) - before < 20 * MIB


@pytest.fixture
def small_api(api_env: dict[str, str], start_api: Callable[..., ApiProcess]) -> ApiProcess:
    return start_api(api_env)


def test_api_refuses_large_bodies_before_reading_them(small_api: ApiProcess) -> None:
    _assert_refused(small_api.url, small_api.pid, "/v1/users")
    _assert_refused(small_api.url, small_api.pid, "/v1/auth/login")


def test_session_service_refuses_large_bodies_before_reading_them(
    redis_env: dict[str, str], start_session: Callable[..., SessionProcess]
) -> None:
    service = start_session({**redis_env, "APP_ENV": "test"})
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    _assert_refused(service.url, service.pid, "/v1/sessions", auth)
