"""Write the AsyncAPI document FastStream generates for the invalidator to docs/asyncapi.json.

The document comes from `invalidator.main.specification` (the same object the running app
serves at /asyncapi), built with default settings so it does not depend on the environment
it is generated in. `--check` compares instead of writing (exit 1 when the file is stale).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from invalidator.main import specification
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "asyncapi.json"


def render() -> str:
    # Defaults only (no .env, no environment): the published contract uses the `app` prefix.
    settings = load_settings(_env_file=None, redis_url="redis://localhost:6379/0")
    document = json.loads(specification(settings).to_specification().to_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
