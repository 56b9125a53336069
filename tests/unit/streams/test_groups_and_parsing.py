"""Pure pieces of the stream toolkit: consumer names, entry parsing, dead-letter fields."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from devtools.settings import StackSettings
from shared.errors import InvalidEventError, MalformedEventError, UnknownEventTypeError
from shared.events import UserUpdated, UserUpdatedPayload, parse_entry
from shared.streams import consumer_name, parse_fields
from shared.streams.deadletter import META_PREFIX, _letter, letter_fields
from shared.streams.groups import release_consumer_names


@pytest.fixture(autouse=True)
def _released() -> Iterator[None]:
    yield
    release_consumer_names()


def test_consumer_name_setting_wins(make_settings: Callable[..., StackSettings]) -> None:
    assert consumer_name(make_settings(consumer_name="pinned"), "g") == "pinned"


def test_consumer_name_is_persisted_per_slot_and_slots_are_exclusive(
    make_settings: Callable[..., StackSettings], tmp_path: Path
) -> None:
    settings = make_settings()
    first = consumer_name(settings, "g", state_dir=tmp_path)
    second = consumer_name(settings, "g", state_dir=tmp_path)  # slot 0 is held: next slot
    assert first != second
    assert consumer_name(settings, "other", state_dir=tmp_path) not in {first, second}
    release_consumer_names()  # as if the process had died: the flocks are gone
    assert consumer_name(settings, "g", state_dir=tmp_path) == first
    assert (tmp_path / "g-0.id").read_text() in first


def test_consumer_name_without_a_writable_state_dir_is_random(
    make_settings: Callable[..., StackSettings], tmp_path: Path
) -> None:
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


def test_dead_letter_fields_keep_the_original_and_round_trip() -> None:
    fields = letter_fields(
        {b"data": b"{}", b"extra": b"x"},
        error="boom",
        reason="handler_failed",
        group="g",
        deliveries=5,
        stream="app:events:users",
        entry_id="1-1",
        consumer="c",
    )
    raw = {k if isinstance(k, bytes) else k.encode(): v if isinstance(v, bytes) else v.encode()
           for k, v in fields.items()}  # fmt: skip
    letter = _letter(b"2-0", raw)
    assert letter.original == {"data": "{}", "extra": "x"}
    assert letter.meta["error"] == "boom"
    assert letter.meta["deliveries"] == "5"
    assert letter.stream == "app:events:users"
    assert all(not name.startswith(META_PREFIX) for name in letter.original)
