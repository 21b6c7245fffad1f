"""``StepUpMiddleware`` for WSGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.auth.base import Credential, FailureThrottle
from secmw.auth.totp import ReplayStore, StepUp, replay_store_from_settings
from secmw.principal import ANONYMOUS, Principal
from secmw.problems import Deny
from secmw.request import RequestView
from secmw.settings import SecuritySettings, resolve_settings
from secmw.wsgi._util import (
    Environ,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
)

SecretLookup = Callable[[Principal], "str | None"]


class StepUpMiddleware:
    """Requires ``X-TOTP-Code`` where ``SECMW_TOTP__PATHS`` / ``SECMW_TOTP__SCOPES`` say so.

    Wrap it inside ``AuthenticationMiddleware``; same arguments and answers as the ASGI twin
    (``secret_for`` is synchronous here).
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        secret_for: SecretLookup,
        settings: SecuritySettings | None = None,
        step_up: StepUp | None = None,
        replay: ReplayStore | None = None,
        throttle: FailureThrottle | None = None,
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = RequestView.from_environ(environ)
        malformed = refuse_malformed(request, start_response)
        if malformed is not None:
            return malformed
        denied = self.refuse(request)
        if denied is not None:
            return respond_deny(start_response, denied, request.method)
        return self.app(environ, start_response)

    def refuse(self, request: RequestView) -> Deny | None:
        """The denial (announced as ``totp.denied``) when the request needs a code it lacks,
        else None."""
        principal = request.state.get("principal", ANONYMOUS)
        if self.step_up.needed(request, principal):
            denied = self.check(request, principal)
            if denied is not None:
                audit.emit("totp.denied", denied.detail, request=request, principal=principal.id)
                return denied
        return None

    def check(self, request: RequestView, principal: Principal) -> Deny | None:
        """None when the request carries a fresh, valid code for ``principal``."""
        step_up = self.step_up
        if not principal.is_authenticated:
            return step_up.deny(401, "authentication required", "authentication_required")
        code = step_up.code(request)
        if code is None:
            return step_up.deny(401, "second factor required", "totp_required")
        credential = Credential("totp", "", principal.id)  # the code itself is never passed on
        if self.throttle is not None:
            blocked = self.throttle.blocked(request, credential)
            if blocked is not None:
                return blocked
        try:
            secret = self.secret_for(principal)
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
            fresh = step is not None and self.replay.use(principal.id, step, step_up.replay_ttl)
        except Exception as exc:  # replay store down: refuse rather than accept a replay
            audit.emit("totp.store_unavailable", type(exc).__name__)
            return Deny(503, "second factor check unavailable", "temporarily_unavailable")
        if not fresh:
            if self.throttle is not None:
                self.throttle.failed(request, credential)
            return step_up.deny(401, "second factor invalid", "invalid_totp")
        return None
