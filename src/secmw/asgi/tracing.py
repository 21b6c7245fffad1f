"""``TracingMiddleware`` for ASGI apps: the OpenTelemetry span around the stack."""

from __future__ import annotations

from typing import Any

from secmw.asgi._util import ASGIApp, Message, Receive, Scope, Send
from secmw.core.request import ASGI_KEY
from secmw.otel import Telemetry, current


class TracingMiddleware:
    """One span per ``http`` request and websocket handshake around ``app``; pure ASGI.

    ``SecurityStack`` puts it outermost when ``otel.enabled`` (and wraps its gates so each
    decision is an event of this span). The span ends when the app returns, with the status of
    the response start; ``lifespan`` passes through.

    Args:
        app: The ASGI app (the stack's driver).
        telemetry: Tracer and instruments; default: the active ones, else
            :func:`secmw.otel.enable` on the global providers.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry | None = None) -> None:
        self.app = app
        self.telemetry = telemetry or current()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        telemetry = self.telemetry
        client = scope.get("client")
        method = scope.get("method", "GET") if kind == "http" else "WEBSOCKET"
        span, token = telemetry.start(method, client[0] if client else None)
        status: list[int] = []

        async def send_status(message: Message) -> None:
            sent = message["type"]
            if sent == "http.response.start":
                status.append(message["status"])
            elif sent == "websocket.accept":
                status.append(101)
            elif sent == "websocket.close" and not status:
                status.append(403)  # a handshake refused before accept (ASGI spec: HTTP 403)
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            telemetry.detach(token)
            view: Any = scope.get(ASGI_KEY)
            telemetry.finish(span, status[0] if status else None, view)
