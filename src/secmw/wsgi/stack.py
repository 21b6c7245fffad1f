"""``SecurityStack``: every layer in one fixed order, for WSGI apps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.auth.throttle import FailedAuthThrottle
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.layers import Layer, stack_layers
from secmw.core.principal import Principal
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore
from secmw.wsgi._util import Environ, StartResponse, WSGIApp
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.driver import Driver
from secmw.wsgi.headers import SecurityHeadersMiddleware
from secmw.wsgi.ipfilter import IPFilterMiddleware
from secmw.wsgi.metrics import MetricsMiddleware
from secmw.wsgi.ratelimit import RateLimitMiddleware
from secmw.wsgi.stepup import SecretLookup, StepUpMiddleware


class SecurityStack(Driver):
    """All secmw layers around a WSGI app; same order and arguments as ``secmw.asgi``'s twin.

    Use as ``app.wsgi_app = SecurityStack(app.wsgi_app)`` in Flask. One driver runs the layers'
    gates: the request view is built once, and one ``start_response`` wrapper adds the
    rate-limit fields, the authentication challenges (on a 401 of the app) and the security
    headers together.

    Attributes:
        layers: The single-layer middlewares whose gates the stack runs, by layer name.
        throttle: The failed-authentication throttle (None without rate limiting).
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
        throttle = FailedAuthThrottle(settings=resolved) if resolved.rate_limit.enabled else None
        lookup = secret_for or _no_secret  # only used when secret_for was given
        builders: dict[Layer, Callable[[], Driver]] = {
            "rate_limit": lambda: RateLimitMiddleware(app, settings=resolved),
            # Wrong codes have budgets of their own (totp.failures), built by the layer.
            "step_up": lambda: StepUpMiddleware(app, secret_for=lookup, settings=resolved),
            "auth": lambda: AuthenticationMiddleware(
                app, settings=resolved, throttle=throttle, revocation=revocation
            ),
            "ip": lambda: IPFilterMiddleware(app, settings=resolved),
            "headers": lambda: SecurityHeadersMiddleware(app, settings=resolved),
        }
        enabled = stack_layers(resolved, step_up=secret_for is not None)
        self.layers = {layer: builders[layer]() for layer in reversed(enabled) if layer in builders}
        self.throttle = throttle
        super().__init__(app, [gate for layer in self.layers.values() for gate in layer.gates])
        run = super().__call__
        self._call = MetricsMiddleware(run) if "metrics" in enabled else run

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._call(environ, start_response)

    def close(self) -> None:
        """Close the Redis clients of the rate-limit layer and of the failed-attempt throttles,
        and the identity providers' connection pools (for example when the app shuts down, or
        at the end of a test)."""
        for layer in self.layers.values():
            layer.close()
        if self.throttle is not None:
            self.throttle.close()


def _no_secret(principal: Principal) -> None:
    return None
