"""``RateLimitMiddleware`` for ASGI apps."""

from __future__ import annotations

from secmw.asgi.driver import Driver
from secmw.middleware import RateLimitLayer


class RateLimitMiddleware(Driver, RateLimitLayer):
    """Rate limits ``http`` requests and ``websocket`` handshakes; pure ASGI.

    A request over a limit gets 429 ``application/problem+json`` with ``Retry-After``; every
    response under a limit carries the rate-limit fields (``rate_limit.headers``), added on
    ``http.response.start`` without buffering the body. A websocket over its limit is refused
    before accept. ``lifespan`` passes through; once the app's shutdown completes, the Redis
    client is closed (:meth:`aclose`). Place it after the authentication layer so limits
    can key on the principal. Redis is reached through ``limits.aio``: nothing blocks the loop.

    Args:
        app: The ASGI app to protect.
        settings: Settings to build from; default: the environment.
        key_func: Custom key: request view -> identity (None when it cannot tell).
        **overrides: Settings sections, for example ``rate_limit={"default": "10/second"}``.
    """

    async def aclose(self) -> None:
        """Close the Redis client. Done by itself when the app's lifespan shutdown completes."""
        await self.limiter.aclose()
