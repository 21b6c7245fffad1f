"""``StepUpMiddleware`` for ASGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from secmw import audit
from secmw.asgi._util import ASGIApp, Receive, Scope, Send, refuse_malformed, send_deny
from secmw.auth.base import AsyncFailureThrottle, Credential
from secmw.auth.totp import AsyncReplayStore, StepUp, replay_store_from_settings
from secmw.principal import ANONYMOUS, Principal
from secmw.problems import Deny
from secmw.request import RequestView
from secmw.settings import SecuritySettings, resolve_settings

SecretLookup = Callable[[Principal], "str | Awaitable[str | None] | None"]


class StepUpMiddleware:
    """Requires ``X-TOTP-Code`` where ``SECMW_TOTP__PATHS`` / ``SECMW_TOTP__SCOPES`` say so.

    Install it inside ``AuthenticationMiddleware`` (it reads the principal that layer
    published). Answers: 401 ``totp_required`` when the code is missing, 401 ``invalid_totp``
    when it is wrong or already used (reported to the throttle), 403 ``totp_not_enrolled`` when
    the principal has no secret, and 401 when nobody is authenticated.

    Args:
        app: The ASGI app to protect.
        secret_for: The principal's base32 TOTP secret, or None when not enrolled (may be async).
        settings: Settings to build from; default: the environment.
        step_up: A ready policy (overrides ``settings``).
        replay: Replay store (default: memory, or Redis with ``SECMW_TOTP__REDIS_URL``).
        throttle: Failed-authentication throttle; wrong codes count as failures.
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
        if step_up is None or replay is None:
            resolved = resolve_settings(settings, overrides)
            step_up = step_up or StepUp.from_settings(resolved.totp, resolved.auth.realm)
            replay = replay or replay_store_from_settings(resolved.totp)
        self.step_up = step_up
        self.replay = replay
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
        step_up = self.step_up
        if not principal.is_authenticated:
            return step_up.deny(401, "authentication required", "authentication_required")
        code = step_up.code(request)
        if code is None:
            return step_up.deny(401, "second factor required", "totp_required")
        credential = Credential("totp", "", principal.id)  # the code itself is never passed on
        if self.throttle is not None:
            blocked = await self.throttle.blocked(request, credential)
            if blocked is not None:
                return blocked
        try:
            secret = self.secret_for(principal)
            if inspect.isawaitable(secret):
                secret = await secret
        except Exception as exc:  # the app's lookup failed (database down...): not the client's
            audit.emit("totp.lookup_failed", type(exc).__name__, principal=principal.id)
            return Deny(503, "second factor check unavailable", "temporarily_unavailable")
        if not secret:
            return step_up.deny(403, "second factor not enrolled", "totp_not_enrolled")
        try:
            step = step_up.match(secret, code)
        except ValueError:  # a secret that is not base32: the app's data, not the client's fault
            audit.emit("totp.bad_secret", "stored secret is not base32", principal=principal.id)
            return step_up.deny(403, "second factor not enrolled", "totp_not_enrolled")
        try:
            fresh = step is not None and await self.replay.ause(
                principal.id, step, step_up.replay_ttl
            )
        except Exception as exc:  # replay store down: refuse rather than accept a replay
            audit.emit("totp.store_unavailable", type(exc).__name__)
            return Deny(503, "second factor check unavailable", "temporarily_unavailable")
        if not fresh:
            if self.throttle is not None:
                await self.throttle.failed(request, credential)
            return step_up.deny(401, "second factor invalid", "invalid_totp")
        return None
