"""``SecurityStack``: every layer in one fixed order, for ASGI apps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secmw import audit
from secmw.asgi._util import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    closing_on_shutdown,
    send_deny,
    with_fields,
)
from secmw.asgi.auth import AuthenticationMiddleware, leave
from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.asgi.metrics import MetricsMiddleware
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.asgi.stepup import SecretLookup, StepUpMiddleware
from secmw.auth.throttle import AsyncFailedAuthThrottle
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.layers import Layer, stack_layers
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.ratelimit.plan import Plan
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore


class SecurityStack:
    """All secmw layers around an app, in one documented order (outermost first):

    1. security headers, so every answer (401, 403, 429, 500) carries them;
    2. client address resolution and the IP filter;
    3. the failed-authentication throttle, then authentication;
    4. TOTP step-up, when ``secret_for`` is given (``totp.*`` says where);
    5. rate limiting (keyed on the principal, else the resolved address);
    6. the app.

    The request is parsed once (the :class:`~secmw.core.request.RequestView` is kept in the scope
    and shared by every layer). An ``http`` request runs the layers in one call, with one send
    wrapper for the headers, the rate-limit fields and the challenges; websockets, and stacks
    with step-up or metrics, go through the middlewares composed. Both give the same answers,
    from the same layer objects. Each layer can be switched off with its ``enabled`` setting
    (``headers.enabled=false``...); the throttle runs with rate limiting. CORS preflights
    are neither authenticated nor rate-limited, so the framework's CORS middleware works inside
    or outside the stack. The Redis connections close when the app's lifespan shutdown
    completes (or with :meth:`aclose`).

    Args:
        app: The ASGI app to protect.
        settings: Settings to build from; default: the environment.
        revocation: The JWT ``jti`` denylist, shared with ``secmw.tokens.TokenIssuer``.
        secret_for: Looks up a principal's TOTP secret; enables the step-up layer.
        **overrides: Settings sections, for example ``jwt={"secret": "..."}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        secret_for: SecretLookup | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = resolved = resolve_settings(settings, overrides)
        audit.configure(resolved.audit)
        self.app = app
        throttle = (
            AsyncFailedAuthThrottle(settings=resolved) if resolved.rate_limit.enabled else None
        )
        lookup = secret_for or _no_secret  # only used when secret_for was given
        builders: dict[Layer, Callable[[ASGIApp], ASGIApp]] = {
            "rate_limit": lambda app: RateLimitMiddleware(app, settings=resolved),
            # Wrong codes have budgets of their own (totp.failures), built by the layer.
            "step_up": lambda app: StepUpMiddleware(app, secret_for=lookup, settings=resolved),
            "auth": lambda app: AuthenticationMiddleware(
                app, settings=resolved, throttle=throttle, revocation=revocation
            ),
            "ip": lambda app: IPFilterMiddleware(app, settings=resolved),
            "headers": lambda app: SecurityHeadersMiddleware(app, settings=resolved),
            "metrics": lambda app: MetricsMiddleware(app),
        }
        inner = app
        built: dict[Layer, Any] = {}
        for layer in stack_layers(resolved, step_up=secret_for is not None):
            inner = built[layer] = builders[layer](inner)
        self.throttle = throttle
        self._entry = inner
        # With the four core layers only, an http request runs them as one call (same order,
        # same steps, one send wrapper); websockets and stacks with step-up or metrics go
        # through the composed middlewares.
        self._fused = not {"step_up", "metrics"} & built.keys()
        self._headers: SecurityHeadersMiddleware | None = built.get("headers")
        self._ip: IPFilterMiddleware | None = built.get("ip")
        self._auth: AuthenticationMiddleware | None = built.get("auth")
        self._limiter: RateLimitMiddleware | None = built.get("rate_limit")
        self._step_up: StepUpMiddleware | None = built.get("step_up")
        step_up_throttle = getattr(self._step_up, "throttle", None)
        limiters = [
            layer.limiter
            for layer in (self._limiter, throttle, step_up_throttle)
            if isinstance(layer, RateLimitMiddleware | AsyncFailedAuthThrottle)
        ]
        self._remote = any(limiter.remote is not None for limiter in limiters)

    async def aclose(self) -> None:
        """Close the Redis clients of the rate-limit layer and of the failed-attempt throttles,
        and the identity providers' connection pools. Done by itself when the app's lifespan
        shutdown completes (the server must run the lifespan: uvicorn's default
        ``--lifespan auto`` does for Starlette and FastAPI)."""
        if self._auth is not None:
            await self._auth.aclose()
        if self._limiter is not None:
            await self._limiter.aclose()
        if self.throttle is not None:
            await self.throttle.aclose()
        if self._step_up is not None:
            await self._step_up.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._fused or scope["type"] != "http":
            if scope["type"] == "lifespan" and self._remote:
                send = closing_on_shutdown(send, self.aclose)
            await self._entry(scope, receive, send)
        elif self._headers is not None:
            await self._headers.around(self._layers, scope, receive, send)
        else:
            await self._layers(scope, receive, send)

    async def _layers(self, scope: Scope, receive: Receive, send: Send) -> None:
        """IP filter, authentication, rate limit and the app, for an ``http`` request.

        A request whose token the cache answers for takes no coroutine until the app: the
        layers' synchronous steps (``known``, ``decide``) give what their coroutines would."""
        if self._ip is not None:
            refusal = self._ip.refusal(scope)
            if refusal is not None:
                await send_deny(scope, send, refusal)
                return
        auth, tokens = self._auth, None
        request: RequestView | None = None  # well formed once authentication let it through
        if auth is not None:
            request = RequestView.from_scope(scope)
            principal = auth.known(request)
            if principal is None:
                resolved = await auth.resolve(scope)
                if isinstance(resolved, Deny):
                    await send_deny(scope, send, resolved)
                    return
                principal = resolved[1]
            tokens = auth.enter(scope, request, principal)
            send = auth.challenging(scope, send)
        try:
            limiter = self._limiter
            if limiter is not None:
                if request is None:
                    verdict = await limiter.verdict(scope)
                else:
                    decided = limiter.decide(request)
                    verdict = (
                        await limiter.settle(request, decided)
                        if isinstance(decided, Plan)
                        else decided
                    )
                if isinstance(verdict, Deny):
                    await send_deny(scope, send, verdict)
                    return
                if verdict:
                    send = with_fields(scope, send, verdict)
            await self.app(scope, receive, send)
        finally:
            if tokens is not None:
                leave(tokens)


def _no_secret(principal: Principal) -> None:
    return None
