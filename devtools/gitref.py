"""The sources of another commit, for a benchmark's in-run baseline ("today's" code).

`export_tree(ref)` unpacks `git archive <ref>` into a temporary directory (the repository and
its worktrees are left untouched); `source_path(tree)` is the PYTHONPATH that makes a process
import that commit's packages ahead of the workspace's editable installs. The commit must
need no dependency the current lock lacks.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOTS = (
    "shared/src",
    "services/api/src",
    "services/invalidator/src",
    "services/session/src",
)


def export_tree(ref: str) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target = Path(tempfile.mkdtemp(prefix=f"tree-{ref.replace('/', '-')[:20]}-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def source_path(tree: Path) -> str:
    return ":".join(str(tree / root) for root in PACKAGE_ROOTS)
