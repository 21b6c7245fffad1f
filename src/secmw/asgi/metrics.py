"""``MetricsMiddleware`` for ASGI apps: allowed requests and latencies, for Prometheus."""

from __future__ import annotations

import time
from typing import Any

from secmw.asgi._util import ASGIApp, Receive, Scope, Send
from secmw.metrics import Metrics, Tally, current_tally, enable


class MetricsMiddleware:
    """Counts every ``http`` request and websocket handshake once, and times it; pure ASGI.

    Place it outermost, around ``SecurityStack`` (or the first secmw layer): each request is
    counted as ``secmw_decisions_total{layer="stack", outcome="allow"|"deny"}`` (``deny`` when a
    layer emitted a denial event while serving it) and timed in
    ``secmw_request_duration_seconds``. Denials are also counted per layer by the audit hook that
    :func:`secmw.metrics.enable` installs. Nothing is buffered; ``lifespan`` passes through.

    Args:
        app: The ASGI app to measure.
        metrics: The collectors to use; default: :func:`secmw.metrics.enable` on ``registry``.
        registry: A ``prometheus_client`` registry; default: the global one.

    Raises:
        ConfigurationError: ``prometheus-client`` is not installed.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None, registry: Any = None):
        self.app = app
        self.metrics = metrics or enable(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        tally = Tally()
        token = current_tally.set(tally)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            current_tally.reset(token)
            self.metrics.finish(tally, time.perf_counter() - started)
