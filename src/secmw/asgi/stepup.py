"""``StepUpMiddleware`` for ASGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from secmw import audit
from secmw.asgi._util import ASGIApp, Receive, Scope, Send, refuse_malformed, send_deny
from secmw.auth.base import AsyncFailureThrottle
from secmw.auth.stepup import Charge, LookUpSecret, Need, Refund, UseStep, decide
from secmw.auth.throttle import AsyncFailedAuthThrottle
from secmw.auth.totp import AsyncReplayStore, StepUp, replay_store_from_settings
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView

SecretLookup = Callable[[Principal], "str | Awaitable[str | None] | None"]


class StepUpMiddleware:
    """Requires ``X-TOTP-Code`` where ``totp.paths`` / ``totp.scopes`` say so.

    Install it inside ``AuthenticationMiddleware`` (it reads the principal that layer
    published). Answers: 401 ``totp_required`` when the code is missing, 401 ``invalid_totp``
    when it is wrong or already used, 429 once the principal or the address has no attempts left,
    403 ``totp_not_enrolled`` when the principal has no secret, 503 (with ``Retry-After``) when
    the secret lookup or the replay store fails, and 401 when nobody is authenticated.

    Args:
        app: The ASGI app to protect.
        secret_for: The principal's base32 TOTP secret, or None when not enrolled (may be async).
        settings: Settings to build from; default: the environment.
        step_up: A ready policy (overrides ``settings``).
        replay: Replay store (default: memory, or Redis with ``totp.redis_url``).
        throttle: Throttle of wrong codes; default: ``totp.failures`` per principal and
            per address, on the rate-limit storage (none only with ``totp.throttle=false``).
        **overrides: Settings sections, for example ``totp={"paths": ["/admin/**"]}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        secret_for: SecretLookup,
        settings: SecuritySettings | None = None,
        step_up: StepUp | None = None,
        replay: AsyncReplayStore | None = None,
        throttle: AsyncFailureThrottle | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.secret_for = secret_for
        resolved = resolve_settings(settings, overrides)
        self.step_up = step_up or StepUp.from_settings(resolved.totp, resolved.auth.realm)
        self.replay = replay or replay_store_from_settings(resolved.totp)
        self._own_throttle = throttle is None and resolved.totp.throttle
        if self._own_throttle:
            throttle = AsyncFailedAuthThrottle.for_step_up(resolved)
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = RequestView.from_scope(scope)
        if await refuse_malformed(scope, send, request):
            return
        principal = request.state.get("principal", ANONYMOUS)
        if self.step_up.needed(request, principal):
            denied = await self.check(request, principal)
            if denied is not None:
                audit.emit("totp.denied", denied.detail, request=request, principal=principal.id)
                await send_deny(scope, send, denied)
                return
        await self.app(scope, receive, send)

    async def check(self, request: RequestView, principal: Principal) -> Deny | None:
        """None when the request carries a fresh, valid code for ``principal``."""
        decision = decide(self.step_up, request, principal, self.throttle is not None)
        answer: Any = None
        error: Exception | None = None
        while True:
            try:
                need = decision.send(answer) if error is None else decision.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            answer, error = None, None
            try:
                answer = await self._perform(request, need)
            except Exception as exc:  # handed to the decision, which says what it means
                error = exc

    async def _perform(self, request: RequestView, need: Need) -> Any:
        if isinstance(need, Charge):
            assert self.throttle is not None  # decide() charges only when throttled
            return await self.throttle.charge(request, need.credential)
        if isinstance(need, LookUpSecret):
            secret = self.secret_for(need.principal)
            return await secret if inspect.isawaitable(secret) else secret
        if isinstance(need, UseStep):
            return await self.replay.ause(need.subject, need.step, need.ttl)
        if isinstance(need, Refund):
            await need.attempt.refund()
        return None

    async def aclose(self) -> None:
        """Close the Redis client of the throttle this middleware built, if any."""
        if self._own_throttle and isinstance(self.throttle, AsyncFailedAuthThrottle):
            await self.throttle.aclose()
