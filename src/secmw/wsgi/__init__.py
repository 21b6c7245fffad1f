"""WSGI middlewares (Flask, any PEP 3333 app). Same names as ``secmw.asgi``."""

from __future__ import annotations

from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.headers import SecurityHeadersMiddleware
from secmw.wsgi.ipfilter import IPFilterMiddleware
from secmw.wsgi.metrics import MetricsMiddleware
from secmw.wsgi.ratelimit import RateLimitMiddleware
from secmw.wsgi.stack import SecurityStack
from secmw.wsgi.stepup import StepUpMiddleware

__all__ = [
    "AuthenticationMiddleware",
    "IPFilterMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "SecurityHeadersMiddleware",
    "SecurityStack",
    "StepUpMiddleware",
]
