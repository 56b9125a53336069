"""What the services export, and which metrics a PromQL expression names.

`exported_names()` builds each service's metrics for real — the api through `create_app` with
test settings (nothing connects before the lifespan), the session service and the invalidator
through their metrics classes on a fresh registry, as their factories do — and lists every
series name a scrape can show (a counter `x` is scraped as `x_total`, a histogram as
`x_bucket`, `x_sum`, `x_count`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry

from api.metrics import ApiMetrics
from invalidator.metrics import InvalidatorMetrics
from session_service.metrics import SessionMetrics
from shared.metrics import make_registry
from shared.streams import StreamMetrics

_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}

# Series Prometheus makes itself for every target.
MADE_BY_PROMETHEUS: Final = frozenset({"up"})


def series_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def api_registry() -> CollectorRegistry:
    return ApiMetrics().registry  # every api metric is made by ApiMetrics


def session_registry() -> CollectorRegistry:
    registry = make_registry()
    SessionMetrics(registry)
    StreamMetrics.create(registry)  # the consumer's, made in the lifespan
    return registry


def invalidator_registry() -> CollectorRegistry:
    registry = make_registry()
    InvalidatorMetrics.create(registry)
    return registry


def exported_names() -> dict[str, set[str]]:
    """Series names by service."""
    return {
        "api": series_names(api_registry()),
        "session": series_names(session_registry()),
        "invalidator": series_names(invalidator_registry()),
    }


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana's $__rate_interval, ${datasource}
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every identifier that is not a function,
    an aggregation, a keyword, a label (in braces or a grouping), a string or a duration."""
    text = _STRINGS.sub('""', expr)
    text = _VARIABLES.sub("1", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        called = text[match.end() :].lstrip().startswith("(")
        if not called and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def unknown_names(exprs: Iterable[str], known: set[str]) -> dict[str, set[str]]:
    """Each expression that names a metric outside `known` (or none at all), with the names."""
    found: dict[str, set[str]] = {}
    for expr in exprs:
        names = metric_names(expr)
        if not names or names - known:
            found[expr] = names - known
    return found
