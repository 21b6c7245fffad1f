"""``RateLimitMiddleware`` for ASGI apps."""

from __future__ import annotations

from typing import Any

from secmw.asgi._util import ASGIApp
from secmw.asgi.driver import Driver
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.ratelimit.astorage import AsyncLimiter
from secmw.ratelimit.gate import rate_limit_gate
from secmw.ratelimit.policy import KeyFunc


class RateLimitMiddleware(Driver):
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

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        key_func: KeyFunc | None = None,
        **overrides: Any,
    ) -> None:
        resolved = resolve_settings(settings, overrides)
        self.settings = resolved.rate_limit
        gate = rate_limit_gate(
            self.settings, resolved.api_keys, key_func=key_func, limiter=AsyncLimiter, raw=True
        )
        self.policy, self.limiter = gate.policy, gate.limiter
        enabled = self.settings.enabled
        remote = self.limiter.remote is not None
        super().__init__(app, [gate] if enabled else [], closes=remote)

    async def aclose(self) -> None:
        """Close the Redis client. Done by itself when the app's lifespan shutdown completes."""
        await self.limiter.aclose()
