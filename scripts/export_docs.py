"""Write the published contract documents to docs/: the stream events' JSON Schema
(events.schema.json, from the pydantic models) and the invalidator's AsyncAPI document
(asyncapi.json, the one FastStream generates and the running app serves at /asyncapi).

`--check` compares instead of writing and exits 1 when a committed file is stale, so tests
keep the published documents and the code in step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from invalidator.config import InvalidatorSettings
from invalidator.main import specification
from shared.events import json_schema
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def render_event_schema() -> str:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Stream events (one envelope in the entry's `data` field)",
        **json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_asyncapi() -> str:
    # Defaults only (no .env, no environment): the published contract uses the `app` prefix.
    settings = load_settings(
        InvalidatorSettings, _env_file=None, redis_url="redis://localhost:6379/0"
    )
    document = json.loads(specification(settings).to_specification().to_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


DOCUMENTS: dict[str, Callable[[], str]] = {
    "events.schema.json": render_event_schema,
    "asyncapi.json": render_asyncapi,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs-dir", type=Path, default=DOCS)
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = 0
    for name, render in DOCUMENTS.items():
        path: Path = args.docs_dir / name
        text = render()
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is stale: run `make docs`", file=sys.stderr)
                stale += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
