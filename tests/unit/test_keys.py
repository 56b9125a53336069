"""Key builders: every key of docs/architecture.md#keys, hash tags, and the input they refuse."""

from __future__ import annotations

import fnmatch
import uuid

import pytest
from redis.crc import key_slot

from shared import keys
from shared.errors import InvalidIdentifierError
from shared.keys import Keys

UID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
SID = "ab" * 32

# The key table of docs/architecture.md#keys, for the default prefix. Rate-limit and lock keys
# put their identifier in a hash tag (docs/decisions/0001-hash-tags.md), so a multi-key script
# stays in one slot.
KEY_TABLE: list[tuple[str, str]] = [
    ("user", f"app:user:{{{UID}}}"),
    ("user_lease", f"app:user:{{{UID}}}:lease"),
    ("user_list_gen", "app:user:list:gen"),
    ("user_list_page", "app:user:list:v7:p2:l10"),
    ("session", f"app:session:{{{UID}}}:{SID}"),
    ("user_sessions", f"app:session:user:{{{UID}}}"),
    ("ratelimit", "app:ratelimit:auth:{203.0.113.9}"),
    ("lock", "app:lock:{outbox-relay}"),
    ("lock_fence", "app:lock:{outbox-relay}:fence"),
    ("lock_fence_seen", "app:lock:{outbox-relay}:fence:seen"),
    ("lock_data", "app:lock:{outbox-relay}:data:latest"),
    ("user_events", "app:events:users"),
    ("dead_letters", "app:events:users:dlq"),
    ("cache_invalidated", "app:cache:invalidated"),
]


def build(k: Keys, name: str) -> str:
    calls = {
        "user": lambda: k.user(UID),
        "user_lease": lambda: k.user_lease(UID),
        "user_list_gen": k.user_list_gen,
        "user_list_page": lambda: k.user_list_page(7, 2, 10),
        "session": lambda: k.session(UID, SID),
        "user_sessions": lambda: k.user_sessions(UID),
        "ratelimit": lambda: k.ratelimit("auth", "203.0.113.9"),
        "lock": lambda: k.lock("outbox-relay"),
        "lock_fence": lambda: k.lock_fence("outbox-relay"),
        "lock_fence_seen": lambda: k.lock_fence_seen("outbox-relay"),
        "lock_data": lambda: k.lock_data("outbox-relay", "latest"),
        "user_events": k.user_events,
        "dead_letters": k.dead_letters,
        "cache_invalidated": k.cache_invalidated,
    }
    return calls[name]()


@pytest.mark.parametrize(("name", "expected"), KEY_TABLE)
def test_every_key_of_the_key_table(name: str, expected: str) -> None:
    assert build(Keys(), name) == expected


@pytest.mark.parametrize(("name", "expected"), KEY_TABLE)
def test_the_prefix_replaces_app(name: str, expected: str) -> None:
    assert build(Keys("t1_x-2"), name) == "t1_x-2" + expected.removeprefix("app")


def test_default_prefix_and_names_on_the_wire() -> None:
    assert Keys().prefix == keys.DEFAULT_PREFIX == "app"
    assert keys.INVALIDATOR_GROUP == "invalidator"
    assert keys.SESSION_GROUP == "session"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (Keys().user(UID), Keys().user_lease(UID)),
        (Keys().lock("r"), Keys().lock_fence("r")),
        (Keys().lock_data("r", "a"), Keys().lock_fence_seen("r")),
        (Keys().session(UID, SID), Keys().user_sessions(UID)),
        (Keys().session(UID, SID), Keys().session(UID, "cd" * 32)),
    ],
)
def test_keys_touched_by_one_script_share_a_cluster_slot(first: str, second: str) -> None:
    assert key_slot(first.encode()) == key_slot(second.encode())


def test_the_hash_tag_is_exactly_the_id() -> None:
    # Redis hashes only what sits between the first `{` and the next `}`.
    assert key_slot(Keys().user(UID).encode()) == key_slot(UID.encode())
    assert key_slot(Keys().user_sessions(UID).encode()) == key_slot(UID.encode())
    assert key_slot(Keys().session(UID, SID).encode()) == key_slot(UID.encode())


def test_a_session_key_ends_with_its_hash() -> None:
    # The session scripts find a declared record's hash as the last 64 characters of its key.
    assert Keys("p").session(UID, SID).endswith(":" + SID)


def test_the_session_pattern_matches_records_only() -> None:
    pattern = Keys().session_pattern()
    record, index = Keys().session(UID, SID), Keys().user_sessions(UID)
    assert fnmatch.fnmatchcase(record, pattern)
    assert not fnmatch.fnmatchcase(index, pattern)
    assert not fnmatch.fnmatchcase(f"app:session:{{{SID}}}", pattern)  # the old shape


def test_uuid_objects_and_other_spellings_become_the_canonical_text() -> None:
    value = uuid.UUID(UID)
    assert Keys().user(value) == Keys().user(UID)
    assert Keys().user(UID.upper()) == Keys().user(UID)
    assert Keys().user(UID.replace("-", "")) == Keys().user(UID)
    assert keys.user_id(UID.upper()) == UID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "*",
        "user:*",
        "not-a-uuid",
        f"{UID}*",
        f"{UID}\n",
        "1 OR 1=1",
        "{",
        "?",
        f"{UID}}}",
        f"{{{UID}}}",
        f"urn:uuid:{UID}",
        f" {UID}",
        UID[:-1],
    ],
)
def test_user_ids_that_are_not_uuids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="not a UUID"):
        Keys().user(bad)
    with pytest.raises(InvalidIdentifierError):
        Keys().user_sessions(bad)
    with pytest.raises(InvalidIdentifierError):
        Keys().session(bad, SID)


@pytest.mark.parametrize(
    "bad", ["", "AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, "*", SID[:-1] + "*", SID + "\n"]
)
def test_session_hashes_must_be_64_lowercase_hex(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        Keys().session(UID, bad)


@pytest.mark.parametrize(
    "bad", ["", "a b", "a*", "a?", "[a]", "{a}", "a}", "a\nb", "a\n", "x" * 129, "é", "a/b"]
)
def test_tokens_with_pattern_or_tag_characters_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        Keys().ratelimit("auth", bad)
    with pytest.raises(InvalidIdentifierError):
        Keys().ratelimit(bad, "1.2.3.4")
    with pytest.raises(InvalidIdentifierError):
        Keys().lock(bad)
    with pytest.raises(InvalidIdentifierError):
        Keys().lock_data("r", bad)


def test_ipv6_and_user_identifiers_are_allowed_in_rate_limit_keys() -> None:
    assert Keys().ratelimit("default", "2001:db8::1") == "app:ratelimit:default:{2001:db8::1}"
    assert Keys().ratelimit("user", UID) == f"app:ratelimit:user:{{{UID}}}"


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "{a}", "x" * 33, "*", "app\n"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        Keys(bad)


@pytest.mark.parametrize(("generation", "page", "limit"), [(-1, 1, 10), (0, 0, 10), (0, 1, 0)])
def test_list_page_numbers_must_be_in_range(generation: int, page: int, limit: int) -> None:
    with pytest.raises(InvalidIdentifierError):
        Keys().user_list_page(generation, page, limit)


def test_the_list_pattern_is_for_operators_and_matches_pages_only() -> None:
    k = Keys()
    assert k.user_list_pattern() == "app:user:list:v*"
    assert k.user_list_page(0, 1, 1).startswith(k.user_list_pattern().rstrip("*"))
    assert not k.user_list_gen().startswith(k.user_list_pattern().rstrip("*"))


def test_dead_letters_of_another_stream() -> None:
    assert Keys().dead_letters("app:events:orders") == "app:events:orders:dlq"


def test_the_dead_letter_guard_is_per_entry_id_of_a_stream() -> None:
    assert (
        Keys().dead_letter_guard("1764567890123-0") == "app:events:users:dlq:guard:1764567890123-0"
    )
    assert Keys().dead_letter_guard("1-2", "app:events:orders") == "app:events:orders:dlq:guard:1-2"


@pytest.mark.parametrize(
    "bad", ["", "1", "1-", "-1", "1-2-3", "*", "1-2\n", "a-1", "1-" + "9" * 21]
)
def test_the_dead_letter_guard_takes_stream_entry_ids_only(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="stream entry id"):
        Keys().dead_letter_guard(bad)
