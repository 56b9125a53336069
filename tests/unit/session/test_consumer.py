"""Which events revoke what: the handler against a recording fake of the use case."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from session_service.consumer import CLOCK_MARGIN_MS, Revoker
from session_service.errors import SessionStoreUnavailable
from shared.events import (
    SessionRevokedAll,
    SessionRevokedAllPayload,
    UserDeleted,
    UserDeletedPayload,
    UserEvent,
    UserPasswordChanged,
    UserPasswordChangedPayload,
    UserUpdated,
    UserUpdatedPayload,
)
from shared.streams import Delivery


@dataclass
class Recorder:
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: BaseException | None = None

    async def revoke_all(
        self,
        user_id: uuid.UUID,
        *,
        reason: str = "requested",
        keep: str | None = None,
        created_before_ms: int | None = None,
    ) -> int:
        if self.fail is not None:
            raise self.fail
        self.calls.append(
            {"user": user_id, "reason": reason, "keep": keep, "cut": created_before_ms}
        )
        return 1


def delivery(event: Any, n: int = 1) -> Delivery:
    return Delivery(f"{n}-0", event, {}, 1)


async def test_deleted_revokes_all_without_cut_off() -> None:
    user = uuid.uuid4()
    fake = Recorder()
    event: UserEvent = UserDeleted(source="api", payload=UserDeletedPayload(user_id=user))
    assert await Revoker(fake)([delivery(event)]) == {}
    assert fake.calls == [{"user": user, "reason": "user.deleted", "keep": None, "cut": None}]


async def test_password_change_keeps_one_and_cuts_at_the_change() -> None:
    user = uuid.uuid4()
    fake = Recorder()
    at = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    payload = UserPasswordChangedPayload(user_id=user, keep_session="a" * 64)
    event = UserPasswordChanged(source="api", payload=payload, occurred_at=at)
    await Revoker(fake)([delivery(event)])
    cut = int(at.timestamp() * 1000) + CLOCK_MARGIN_MS
    assert fake.calls == [
        {"user": user, "reason": "user.password_changed", "keep": "a" * 64, "cut": cut}
    ]


async def test_other_events_do_nothing() -> None:
    fake = Recorder()
    user = uuid.uuid4()
    updated = UserUpdated(source="api", payload=UserUpdatedPayload(user_id=user))
    revoked = SessionRevokedAll(
        source="session", payload=SessionRevokedAllPayload(user_id=user, revoked=2)
    )
    assert await Revoker(fake)([delivery(updated, 1), delivery(revoked, 2)]) == {}
    assert fake.calls == []


async def test_store_outage_is_reported_as_the_connection_error() -> None:
    cause = ConnectionError("refused")
    outage = SessionStoreUnavailable("ConnectionError")
    outage.__cause__ = cause
    fake = Recorder(fail=outage)
    event = UserDeleted(source="api", payload=UserDeletedPayload(user_id=uuid.uuid4()))
    failures = await Revoker(fake)([delivery(event, 7)])
    assert failures == {"7-0": cause}  # the toolkit then keeps it pending, never dead-letters
