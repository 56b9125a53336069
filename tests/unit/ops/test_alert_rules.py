"""deploy/prometheus/rules: every alert names only metrics the services export, carries a
severity, and points at a runbook section that docs/operations.md has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.ops.conftest import DEPLOY, ROOT
from tests.unit.ops.exported import MADE_BY_PROMETHEUS, unknown_names

RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            rules.extend(group["rules"])
    return rules


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_there_are_rule_files_with_alerts() -> None:
    assert RULE_FILES
    assert len([r for r in _rules() if "alert" in r]) >= 10


def test_every_rule_names_only_exported_metrics(exported_anywhere: set[str]) -> None:
    known = exported_anywhere | MADE_BY_PROMETHEUS
    known |= {r["record"] for r in _rules() if "record" in r}
    assert unknown_names([r["expr"] for r in _rules()], known) == {}


@pytest.mark.parametrize("rule", [r for r in _rules() if "alert" in r], ids=lambda r: r["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"]
    page, _, anchor = rule["annotations"]["runbook"].partition("#")
    assert anchor == rule["alert"].lower()
    assert anchor in _anchors(ROOT / page), f"{page} has no section {rule['alert']}"


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in _rules() if "alert" in r]
    assert len(names) == len(set(names))
