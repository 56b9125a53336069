"""Pure pieces of the stream toolkit: consumer names, entry parsing, dead-letter fields."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.settings import StackSettings
from shared.errors import InvalidEventError, MalformedEventError, UnknownEventTypeError
from shared.events import UserUpdated, UserUpdatedPayload, parse_entry
from shared.settings import load_settings
from shared.streams import consumer_name, parse_fields
from shared.streams.deadletter import EVERY_GROUP, META_PREFIX, _letter, letter_fields
from shared.streams.groups import release_consumer_names


def make_settings(**overrides: Any) -> StackSettings:
    # Never connected to: consumer names need settings, not a server.
    values = {"redis_url": "redis://127.0.0.1:1/0", "app_env": "test", **overrides}
    return load_settings(StackSettings, _env_file=None, **values)


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    yield
    release_consumer_names()


def test_consumer_name_setting_wins() -> None:
    assert consumer_name(make_settings(consumer_name="pinned"), "g") == "pinned"


def test_consumer_name_is_persisted_per_slot_and_slots_are_exclusive(tmp_path: Path) -> None:
    settings = make_settings()
    first = consumer_name(settings, "g", state_dir=tmp_path)
    second = consumer_name(settings, "g", state_dir=tmp_path)  # slot 0 is held: next slot
    assert first != second
    assert consumer_name(settings, "other", state_dir=tmp_path) not in {first, second}
    release_consumer_names()  # as if the process had died: the flocks are gone
    assert consumer_name(settings, "g", state_dir=tmp_path) == first
    assert (tmp_path / "g-0.id").read_text() in first


def test_consumer_name_without_a_writable_state_dir_is_random(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = make_settings()
    names = {consumer_name(settings, "g", state_dir=blocker / "sub") for _ in range(2)}
    assert len(names) == 2


def _event() -> UserUpdated:
    return UserUpdated(source="test", payload=UserUpdatedPayload(user_id=uuid.uuid4()))


def test_parse_fields_fast_path_agrees_with_parse_entry() -> None:
    event = _event()
    fields = {b"data": event.to_json()}
    assert parse_fields(fields) == parse_entry(fields) == event


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (b"[1, 2]", MalformedEventError),
        (b"{nope", MalformedEventError),
        ({"type": "user.exploded"}, UnknownEventTypeError),
        ({"drop": "id"}, InvalidEventError),
        ({"version": 2}, InvalidEventError),
    ],
)
def test_parse_fields_raises_the_reason(
    document: bytes | dict[str, object], error: type[Exception]
) -> None:
    if isinstance(document, dict):
        base = orjson.loads(_event().to_json())
        if "drop" in document:
            base.pop(str(document["drop"]))
        else:
            base.update(document)
        raw = orjson.dumps(base)
    else:
        raw = document
    with pytest.raises(error):
        parse_fields({b"data": raw})


def test_an_entry_without_data_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match="no `data` field"):
        parse_fields({b"payload": b"{}"})


def _fields(original: dict[bytes, bytes], **overrides: Any) -> dict[bytes, bytes]:
    options: dict[str, Any] = {
        "error": "boom",
        "reason": "handler_failed",
        "group": "g",
        "deliveries": 5,
        "stream": "app:events:users",
        "entry_id": "1-1",
        "consumer": "c",
        **overrides,
    }
    return letter_fields(original, **options)


def test_dead_letter_fields_keep_the_original_bytes_and_round_trip() -> None:
    original = {b"data": b"{\xff\xfe}", b"extra": b"x"}  # not UTF-8: must survive as is
    fields = _fields({**original, b"dlq:for": b"g"})  # a replay's marker is not the entry's
    assert next(iter(fields)) == b"dlq:group"  # first: the DLQ count stops at it
    letter = _letter(b"2-0", fields)
    assert letter.original == original
    assert list(letter.original) == [b"data", b"extra"]
    assert letter.meta["error"] == "boom"
    assert letter.meta["deliveries"] == "5"
    assert letter.meta["size"] == str(sum(len(k) + len(v) for k, v in original.items()))
    assert (letter.group, letter.truncated, letter.refusal()) == ("g", False, None)
    assert letter.stream == "app:events:users"
    assert all(not name.startswith(META_PREFIX.encode()) for name in letter.original)
    assert letter.as_dict()["fields"] == {"data": "{\ufffd\ufffd}", "extra": "x"}  # display only


def test_an_entry_over_the_cap_is_kept_truncated_with_its_size_and_is_not_replayable() -> None:
    original = {b"data": b"x" * 5000, b"more": b"y" * 100}
    letter = _letter(b"2-0", _fields(original, max_entry_bytes=1024))
    assert sum(len(k) + len(v) for k, v in letter.original.items()) == 1024
    assert letter.original[b"data"] == b"x" * (1024 - len(b"data"))
    assert b"more" not in letter.original
    assert letter.meta["size"] == str(5000 + 4 + 100 + 4)
    assert letter.truncated
    refusal = letter.refusal()
    assert refusal is not None
    assert refusal.startswith("truncated: the entry was 5108 bytes")
    assert letter.as_dict()["replayable"] is False


def test_a_letter_without_a_group_is_for_every_group() -> None:
    assert _letter(b"1-0", {b"data": b"{}", b"dlq:stream": b"s"}).group == EVERY_GROUP


def test_parsing_ignores_dlq_fields() -> None:
    event = _event()
    assert parse_fields({b"data": event.to_json(), b"dlq:for": b"g"}) == event
    with pytest.raises(MalformedEventError, match=r"fields: \['other'\]"):
        parse_fields({b"other": b"x", b"dlq:for": b"g"})


def test_an_error_text_with_a_lone_surrogate_still_makes_a_letter() -> None:
    letter = _letter(b"1-0", _fields({b"data": b"{}"}, error="bad \udcff byte"))
    assert letter.meta["error"] == "bad ? byte"
