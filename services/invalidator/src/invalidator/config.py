"""The invalidator's names: its service name in logs and its consumer group."""

from __future__ import annotations

from typing import Final

from shared.keys import INVALIDATOR_GROUP

SERVICE: Final = "invalidator"
GROUP: Final = INVALIDATOR_GROUP
# Event types whose user value and lease are purged; every user.* type bumps the list
# generation (a created user changes every list page, but has no cached value yet).
PURGED_TYPES: Final = frozenset({"user.updated", "user.deleted", "user.password_changed"})
USER_TYPES: Final = PURGED_TYPES | {"user.created"}
