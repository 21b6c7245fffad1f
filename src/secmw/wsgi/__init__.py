"""WSGI middlewares (Flask, any PEP 3333 app). Same names as ``secmw.asgi``."""

from __future__ import annotations

from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.ipfilter import IPFilterMiddleware

__all__ = ["AuthenticationMiddleware", "IPFilterMiddleware"]
