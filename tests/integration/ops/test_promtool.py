"""deploy/prometheus checked by promtool: the config parses, the rules load, their unit tests
(deploy/prometheus/tests) pass. promtool comes from PATH or `make promtool` (.tools/bin)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "redis-platform.json"


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


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no offline "parse this query": each query becomes a recording rule, which
    # `check rules` parses. Grafana's own interval variable becomes a plain range.
    queries: list[str] = []
    pending = list(json.loads(DASHBOARD.read_text())["panels"])
    while pending:
        panel = pending.pop()
        pending.extend(panel.get("panels", []))
        queries.extend(t["expr"] for t in panel.get("targets", []))
    assert queries
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m")}
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _run("check", "rules", str(path))
