"""The repository explains itself: no tracked file sends a reader to a document it lacks.

The contract and its reasons live in docs/architecture.md and docs/decisions/; a reference to
a design or notes file kept outside the repository (or to a folder beside it) is a dead end
for anyone who clones it. Here rather than in tests/unit: it runs `git ls-files`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Built from pieces so that this file does not match its own patterns. `../shared` is the
# folder beside the checkout; a relative link into this repository's own library (from docs/,
# say) goes on to `shared/src/` or `shared/pyproject.toml` and is allowed.
_DOC = r"(?:DESIGN|NOTES)\.md"
_SIBLING = r"\.\./shared\b(?!/src/|/pyproject\.toml)"
_NOTES_PATH = r"shared/" + "NOTES"
FORBIDDEN = re.compile("|".join((_DOC, _SIBLING, _NOTES_PATH)), re.IGNORECASE)
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def tracked_text_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    return [name for name in listed.decode().split("\0") if name and name != THIS_FILE]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None  # deleted in the work tree but still in the index
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", "replace")


def test_no_tracked_file_cites_a_document_outside_the_repository() -> None:
    found = []
    for name in tracked_text_files():
        text = _text(ROOT / name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if FORBIDDEN.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "point these at docs/ instead:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_should() -> None:
    for line in (
        "see DESIGN.md",
        "(design.md, session table)",
        "figures in NOTES.md",
        "cat ../shared/x",
        "in shared/" + "NOTES.md",
    ):
        assert FORBIDDEN.search(line), line
    for line in (
        "docs/architecture.md#keys",
        "shared/src/shared/keys.py",
        "[keys](../shared/src/shared/keys.py)",
        "the design",
    ):
        assert not FORBIDDEN.search(line), line
