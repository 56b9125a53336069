"""Group `session` on the users stream: a user deleted, or a password changed, ends sessions.

Built on the stream toolkit (`shared.streams`: group at id 0, reclaim, dead letters); this
module is only the effect. Every effect is idempotent:

- `user.deleted` revokes every session of the user; doing it twice revokes nothing more.
- `user.password_changed` revokes the sessions created up to the change (plus a clock
  margin), except `keep_session` and the session rotated from it. A redelivery — or a replay
  from the dead letters days later — therefore never logs out a sign-in made with the new
  password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final, Protocol
from uuid import UUID

from session_service.errors import SessionStoreUnavailable
from shared.events import UserDeleted, UserPasswordChanged
from shared.streams import (
    Delivery,
)

logger = logging.getLogger(__name__)
# The change's time is the api's clock, a session's creation time Redis's clock: a margin
# makes a skew between them err towards revoking (a sign-in in the second after a password
# change may be asked to sign in again) rather than towards keeping a pre-change session.
CLOCK_MARGIN_MS: Final = 1000


class Revoking(Protocol):
    """The one use case the consumer needs (`Sessions.revoke_all`)."""

    async def revoke_all(
        self,
        user_id: UUID,
        *,
        reason: str = ...,
        keep: str | None = None,
        created_before_ms: int | None = None,
    ) -> int: ...


class Revoker:
    """The batch handler the toolkit calls."""

    def __init__(self, sessions: Revoking) -> None:
        self._sessions = sessions

    async def __call__(self, batch: Sequence[Delivery], /) -> Mapping[str, BaseException]:
        failures: dict[str, BaseException] = {}
        for delivery in batch:
            try:
                await self._apply(delivery)
            except SessionStoreUnavailable as exc:
                # The toolkit keeps entries that failed for want of Redis pending (never
                # dead-lettered): hand it the connection error itself so it knows.
                failures[delivery.entry_id] = exc.__cause__ or exc
        return failures

    async def _apply(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, UserDeleted):
            await self._sessions.revoke_all(event.payload.user_id, reason="user.deleted")
        elif isinstance(event, UserPasswordChanged):
            cutoff = int(event.occurred_at.timestamp() * 1000) + CLOCK_MARGIN_MS
            await self._sessions.revoke_all(
                event.payload.user_id,
                reason="user.password_changed",
                keep=event.payload.keep_session,
                created_before_ms=cutoff,
            )
        # Every other type (user.created/updated, session.*) needs nothing from us: acked.
