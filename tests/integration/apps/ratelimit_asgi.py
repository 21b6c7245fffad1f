"""An ASGI app under ``RateLimitMiddleware``, configured by ``SECMW_*``, for multi-worker runs.

``/fixed/...`` is limited with the fixed window, anything else with the moving window, so one
server run checks both. Answers carry the worker's pid, so a test can see requests spread over
processes. The key is the ``X-Client`` header when present (to place identities on chosen
cluster nodes), else the client address.
"""

from __future__ import annotations

import os
from typing import Any

from secmw import SecuritySettings
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.core.request import RequestView


def client_key(request: RequestView) -> str | None:
    """``X-Client``, else the client address."""
    return request.headers.get("x-client") or request.client


async def pid_app(scope: Any, receive: Any, send: Any) -> None:
    """200 with the worker's pid."""
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def limited(settings: SecuritySettings, strategy: str) -> RateLimitMiddleware:
    """The app under the environment's rate limits, with ``strategy``."""
    section = settings.rate_limit.model_copy(update={"strategy": strategy})
    return RateLimitMiddleware(pid_app, settings=settings, key_func=client_key, rate_limit=section)


_settings = SecuritySettings()
_fixed = limited(_settings, "fixed-window")
_moving = limited(_settings, "moving-window")


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Route ``/fixed`` to the fixed-window limiter, the rest to the moving window."""
    target = _fixed if scope.get("path", "").startswith("/fixed") else _moving
    await target(scope, receive, send)
