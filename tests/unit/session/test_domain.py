"""Ids, hashes, record parsing and timeouts: pure code, no sockets."""

from __future__ import annotations

import hashlib
import re
import uuid

import orjson
import pytest

from session_service.config import SessionSettings, Timeouts
from session_service.domain import SessionRecord
from shared.errors import SettingsError
from shared.keys import Keys
from shared.sessionids import SessionRef, new_session_id, session_ref, well_formed
from shared.sessionids import session_hash as hash_session_id
from shared.settings import load_settings

USER = uuid.UUID("3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b")


def test_ids_carry_their_owner_and_256_bits_in_url_safe_text() -> None:
    ids = {new_session_id(USER) for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:
        # The owner as 32 hex digits, then 43 base64 characters = 258 bits ≥ 256.
        assert re.fullmatch(USER.hex + r"[A-Za-z0-9_-]{43}", sid)
        assert well_formed(sid)
    assert new_session_id(str(USER))[:32] == USER.hex


def test_the_stored_name_is_the_sha256_of_the_id_and_the_owner_its_tag() -> None:
    sid = new_session_id(USER)
    assert hash_session_id(sid) == hashlib.sha256(sid.encode()).hexdigest()
    assert sid not in hash_session_id(sid)
    assert session_ref(sid) == SessionRef(str(USER), hash_session_id(sid))
    # The key holds the owner and the hash: nothing of the random part.
    assert sid[32:] not in Keys().session(str(USER), hash_session_id(sid))


OLD_SHAPE = "q" * 43  # what ids looked like before they carried their owner


@pytest.mark.parametrize(
    "text",
    [
        "", "short", OLD_SHAPE, "z" * 75, "a" * 128, USER.hex + "a" * 42,
        USER.hex + "a" * 44, USER.hex.upper() + "a" * 43, USER.hex + "a" * 42 + "/",
        USER.hex + "a" * 43 + "\n", "{" + USER.hex[1:] + "a" * 43, str(USER) + "a" * 39,
    ],
)  # fmt: skip
def test_malformed_ids_are_refused_before_any_lookup(text: str) -> None:
    assert not well_formed(text)
    assert session_ref(text) is None


def test_record_keeps_an_empty_data_object_an_object() -> None:
    raw = orjson.dumps(
        {"user_id": "u", "data": "{}", "created_at": 1.0, "last_seen_at": 2,
         "expires_at": 3, "absolute_expires_at": 4}
    )  # fmt: skip
    record = SessionRecord.from_json("h" * 64, raw)
    assert record.data == {}
    assert (record.created_at, record.absolute_expires_at) == (1, 4)


def test_timeouts_in_ms_and_idle_never_longer_than_absolute() -> None:
    settings = load_settings(
        SessionSettings,
        _env_file=None,
        app_env="test",
        session_idle_ttl="24h",
        session_absolute_ttl="7d",
    )
    assert Timeouts.of(settings) == Timeouts(
        idle_ms=86_400_000, absolute_ms=604_800_000, replica_wait_ms=250
    )
    clamped = load_settings(
        SessionSettings,
        _env_file=None,
        app_env="test",
        session_idle_ttl="2h",
        session_absolute_ttl="1h",
    )
    assert Timeouts.of(clamped) == Timeouts(
        idle_ms=3_600_000, absolute_ms=3_600_000, replica_wait_ms=250
    )


def test_the_replica_wait_must_end_before_the_read_timeout() -> None:
    def load(**values: str) -> SessionSettings:
        return load_settings(SessionSettings, _env_file=None, app_env="test", **values)

    assert Timeouts.of(load(session_replica_wait="0")).replica_wait_ms == 0
    assert load(session_replica_wait="2s", redis_read_timeout="3s").session_replica_wait == 2.0
    with pytest.raises(SettingsError, match=r"SESSION_REPLICA_WAIT.*REDIS_READ_TIMEOUT"):
        load(session_replica_wait="3s", redis_read_timeout="3s")
    with pytest.raises(SettingsError, match="SESSION_REPLICA_WAIT"):
        load(session_replica_wait="-1s")
    # Unset, the default (250 ms) gives way to a shorter read timeout rather than refuse it.
    assert Timeouts.of(load(redis_read_timeout="200ms")).replica_wait_ms == 100
