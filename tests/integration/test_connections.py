"""The Redis client factory against real servers: ping failure, health, warm pool, ACL, TLS."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devtools.redis_server import RedisServer, find_redis_server, free_port
from devtools.settings import StackSettings
from shared.autopipeline import auto_pipeline
from shared.connections import describe_target, make_redis, open_redis, redis_health
from shared.errors import RedisUnavailableError

Factory = Callable[..., RedisServer]


async def open_fails(url: str, settings: StackSettings) -> str:
    """The message `open_redis` fails with (the test fails if it connects)."""
    try:
        client = await open_redis(url, settings)
    except RedisUnavailableError as exc:
        return str(exc)
    await client.aclose()
    pytest.fail(f"open_redis connected to {url}")


async def test_ping_failure_names_host_and_port_but_not_the_password(
    make_settings: Callable[..., StackSettings],
) -> None:
    port = free_port()  # bound and released: nothing listens there now
    settings = make_settings(redis_max_retries=1, redis_write_timeout="1s")
    url = f"redis://admin:hunter2@127.0.0.1:{port}/0"
    started = time.monotonic()
    message = await open_fails(url, settings)
    assert message.startswith(f"failed to connect to Redis at 127.0.0.1:{port}: ")
    assert len(message) > len(f"failed to connect to Redis at 127.0.0.1:{port}: ")
    assert "hunter2" not in message
    assert "\n" not in message
    assert time.monotonic() - started < 10


async def test_health_reports_latency_then_down(
    redis_server_factory: Factory, settings: StackSettings
) -> None:
    server = redis_server_factory()
    client = await open_redis(server.url, settings.model_copy(update={"redis_max_retries": 0}))
    try:
        health = await redis_health(client)
        assert health.status == "ok"
        assert health.latency_ms is not None
        assert 0 < health.latency_ms < 1000
        assert health.as_dict()["error"] is None
        server.kill()
        down = await redis_health(client)
        assert down.status == "down"
        assert down.latency_ms is None
        assert down.error
    finally:
        await client.aclose()


async def connected_clients(url: str) -> int:
    probe = Redis.from_url(url)
    try:
        info = await probe.info("clients")
        return int(info["connected_clients"]) - 1  # not counting the probe itself
    finally:
        await probe.aclose()


async def test_min_idle_connections_are_opened_at_start(
    redis_server_factory: Factory, make_settings: Callable[..., StackSettings]
) -> None:
    server = redis_server_factory()
    client = await open_redis(server.url, make_settings(redis_min_idle_conns=4, redis_pool_size=6))
    try:
        assert await connected_clients(server.url) == 4
    finally:
        await client.aclose()
    assert await connected_clients(server.url) == 0


async def test_make_redis_does_no_io(make_settings: Callable[..., StackSettings]) -> None:
    # Nothing listens on this port; building the client must still succeed.
    client = make_redis(f"redis://127.0.0.1:{free_port()}/0", make_settings())
    await client.aclose()


async def test_pool_size_bounds_connections(
    redis_server_factory: Factory, make_settings: Callable[..., StackSettings]
) -> None:
    server = redis_server_factory()
    client = await open_redis(server.url, make_settings(redis_pool_size=3, redis_min_idle_conns=0))
    try:
        # Ten concurrent blocking calls through a pool of three: never more than three sockets.
        await asyncio.gather(*(client.blpop([f"nothing-{i}"], timeout=0.1) for i in range(10)))
        assert await connected_clients(server.url) <= 3
    finally:
        await client.aclose()


async def test_acl_user_and_password_through_the_url(
    redis_server_factory: Factory, make_settings: Callable[..., StackSettings]
) -> None:
    server = redis_server_factory()
    admin = Redis.from_url(server.url)
    await admin.acl_setuser(
        "alice",
        enabled=True,
        passwords="+s3cr3t-pw",
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
    )
    await admin.aclose()
    settings = make_settings(redis_max_retries=0)

    client = await open_redis(f"redis://alice:s3cr3t-pw@127.0.0.1:{server.port}/0", settings)
    try:
        assert await client.acl_whoami() in {b"alice", "alice"}
        # The auto-pipeline's dedicated connection goes through the same handshake.
        pipeline = auto_pipeline(client)
        assert await pipeline.execute("ACL", "WHOAMI") == b"alice"
        assert (
            await asyncio.gather(*(pipeline.execute("PING") for _ in range(20))) == [b"PONG"] * 20
        )
    finally:
        await client.aclose()

    message = await open_fails(f"redis://alice:wrong-pw@127.0.0.1:{server.port}/0", settings)
    assert message.startswith(f"failed to connect to Redis at 127.0.0.1:{server.port}: ")
    assert "wrong-pw" not in message


def _tls_capable_binary() -> str | None:
    """A `redis-server` built with TLS: asked to use a missing certificate, it says so."""
    candidates = [find_redis_server(), shutil.which("redis-server", path=os.defpath)]
    for binary in filter(None, dict.fromkeys(candidates)):
        done = subprocess.run(
            [
                binary,
                "--port",
                "0",
                "--tls-port",
                str(free_port()),
                "--tls-cert-file",
                "/nonexistent",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        if "Bad directive" not in done.stdout + done.stderr:
            return binary
    return None


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_rediss_tls_through_the_url(
    redis_server_factory: Factory, make_settings: Callable[..., StackSettings], tmp_path: Path
) -> None:
    binary = _tls_capable_binary()
    if binary is None:
        pytest.skip("this machine's redis-server is built without TLS (--tls-port unsupported)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = _self_signed(tmp_path)
    tls_port = free_port()
    redis_server_factory(
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no",
        binary=binary,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}&ssl_cert_reqs=required"
    client = await open_redis(url, make_settings(redis_max_retries=0))
    try:
        assert await client.set("tls-probe", "1")
        info = await client.info("server")
        assert int(info["tcp_port"]) != tls_port  # we did reach the TLS listener, not plain
        assert describe_target(url) == f"127.0.0.1:{tls_port}"
        # The auto-pipeline's protocol sits on the TLS transport as well.
        pipeline = auto_pipeline(client)
        assert await pipeline.execute("GET", "tls-probe") == b"1"
        replies = await asyncio.gather(*(pipeline.execute("INCR", "tls-n") for _ in range(20)))
        assert sorted(replies) == list(range(1, 21))
        assert pipeline.batches < 20  # they shared round trips
    finally:
        await client.aclose()

    # A plain client on the TLS port fails with the usual one-line message.
    message = await open_fails(
        f"redis://127.0.0.1:{tls_port}/0",
        make_settings(redis_max_retries=0, redis_read_timeout="1s"),
    )
    assert message.startswith(f"failed to connect to Redis at 127.0.0.1:{tls_port}: ")
