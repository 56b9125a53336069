"""The invalidator's pure pieces: the notice it publishes and its published AsyncAPI document."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from invalidator.purge import _notice_head
from scripts.export_docs import render_asyncapi
from shared.events import UserCreated, UserCreatedPayload, UserDeleted, UserDeletedPayload
from shared.nearcache import PurgeNotice
from shared.streams import Delivery

ROOT = Path(__file__).resolve().parents[3]


def _delivery(event: UserCreated | UserDeleted) -> Delivery:
    return Delivery("1-0", event, {b"data": event.to_json()}, 1)


def test_the_notice_the_script_completes_is_the_documented_json() -> None:
    uid = uuid.uuid4()
    deleted = UserDeleted(source="t", payload=UserDeletedPayload(user_id=uid))
    created = UserCreated(
        source="t", payload=UserCreatedPayload(user_id=uid, email="a@b.c", name="A")
    )
    purged = {uid: ["app:user:{x}", "app:user:{x}:lease"]}
    # The Lua script appends the generation and the closing brace.
    for event, keys in ((deleted, purged[uid]), (created, [])):
        notice = orjson.loads(_notice_head(_delivery(event), purged) + b"42}")
        assert notice == {"keys": keys, "generation": 42, "event_id": str(event.id)}
        PurgeNotice.model_validate(notice)


def test_the_committed_asyncapi_document_is_current() -> None:
    assert (ROOT / "docs" / "asyncapi.json").read_text() == render_asyncapi()


def test_the_document_describes_the_stream_group_and_the_channel() -> None:
    document = orjson.loads(render_asyncapi())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"app:events:users", "app:cache:invalidated"}
    bindings = [c["bindings"]["redis"] for c in document["channels"].values()]
    assert {"method": "xreadgroup", "groupName": "invalidator"}.items() <= next(
        b for b in bindings if b["method"] == "xreadgroup"
    ).items()
    schemas = document["components"]["schemas"]
    assert {"UserUpdated", "UserDeleted", "PurgeNotice"} <= set(schemas)
