"""``SecurityStack``: every layer in one fixed order, for WSGI apps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from secmw import audit
from secmw.revocation import AsyncRevocationStore, RevocationStore
from secmw.settings import SecuritySettings, resolve_settings
from secmw.throttle import FailedAuthThrottle
from secmw.wsgi._util import Environ, StartResponse, WSGIApp
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.headers import SecurityHeadersMiddleware
from secmw.wsgi.ipfilter import IPFilterMiddleware
from secmw.wsgi.metrics import MetricsMiddleware
from secmw.wsgi.ratelimit import RateLimitMiddleware
from secmw.wsgi.stepup import SecretLookup, StepUpMiddleware


class SecurityStack:
    """All secmw layers around a WSGI app; same order and arguments as ``secmw.asgi``'s twin.

    Use as ``app.wsgi_app = SecurityStack(app.wsgi_app)`` in Flask.
    """

    def __init__(
        self,
        app: WSGIApp,
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
        inner: WSGIApp = app
        throttle = None
        if resolved.rate_limit.enabled:  # failed logins are throttled with rate limiting
            throttle = FailedAuthThrottle(settings=resolved)
        if resolved.rate_limit.enabled:
            inner = RateLimitMiddleware(inner, settings=resolved)
        if secret_for is not None:
            inner = StepUpMiddleware(
                inner, secret_for=secret_for, settings=resolved, throttle=throttle
            )
        if resolved.auth.enabled:
            inner = AuthenticationMiddleware(
                inner, settings=resolved, throttle=throttle, revocation=revocation
            )
        if resolved.ip.enabled:
            inner = IPFilterMiddleware(inner, settings=resolved)
        if resolved.headers.enabled:
            inner = SecurityHeadersMiddleware(inner, settings=resolved)
        if resolved.metrics.enabled:  # outermost, so it times and counts every answer
            inner = MetricsMiddleware(inner)
        self.throttle = throttle
        self._entry = inner

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._entry(environ, start_response)
