"""The invalidator's settings and names: its service name in logs and its consumer group."""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field

from shared.keys import INVALIDATOR_GROUP
from shared.settings import StreamSettings, settings_or_exit

SERVICE: Final = "invalidator"
GROUP: Final = INVALIDATOR_GROUP
# Event types whose user value and lease are purged; every user.* type bumps the list
# generation (a created user changes every list page, but has no cached value yet).
PURGED_TYPES: Final = frozenset({"user.updated", "user.deleted", "user.password_changed"})
USER_TYPES: Final = PURGED_TYPES | {"user.created"}


class InvalidatorSettings(StreamSettings):
    invalidator_port: int = Field(8002, ge=1, le=65535)


def load(**overrides: Any) -> InvalidatorSettings:
    """The environment's settings, or one line naming the bad variable and exit code 2."""
    return settings_or_exit(InvalidatorSettings, **overrides)
