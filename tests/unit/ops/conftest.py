"""Fixtures for the checks of deploy/: what the services export, and where deploy/ is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.ops.exported import exported_names

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="session")
def exported() -> dict[str, set[str]]:
    return exported_names()


@pytest.fixture(scope="session")
def exported_anywhere(exported: dict[str, set[str]]) -> set[str]:
    return set().union(*exported.values())
