"""``TracingMiddleware`` for WSGI apps: the OpenTelemetry span around the stack."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from secmw.core.request import WSGI_KEY
from secmw.otel import Telemetry, current
from secmw.wsgi._util import Environ, ExcInfo, Headers, StartResponse, WSGIApp
from secmw.wsgi.metrics import OnClose


class TracingMiddleware:
    """One span per request around ``app``; same arguments as ``secmw.asgi``'s twin.

    The span is current while the gates and the app run, and ends when the server closes the
    response (so a streamed body is inside it); the wrapper forwards ``close()`` (PEP 3333).

    Args:
        app: The WSGI app (the stack's driver).
        telemetry: Tracer and instruments; default: the active ones, else
            :func:`secmw.otel.enable` on the global providers.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, app: WSGIApp, *, telemetry: Telemetry | None = None) -> None:
        self.app = app
        self.telemetry = telemetry or current()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        telemetry = self.telemetry
        method = environ.get("REQUEST_METHOD", "GET")
        span, token = telemetry.start(method, environ.get("REMOTE_ADDR") or None)
        status: list[int] = []

        def start(
            line: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            status[:] = [int(line[:3])]
            return start_response(line, headers, exc_info)

        def done() -> None:
            telemetry.finish(span, status[0] if status else None, environ.get(WSGI_KEY))

        try:
            body = self.app(environ, start)
        except BaseException:
            done()
            raise
        finally:
            telemetry.detach(token)
        return OnClose(body, done)
