"""Request metrics and access logging as pure ASGI middleware (no per-request task hop)."""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics

logger = logging.getLogger("api.access")


class HttpMetricsMiddleware:
    """Counts and times every request by route template (never by raw path: ids would
    explode the label set); logs 5xx at WARNING and every request at DEBUG."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        children = self._children.get((method, route, status))
        if children is None:
            # Bound once per (method, route, status): `labels()` per request is measurable.
            children = (
                self.metrics.requests.labels(method, route, str(status)),
                (self.metrics.latency.labels(route)),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if status >= 500:
            logger.warning("%s %s -> %d in %.1f ms", scope["method"], route, status, seconds * 1e3)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s -> %d in %.1f ms", scope["method"], route, status, seconds * 1e3)
