"""deploy/prometheus checked by promtool: the config parses, the rules load, their unit tests
(deploy/prometheus/tests) pass. promtool comes from PATH or `make promtool` (.tools/bin)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    fetched = ROOT / ".tools" / "bin" / "promtool"
    if fetched.is_file():
        return str(fetched)
    pytest.skip("promtool is neither on PATH nor at .tools/bin/promtool: run `make promtool`")


def _run(*args: str) -> str:
    done = subprocess.run(
        [_promtool(), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the output goes into the assertion message
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_scrape_config_parses() -> None:
    # --syntax-only: the session job's token file exists only inside the Prometheus container.
    assert "SUCCESS" in _run("check", "config", "--syntax-only", "prometheus.yml")


def test_the_rule_files_load_without_lint_findings() -> None:
    rules = sorted(str(p.relative_to(PROMETHEUS)) for p in PROMETHEUS.glob("rules/*.yml"))
    assert rules
    output = _run("check", "rules", *rules)
    assert "SUCCESS" in output
    assert "WARNING" not in output


def test_the_alert_rules_pass_their_unit_tests() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in PROMETHEUS.glob("tests/*.yml"))
    assert tests
    assert "SUCCESS" in _run("test", "rules", *tests)
