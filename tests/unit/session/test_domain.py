"""Ids, hashes, record parsing and timeouts: pure code, no sockets."""

from __future__ import annotations

import hashlib
import re

import orjson
import pytest

from session_service.config import SessionSettings, Timeouts
from session_service.domain import SessionRecord
from shared.sessionids import new_session_id, well_formed
from shared.sessionids import session_hash as hash_session_id
from shared.settings import load_settings


def test_ids_carry_256_bits_in_url_safe_text() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)  # 43 base64 characters = 258 bits ≥ 256
        assert well_formed(sid)


def test_the_stored_name_is_the_sha256_of_the_id() -> None:
    sid = new_session_id()
    assert hash_session_id(sid) == hashlib.sha256(sid.encode()).hexdigest()
    assert sid not in hash_session_id(sid)


@pytest.mark.parametrize(
    "text",
    ["", "short", "a" * 42, "a" * 129, "a" * 42 + "/", "a" * 42 + "\n", "{" + "a" * 43],
)
def test_malformed_ids_are_refused_before_any_lookup(text: str) -> None:
    assert not well_formed(text)


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
    assert Timeouts.of(settings) == Timeouts(idle_ms=86_400_000, absolute_ms=604_800_000)
    clamped = load_settings(
        SessionSettings,
        _env_file=None,
        app_env="test",
        session_idle_ttl="2h",
        session_absolute_ttl="1h",
    )
    assert Timeouts.of(clamped) == Timeouts(idle_ms=3_600_000, absolute_ms=3_600_000)
