"""The published contract documents in docs/ follow the code: the export script's `--check`
(as `make docs` and CI run it) and the AsyncAPI document's content.

Here rather than in tests/unit: the check runs the script as a process, and rendering the
AsyncAPI document builds the invalidator's FastStream app.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from scripts.export_docs import render_asyncapi

ROOT = Path(__file__).resolve().parents[2]


def test_committed_documents_match_the_code(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "export_docs.py"
    fresh = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert fresh.returncode == 0, fresh.stderr
    for name in ("events.schema.json", "asyncapi.json"):
        (tmp_path / name).write_text((ROOT / "docs" / name).read_text())
    (tmp_path / "events.schema.json").write_text("{}\n")  # one stale, one current
    done = subprocess.run(
        [sys.executable, str(script), "--check", "--docs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("stale") == 1
    assert "events.schema.json is stale" in done.stderr


def test_the_committed_asyncapi_document_is_current() -> None:
    assert (ROOT / "docs" / "asyncapi.json").read_text() == render_asyncapi()


def test_the_document_describes_the_stream_group_and_the_channel() -> None:
    document = orjson.loads(render_asyncapi())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"app:events:users", "app:cache:invalidated"}
    bindings = [c["bindings"]["redis"] for c in document["channels"].values()]
    assert {"method": "xreadgroup", "groupName": "invalidator"}.items() <= next(
        b for b in bindings if b["method"] == "xreadgroup"
    ).items()
    schemas = document["components"]["schemas"]
    assert {"UserUpdated", "UserDeleted", "PurgeNotice"} <= set(schemas)
