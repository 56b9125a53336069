"""Documents that must follow the code: .env.example and the README's settings table.

The generated documents (docs/events.schema.json, docs/asyncapi.json) are checked in
tests/integration/test_docs.py: that check runs the export script as a process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools.settings import StackSettings
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {name.upper() for name in StackSettings.model_fields}


def env_example_names() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    # `NAME=value`, or `# NAME=value` for the ones unset by default.
    return re.findall(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)


def test_env_example_lists_every_setting_once() -> None:
    names = env_example_names()
    assert len(names) == len(set(names))
    assert set(names) == FIELDS


def test_env_example_as_is_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FIELDS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVICE_TOKEN", "t" * 32)  # production's session service needs one
    from_file = load_settings(StackSettings, _env_file=ROOT / ".env.example")
    assert from_file == load_settings(StackSettings, _env_file=None)


def test_readme_settings_table_lists_every_setting_once() -> None:
    text = (ROOT / "README.md").read_text()
    names = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", text, re.MULTILINE)
    assert len(names) == len(set(names))
    assert set(names) == FIELDS
