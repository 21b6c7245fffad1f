"""A WSGI app under ``RateLimitMiddleware``, configured by ``SECMW_*``, for gunicorn workers.

Same behaviour as :mod:`tests.integration.apps.ratelimit_asgi`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from secmw import SecuritySettings
from secmw.core.request import RequestView
from secmw.wsgi.ratelimit import RateLimitMiddleware


def client_key(request: RequestView) -> str | None:
    """``X-Client``, else the client address."""
    return request.headers.get("x-client") or request.client


def pid_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """200 with the worker's pid."""
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def limited(settings: SecuritySettings, strategy: str) -> RateLimitMiddleware:
    """The app under the environment's rate limits, with ``strategy``."""
    section = settings.rate_limit.model_copy(update={"strategy": strategy})
    return RateLimitMiddleware(pid_app, settings=settings, key_func=client_key, rate_limit=section)


_settings = SecuritySettings()
_fixed = limited(_settings, "fixed-window")
_moving = limited(_settings, "moving-window")


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Route ``/fixed`` to the fixed-window limiter, the rest to the moving window."""
    target = _fixed if environ.get("PATH_INFO", "").startswith("/fixed") else _moving
    return target(environ, start_response)
