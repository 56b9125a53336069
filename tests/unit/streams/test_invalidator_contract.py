"""The invalidator's pure pieces: the notice it publishes. Its AsyncAPI document is checked in
tests/integration/test_docs.py (rendering it builds the FastStream app)."""

from __future__ import annotations

import uuid

import orjson

from invalidator.usecases import _notice_head
from shared.events import UserCreated, UserCreatedPayload, UserDeleted, UserDeletedPayload
from shared.nearcache import PurgeNotice
from shared.streams import Delivery


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
