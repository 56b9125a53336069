"""Cache metrics: per-call hits, misses, errors and latency, cheap enough for the hit path."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.metrics import LATENCY_BUCKETS


class CacheMetrics:
    """`<name>_operations_total{op,result}` and `<name>_operation_seconds{op}` (histogram).

    Kept in plain ints and floats and exported by a collector at scrape time: prometheus
    client's locked children cost several percent of a cache hit. Updated only from the
    event loop's thread, so no lock is needed.
    """

    def __init__(self, registry: CollectorRegistry | None, name: str = "cache") -> None:
        self.name = name
        self.calls: dict[tuple[str, str], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        if registry is not None:
            registry.register(_CacheCollector(self))

    def count(self, op: str, result: str) -> None:
        key = (op, result)
        self.calls[key] = self.calls.get(key, 0) + 1

    def value(self, op: str, result: str) -> int:
        return self.calls.get((op, result), 0)

    def observe(self, op: str, seconds: float) -> None:
        buckets = self._buckets.get(op)
        if buckets is None:
            buckets = self._buckets[op] = [0] * (len(LATENCY_BUCKETS) + 1)
            self._sums[op] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sums[op] += seconds

    def latency_sum(self, op: str) -> float:
        return self._sums.get(op, 0.0)

    def families(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            f"{self.name}_operations",
            "cache calls by operation and result",
            labels=["op", "result"],
        )
        for (op, result), count in sorted(self.calls.items()):
            calls.add_metric([op, result], count)
        yield calls
        latency = HistogramMetricFamily(
            f"{self.name}_operation_seconds", "cache call latency", labels=["op"]
        )
        for op, counts in sorted(self._buckets.items()):
            cumulative = list(accumulate(counts))
            bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
            latency.add_metric([op], list(zip(bounds, cumulative, strict=True)), self._sums[op])
        yield latency


class _CacheCollector(Collector):
    def __init__(self, metrics: CacheMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()
