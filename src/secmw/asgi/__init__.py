"""Pure ASGI middlewares (Starlette, FastAPI, any ASGI 3 app). Same names as ``secmw.wsgi``."""

from __future__ import annotations

from secmw.asgi.auth import AuthenticationMiddleware
from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.asgi.metrics import MetricsMiddleware
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.asgi.stack import SecurityStack
from secmw.asgi.stepup import StepUpMiddleware

__all__ = [
    "AuthenticationMiddleware",
    "IPFilterMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "SecurityHeadersMiddleware",
    "SecurityStack",
    "StepUpMiddleware",
]
