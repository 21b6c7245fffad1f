"""Pure ASGI middlewares (Starlette, FastAPI, any ASGI 3 app). Same names as ``secmw.wsgi``."""

from __future__ import annotations

from secmw.asgi.auth import AuthenticationMiddleware
from secmw.asgi.ipfilter import IPFilterMiddleware

__all__ = ["AuthenticationMiddleware", "IPFilterMiddleware"]
