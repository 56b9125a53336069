"""Every Redis name the services agree on: key builders, streams, groups, channels.

Ids from users are validated (UUID, or a hex digest for sessions) before they reach a key,
so no user text ever becomes part of a key or a `SCAN` pattern. The id sits inside braces —
a Redis Cluster hash tag — wherever several keys of one entity are touched by one script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from shared.errors import InvalidIdentifierError

DEFAULT_PREFIX: Final = "app"

# Stream, group and channel names, relative to the prefix.
USER_EVENTS: Final = "events:users"
DEAD_LETTERS_SUFFIX: Final = "dlq"
INVALIDATOR_GROUP: Final = "invalidator"
SESSION_GROUP: Final = "session"
CACHE_INVALIDATED: Final = "cache:invalidated"

# The user-id spellings accepted anywhere (keys, paths): hyphenated or 32 hex digits, any
# case. Published as the path parameter's pattern; braces and `urn:uuid:` are refused.
USER_ID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_UUID_TEXT = re.compile(USER_ID_PATTERN.removesuffix("$") + r"\Z")
_SID_HASH = re.compile(r"^[0-9a-f]{64}\Z")  # \Z: `$` would let a trailing newline in
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
_ENTRY_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")


def user_id(value: str | UUID) -> str:
    """The canonical text of a user id, or `InvalidIdentifierError`.

    Only the hyphenated or the 32-hex spelling: `uuid.UUID` alone would also take braces
    and `urn:uuid:` prefixes, and a brace in user text is exactly what must not reach a key.
    """
    if isinstance(value, UUID):
        return str(value)
    if _UUID_TEXT.match(str(value)) is None:
        raise InvalidIdentifierError(f"not a UUID: {value!r}")
    return str(UUID(value))


def sid_hash(value: str) -> str:
    if _SID_HASH.match(value) is None:
        raise InvalidIdentifierError("not a session hash (64 lowercase hex characters)")
    return value


def token(value: str, what: str = "identifier") -> str:
    """A policy, resource or client identifier: letters, digits and `_.:-` only."""
    if _TOKEN.match(value) is None:
        raise InvalidIdentifierError(f"invalid {what}: only [A-Za-z0-9_.:-], 1-128 characters")
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one prefix (`KEY_PREFIX`). Every key the services touch is built here."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if _PREFIX.match(self.prefix) is None:
            raise InvalidIdentifierError(f"invalid key prefix {self.prefix!r}")

    # users
    def user(self, uid: str | UUID) -> str:
        return f"{self.prefix}:user:{{{user_id(uid)}}}"

    def user_lease(self, uid: str | UUID) -> str:
        return f"{self.user(uid)}:lease"

    def user_version(self, uid: str | UUID) -> str:
        """The version of the cached user value (its row's `updated_at` in µs): a store
        writes only a newer one, a purge drops only an older one."""
        return f"{self.user(uid)}:ver"

    def user_list_gen(self) -> str:
        return f"{self.prefix}:user:list:gen"

    def user_list_page(self, generation: int, page: int, limit: int) -> str:
        if generation < 0 or page < 1 or limit < 1:
            raise InvalidIdentifierError("generation >= 0, page >= 1 and limit >= 1 required")
        return f"{self.prefix}:user:list:v{generation}:p{page}:l{limit}"

    def user_list_pattern(self) -> str:
        """For operators' tools only; the services never SCAN."""
        return f"{self.prefix}:user:list:v*"

    # sessions: a record and its owner's index share the owner's hash tag (one slot), so
    # every session script touches one slot; the record is named by the id's hash only.
    def session(self, uid: str | UUID, sid_digest: str) -> str:
        return f"{self.prefix}:session:{{{user_id(uid)}}}:{sid_hash(sid_digest)}"

    def user_sessions(self, uid: str | UUID) -> str:
        return f"{self.prefix}:session:user:{{{user_id(uid)}}}"

    def session_pattern(self) -> str:
        """Every session record (not the user indexes): for the sampled `active` gauge only."""
        return f"{self.prefix}:session:{{*}}:*"

    # rate limiting and locks
    def ratelimit(self, policy: str, identifier: str) -> str:
        # One key per identifier, hash-tagged so a multi-key variant stays in one slot.
        return f"{self.prefix}:ratelimit:{token(policy, 'policy')}:{{{token(identifier)}}}"

    def lock(self, resource: str) -> str:
        return f"{self.prefix}:lock:{{{token(resource, 'resource')}}}"

    def lock_fence(self, resource: str) -> str:
        return f"{self.lock(resource)}:fence"

    def lock_fence_seen(self, resource: str) -> str:
        """The highest fence a fenced write of the resource was accepted with (no TTL)."""
        return f"{self.lock_fence(resource)}:seen"

    def lock_data(self, resource: str, name: str) -> str:
        """A value only the resource's current lock holder writes (`shared.lock.FencedStore`)."""
        return f"{self.lock(resource)}:data:{token(name, 'name')}"

    # streams and channels
    def user_events(self) -> str:
        return f"{self.prefix}:{USER_EVENTS}"

    def dead_letters(self, stream: str | None = None) -> str:
        return f"{stream or self.user_events()}:{DEAD_LETTERS_SUFFIX}"

    def dead_letter_guard(self, entry_id: str, stream: str | None = None) -> str:
        """Who dead-letters stream entry `entry_id` when no group can parse it (one per entry).

        Touched alone (SET NX, GET), so it needs no hash tag; see `shared.streams.deadletter`.
        """
        if _ENTRY_ID.match(entry_id) is None:
            raise InvalidIdentifierError(f"not a stream entry id: {entry_id!r}")
        return f"{self.dead_letters(stream)}:guard:{entry_id}"

    def cache_invalidated(self) -> str:
        return f"{self.prefix}:{CACHE_INVALIDATED}"

    def consumer_id(self, group: str) -> str:
        """Where an instance without CONSUMER_NAME keeps nothing: see streams.consumer_name."""
        return f"{self.prefix}:consumer:{token(group, 'group')}"
