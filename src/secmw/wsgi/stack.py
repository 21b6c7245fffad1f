"""``SecurityStack``: every layer in one fixed order, for WSGI apps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.layers import Layer, stack_layers
from secmw.principal import Principal
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
        throttle = FailedAuthThrottle(settings=resolved) if resolved.rate_limit.enabled else None
        lookup = secret_for or _no_secret  # only used when secret_for was given
        builders: dict[Layer, Callable[[WSGIApp], WSGIApp]] = {
            "rate_limit": lambda app: RateLimitMiddleware(app, settings=resolved),
            "step_up": lambda app: StepUpMiddleware(
                app, secret_for=lookup, settings=resolved, throttle=throttle
            ),
            "auth": lambda app: AuthenticationMiddleware(
                app, settings=resolved, throttle=throttle, revocation=revocation
            ),
            "ip": lambda app: IPFilterMiddleware(app, settings=resolved),
            "headers": lambda app: SecurityHeadersMiddleware(app, settings=resolved),
            "metrics": lambda app: MetricsMiddleware(app),
        }
        inner = app
        for layer in stack_layers(resolved, step_up=secret_for is not None):
            inner = builders[layer](inner)
        self.throttle = throttle
        self._entry = inner

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._entry(environ, start_response)


def _no_secret(principal: Principal) -> None:
    return None
