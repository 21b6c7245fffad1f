"""``StepUpMiddleware`` for WSGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.auth.base import FailureThrottle
from secmw.auth.stepup import Charge, LookUpSecret, Need, Refund, UseStep, decide
from secmw.auth.throttle import FailedAuthThrottle
from secmw.auth.totp import ReplayStore, StepUp, replay_store_from_settings
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView
from secmw.wsgi._util import (
    Environ,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
)

SecretLookup = Callable[[Principal], "str | None"]


class StepUpMiddleware:
    """Requires ``X-TOTP-Code`` where ``totp.paths`` / ``totp.scopes`` say so.

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
        resolved = resolve_settings(settings, overrides)
        self.step_up = step_up or StepUp.from_settings(resolved.totp, resolved.auth.realm)
        self.replay = replay or replay_store_from_settings(resolved.totp)
        self._own_throttle = throttle is None and resolved.totp.throttle
        if self._own_throttle:
            throttle = FailedAuthThrottle.for_step_up(resolved)
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
                answer = self._perform(request, need)
            except Exception as exc:  # handed to the decision, which says what it means
                error = exc

    def _perform(self, request: RequestView, need: Need) -> Any:
        if isinstance(need, Charge):
            assert self.throttle is not None  # decide() charges only when throttled
            return self.throttle.charge(request, need.credential)
        if isinstance(need, LookUpSecret):
            return self.secret_for(need.principal)
        if isinstance(need, UseStep):
            return self.replay.use(need.subject, need.step, need.ttl)
        if isinstance(need, Refund):
            need.attempt.refund()
        return None

    def close(self) -> None:
        """Close the Redis client of the throttle this middleware built, if any."""
        if self._own_throttle and isinstance(self.throttle, FailedAuthThrottle):
            self.throttle.close()
