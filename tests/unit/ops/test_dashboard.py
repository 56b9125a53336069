"""deploy/grafana: the dashboard's every query names only metrics the services export, and
the provisioning and compose override point at files that exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from tests.unit.ops.conftest import DEPLOY, ROOT
from tests.unit.ops.exported import (
    MADE_BY_PROMETHEUS,
    metric_names,
    unknown_names,
)

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "redis-platform.json"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _queries() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]


def test_every_panel_but_rows_has_a_query_and_a_unique_id() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    assert len(panels) >= 20
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_every_query_names_only_exported_metrics(exported_anywhere: set[str]) -> None:
    known = exported_anywhere | MADE_BY_PROMETHEUS
    assert unknown_names(_queries(), known) == {}


def test_the_signals_of_the_alerts_are_on_the_dashboard() -> None:
    shown = set().union(*(metric_names(q) for q in _queries()))
    wanted = {
        "stream_lag",
        "stream_pending",
        "stream_oldest_pending_age_seconds",
        "stream_dead_letters",
        "outbox_backlog",
        "outbox_oldest_unsent_age_seconds",
        "circuit_breaker_open",
        "ratelimit_fallback_active",
        "ratelimit_decisions_total",
        "session_service_requests_total",
        "http_requests_total",
        "http_request_seconds_bucket",
        "invalidation_lag_seconds_bucket",
    }
    assert wanted - shown == set()


def test_every_service_has_panels(exported: dict[str, set[str]]) -> None:
    shown = set().union(*(metric_names(q) for q in _queries()))
    for service, names in exported.items():
        own = names - set().union(*(n for s, n in exported.items() if s != service))
        assert own & shown, f"no panel shows a metric only {service} exports"


def test_queries_use_the_datasource_variable() -> None:
    dashboard = _dashboard()
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_compose_override_mounts_what_exists() -> None:
    override = yaml.safe_load((DEPLOY / "docker-compose.observability.yml").read_text())
    for service in override["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "redis-platform.yml").read_text()
    )
    grafana_volumes = override["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in (
        grafana_volumes
    )
