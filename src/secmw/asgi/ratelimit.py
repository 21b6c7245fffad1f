"""``RateLimitMiddleware`` for ASGI apps."""

from __future__ import annotations

from typing import Any

from secmw import audit
from secmw.asgi._util import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    closing_on_shutdown,
    malformed,
    send_deny,
    with_fields,
)
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.ratelimit.astorage import AsyncLimiter
from secmw.ratelimit.plan import Plan, announce_refusal
from secmw.ratelimit.policy import KeyFunc, RateLimitPolicy
from secmw.ratelimit.windows import Outcome


class RateLimitMiddleware:
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
        self.app = app
        resolved = resolve_settings(settings, overrides)
        self.settings = resolved.rate_limit
        self.policy = RateLimitPolicy(
            self.settings,
            key_func=key_func,
            apikey_header=resolved.api_keys.header,
            apikey_query=resolved.api_keys.query_param,
        )
        self.limiter = AsyncLimiter(self.settings)
        self._enabled = self.settings.enabled
        # Memory only: the store is called directly (no coroutine per request).
        self._memory = self.limiter.memory if self.limiter.remote is None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._enabled and scope["type"] in ("http", "websocket"):
            verdict = await self.verdict(scope)
            if isinstance(verdict, Deny):
                await send_deny(scope, send, verdict)
                return
            if verdict and scope["type"] == "http":
                send = with_fields(scope, send, verdict)
        elif scope["type"] == "lifespan" and self.limiter.remote is not None:
            send = closing_on_shutdown(send, self.aclose)
        await self.app(scope, receive, send)

    async def verdict(self, scope: Scope) -> Deny | list[tuple[bytes, bytes]] | None:
        """Charge the request: the answer when refused (audited), else the fields to add (None
        when it is not limited or the storage is down under ``on_storage_error=allow``)."""
        request = RequestView.from_scope(scope)
        rejection = malformed(request)
        if rejection is not None:
            return rejection
        verdict = self.decide(request)
        if isinstance(verdict, Plan):
            verdict = await self.settle(request, verdict)
        return verdict

    def decide(self, request: RequestView) -> Deny | list[tuple[bytes, bytes]] | Plan | None:
        """:meth:`verdict` for a request already checked for malformation, without a coroutine:
        the verdict itself when the storage is in memory, else the :class:`Plan` that
        :meth:`settle` asks the storage about."""
        plan = self.policy.plan(request)
        if plan is None:
            return None
        if isinstance(plan, Deny):
            audit.emit("ratelimit.unidentified", plan.detail, request=request)
            return plan
        memory = self._memory
        if memory is None:
            return plan
        return self.judge(request, plan, memory.apply(plan.hits))

    async def settle(
        self, request: RequestView, plan: Plan
    ) -> Deny | list[tuple[bytes, bytes]] | None:
        """The verdict for a :class:`Plan` that :meth:`decide` left to the remote storage."""
        return self.judge(request, plan, await self.limiter.apply(plan.hits))

    def judge(
        self, request: RequestView, plan: Plan, result: Outcome | Deny | None
    ) -> Deny | list[tuple[bytes, bytes]] | None:
        """The verdict on a storage's answer for ``plan`` (a refusal is audited)."""
        if result is None:  # storage down, on_storage_error=allow
            return None
        verdict = result if isinstance(result, Deny) else self.policy.conclude_raw(plan, result)
        if isinstance(verdict, Deny):
            announce_refusal(request, plan, verdict)
        return verdict

    async def aclose(self) -> None:
        """Close the Redis client. Done by itself when the app's lifespan shutdown completes."""
        await self.limiter.aclose()
