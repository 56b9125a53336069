"""The services as real processes, started by the one launcher (devtools/launcher.py).

Every process a test starts is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.launcher import Launcher


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    with Launcher(tmp_path / "processes") as started:
        yield started
