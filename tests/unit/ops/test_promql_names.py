"""The metric-name reader the dashboard and rule tests rely on."""

from __future__ import annotations

import pytest

from tests.unit.ops.exported import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("stream_lag", {"stream_lag"}),
        ('max by (group) (stream_lag{group="invalidator"}) > 1000', {"stream_lag"}),
        (
            'histogram_quantile(0.99, sum by (job, le) (rate(x_bucket{route!~"/health"}[5m])))',
            {"x_bucket"},
        ),
        (
            "sum(rate(a_total[$__rate_interval])) / sum(rate(b_total[${window}]))",
            {"a_total", "b_total"},
        ),
        ('absent(up{job="api"}) or absent(up{job="session"})', {"up"}),
        ("a / on (job) group_left (version) b offset 5m > 1e3", {"a", "b"}),
        ('sum without (instance) (c{le="+Inf", path="{x}"}) unless bool d', {"c", "d"}),
        ('label_replace(e, "dst", "$1", "src", "(.*)")', {"e"}),
    ],
)
def test_names_are_the_selected_metrics_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
