"""``MetricsMiddleware`` for WSGI apps: allowed requests and latencies, for Prometheus."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from secmw.metrics import Metrics, Tally, current_tally, enable
from secmw.wsgi._util import Environ, StartResponse, WSGIApp


class MetricsMiddleware:
    """Counts every request once and times it until the server closes the response.

    Same arguments and metrics as ``secmw.asgi.MetricsMiddleware``: place it outermost, around
    ``SecurityStack``. The response iterable is wrapped so the time covers a streamed body; the
    wrapper forwards ``close()`` as PEP 3333 asks.

    Args:
        app: The WSGI app to measure.
        metrics: The collectors to use; default: :func:`secmw.metrics.enable` on ``registry``.
        registry: A ``prometheus_client`` registry; default: the global one.

    Raises:
        ConfigurationError: ``prometheus-client`` is not installed.
    """

    def __init__(self, app: WSGIApp, *, metrics: Metrics | None = None, registry: Any = None):
        self.app = app
        self.metrics = metrics or enable(registry)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tally = Tally()
        started = time.perf_counter()
        token = current_tally.set(tally)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.metrics.finish(tally, time.perf_counter() - started)
            raise
        finally:
            current_tally.reset(token)  # the layers have decided once the app returned
        return OnClose(body, lambda: self.metrics.finish(tally, time.perf_counter() - started))


class OnClose:
    """The app's response iterable; reports once when the server closes it."""

    __slots__ = ("_body", "_done")

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()
