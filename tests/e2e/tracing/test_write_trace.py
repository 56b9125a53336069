"""One trace follows a write from the api's request to each consumer group's effect.

Black box: api, session service and invalidator run as processes with tracing on
(`OTEL_EXPORTER_OTLP_ENDPOINT` names the receiver this test runs), and the test reads the
spans they export. The test starts the trace itself: its requests carry a `traceparent`
whose trace id the services must continue through the outbox, the stream and both groups.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx

from devtools.otlp import OtlpReceiver, ReceivedSpan
from devtools.polling import eventually
from tests.e2e.auth.conftest import StackFactory
from tests.e2e.invalidator.conftest import StartInvalidator

STREAM = "events:users"  # the stream key ends so, whatever the test's key prefix
WITHIN = 20.0  # seconds for a trace to arrive whole: batches export every 50 ms


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


async def sign_in(http: httpx.AsyncClient, credentials: dict[str, str]) -> str:
    """A new session's cookie; the client keeps none (a carried cookie would be rotated)."""
    response = await http.post("/v1/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    http.cookies.clear()
    return str(response.cookies["session"])


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


class Trace:
    """The spans of one trace, found by service and name."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans

    def find(self, service: str, name: str, **attributes: Any) -> list[ReceivedSpan]:
        return [
            s
            for s in self.spans
            if s.service == service
            and s.name == name
            and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    def one(self, service: str, name: str, **attributes: Any) -> ReceivedSpan:
        found = self.find(service, name, **attributes)
        assert len(found) == 1, (service, name, attributes, self.describe())
        return found[0]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.parent_id == parent.span_id]

    def describe(self) -> list[tuple[str, str, str | None, str]]:
        return [(s.service, s.name, s.parent_id, s.span_id) for s in self.spans]


async def wait_for_trace(receiver: OtlpReceiver, trace_id: str, *wanted: tuple[str, str]) -> Trace:
    """The trace once every (service, span name) in `wanted` has arrived (bounded): each
    service exports in its own batches, in its own time."""

    seen: list[Trace] = []

    async def complete() -> Trace | None:
        seen[:] = [Trace(receiver.trace(trace_id))]
        return seen[0] if all(seen[0].find(*pair) for pair in wanted) else None

    try:
        return await eventually(complete, f"trace {trace_id}", within=WITHIN, every=0.05)
    except AssertionError as error:
        missing = [pair for pair in wanted if not seen[0].find(*pair)]
        raise AssertionError(f"{error}; missing {missing}; arrived {seen[0].describe()}") from None


def assert_consumes(handling: ReceivedSpan, producer: ReceivedSpan, group: str) -> None:
    """`handling` is the group's process span for the event `producer` staged: its child in
    the same trace, and linked to it."""
    assert handling.kind == "CONSUMER"
    assert handling.trace_id == producer.trace_id
    assert handling.parent_id == producer.span_id
    assert (producer.trace_id, producer.span_id) in handling.links
    assert handling.attributes["messaging.consumer.group.name"] == group
    assert handling.attributes["messaging.system"] == "redis"
    assert str(handling.attributes["messaging.destination.name"]).endswith(STREAM)
    assert handling.start_ns >= producer.end_ns  # consumed only once committed and relayed


async def test_a_password_change_is_one_trace_from_request_to_revocation(
    make_stack: StackFactory,
    start_invalidator: StartInvalidator,
    receiver: OtlpReceiver,
) -> None:
    env = tracing_env(receiver)
    stack = make_stack(**env)
    invalidator = start_invalidator(
        key_prefix=stack.env["KEY_PREFIX"],
        log_level="INFO",
        **{k.lower(): v for k, v in env.items()},
    )
    await invalidator.wait_healthy_async()
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Ada", "password": "pw-one-1234"}
    credentials = {"email": body["email"], "password": body["password"]}
    traceparent, trace_id, caller = new_traceparent()
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=10.0) as http:
        user = (await http.post("/v1/auth/register", json=body)).json()
        here, elsewhere = await sign_in(http, credentials), await sign_in(http, credentials)
        changed = await http.patch(
            f"/v1/users/{user['id']}",
            json={"password": "pw-two-5678"},
            headers={"Cookie": f"session={here}", "traceparent": traceparent},
        )
        assert changed.status_code == 200, changed.text
        assert elsewhere != here

    stream = _stream(stack.env)
    found = await wait_for_trace(
        receiver,
        trace_id,
        *(("api", name) for name in ("PATCH /v1/users/{user_id}", "user write", "write-through")),
        *(("api", name) for name in ("announce", f"publish {stream}")),
        ("invalidator", "purge"),
        ("invalidator", "announce"),
        ("session", "revoke sessions"),
        ("session", "GET /v1/sessions/{session_id}"),
    )

    request = found.one("api", "PATCH /v1/users/{user_id}")
    assert request.kind == "SERVER"
    assert request.parent_id == caller  # the caller's context was continued
    write = found.one("api", "user write")
    assert write.parent_id == request.span_id
    assert write.attributes["app.event.type"] == "user.password_changed"
    statements = [s for s in found.children(write) if s.kind == "CLIENT"]
    assert statements, "the transaction's SQL statements are spans under it"

    # The writer's own write-through and its announcement to the near caches, in the request.
    for name in ("write-through", "announce"):
        assert found.one("api", name).parent_id == request.span_id

    # The relay's XADD continues the write's context (read back from the outbox row).
    publish = found.one("api", "publish " + _stream(stack.env))
    assert publish.kind == "PRODUCER"
    assert publish.parent_id == write.span_id
    assert publish.start_ns >= write.end_ns  # relayed after the commit
    assert publish.attributes["messaging.message.id"] == write.attributes["messaging.message.id"]

    # Group invalidator: handling (linked) → purge and announce under it.
    purging = found.one("invalidator", "process " + _stream(stack.env))
    assert_consumes(purging, write, "invalidator")
    assert purging.attributes["messaging.message.id"] == write.attributes["messaging.message.id"]
    purge = found.one("invalidator", "purge")
    assert purge.parent_id == purging.span_id
    assert purge.attributes["app.cache.keys"] == 2  # the user's value and its lease
    assert found.one("invalidator", "announce").parent_id == purging.span_id

    # Group session: handling (linked) → the revocation of the other session.
    revoking = found.one("session", "process " + _stream(stack.env))
    assert_consumes(revoking, write, "session")
    revoke = found.one("session", "revoke sessions")
    assert revoke.parent_id == revoking.span_id
    assert revoke.attributes["app.sessions.revoked"] == 1  # `elsewhere`; `here` was kept

    # The api's calls to the session service joined the trace over HTTP too.
    assert any(s.kind == "SERVER" for s in found.find("session", "GET /v1/sessions/{session_id}"))
    # And the revocation's log line names the trace.
    assert f"trace_id={trace_id}" in stack.session.log.read_text()
    # No session id reaches the tracing backend (they travel in the session service's paths).
    exported = [str(v) for s in receiver.spans() for v in (s.name, *s.attributes.values())]
    assert not [v for v in exported if here in v or elsewhere in v]


async def test_a_rename_is_purged_in_its_trace_and_revokes_nothing(
    make_stack: StackFactory,
    start_invalidator: StartInvalidator,
    receiver: OtlpReceiver,
) -> None:
    env = tracing_env(receiver)
    stack = make_stack(**env)
    invalidator = start_invalidator(
        key_prefix=stack.env["KEY_PREFIX"], **{k.lower(): v for k, v in env.items()}
    )
    await invalidator.wait_healthy_async()
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "Bo", "password": "pw-one-1234"}
    credentials = {"email": body["email"], "password": body["password"]}
    traceparent, trace_id, _ = new_traceparent()
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=10.0) as http:
        user = (await http.post("/v1/auth/register", json=body)).json()
        cookie = await sign_in(http, credentials)
        renamed = await http.patch(
            f"/v1/users/{user['id']}",
            json={"name": "Bea"},
            headers={"Cookie": f"session={cookie}", "traceparent": traceparent},
        )
        assert renamed.status_code == 200, renamed.text

    stream = _stream(stack.env)
    found = await wait_for_trace(
        receiver,
        trace_id,
        ("api", "user write"),
        ("invalidator", f"process {stream}"),
        ("invalidator", "purge"),
        ("session", f"process {stream}"),
    )
    write = found.one("api", "user write")
    assert write.attributes["app.event.type"] == "user.updated"
    assert_consumes(found.one("invalidator", "process " + stream), write, "invalidator")
    assert_consumes(found.one("session", "process " + stream), write, "session")
    assert not found.find("session", "revoke sessions")  # a rename ends no session


def _stream(env: dict[str, str]) -> str:
    return f"{env['KEY_PREFIX']}:{STREAM}"
