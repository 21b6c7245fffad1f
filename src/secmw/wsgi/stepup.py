"""``StepUpMiddleware`` for WSGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secmw.auth.base import FailureThrottle
from secmw.auth.stepup import StepUpGate
from secmw.auth.throttle import FailedAuthThrottle
from secmw.auth.totp import ReplayStore, StepUp, replay_store_from_settings
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.principal import Principal
from secmw.wsgi._util import WSGIApp
from secmw.wsgi.driver import Driver

SecretLookup = Callable[[Principal], "str | None"]


class StepUpMiddleware(Driver):
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
        self.secret_for = secret_for
        resolved = resolve_settings(settings, overrides)
        self.step_up = step_up or StepUp.from_settings(resolved.totp, resolved.auth.realm)
        self.replay = replay or replay_store_from_settings(resolved.totp)
        self._own_throttle = throttle is None and resolved.totp.throttle
        if self._own_throttle:
            throttle = FailedAuthThrottle.for_step_up(resolved)
        self.throttle = throttle
        gate = StepUpGate(self.step_up, secret_for, self.replay, throttle)
        super().__init__(app, [gate])

    def close(self) -> None:
        """Close the Redis client of the throttle this middleware built, if any."""
        if self._own_throttle and isinstance(self.throttle, FailedAuthThrottle):
            self.throttle.close()
