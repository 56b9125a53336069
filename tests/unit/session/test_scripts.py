"""The session scripts touch only the keys their callers declare (or, when `strict` is off,
records named from the owner's head): read from the Lua text, no server needed."""

from __future__ import annotations

import re

import pytest

from session_service.adapters import scripts

SCRIPTS = {name: getattr(scripts, name) for name in
           ("CREATE", "REFRESH", "ROTATE", "DESTROY", "LIST", "REVOKE_ALL")}  # fmt: skip
# Every `redis.call` with the key it touches (TIME touches none).
CALL = re.compile(r"redis\.call\('(?P<command>[A-Z]+)'(?:, (?P<key>\w+\(\w+\)|[^,)\s]+))?")
# The names a key may have: KEYS itself, the locals bound to KEYS, a record by its hash.
DECLARED = re.compile(r"KEYS\[\d\]|idx|key|record\(h\)")


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_every_key_touched_is_declared(name: str) -> None:
    text = SCRIPTS[name]
    calls = list(CALL.finditer(text))
    assert calls
    for call in calls:
        if call["command"] == "TIME":
            continue
        assert DECLARED.fullmatch(call["key"]), f"{name}: {call.group(0)}"
    # The locals are KEYS and nothing else; a record key is built only inside `records`.
    for local in re.findall(r"local (?:idx|key)(?:, \w+)? = ([^\n]+)", text):
        assert re.fullmatch(r"KEYS\[\d\](?:, KEYS\[\d\])?", local), f"{name}: {local}"
    assert len(re.findall(r"head \.\. h\b", text)) == 1


@pytest.mark.parametrize("name", ["CREATE", "LIST", "REVOKE_ALL"])
def test_walking_scripts_resolve_records_through_their_declarations(name: str) -> None:
    text = SCRIPTS[name]
    assert re.search(r"local record = records\(\d, ARGV\[\d\], ARGV\[\d\]\)", text)
    assert "return missing" in text or "return undeclared(" in text
