"""``SecurityStack``: every layer in one fixed order, for WSGI apps."""

from __future__ import annotations

from collections.abc import Iterable

from secmw.middleware import StackLayer
from secmw.wsgi._util import Environ, StartResponse
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.driver import Driver
from secmw.wsgi.headers import SecurityHeadersMiddleware
from secmw.wsgi.ipfilter import IPFilterMiddleware
from secmw.wsgi.metrics import MetricsMiddleware
from secmw.wsgi.ratelimit import RateLimitMiddleware
from secmw.wsgi.stepup import StepUpMiddleware
from secmw.wsgi.tracing import TracingMiddleware


class SecurityStack(Driver, StackLayer):
    """All secmw layers around a WSGI app; same order and arguments as ``secmw.asgi``'s twin.

    Use as ``app.wsgi_app = SecurityStack(app.wsgi_app)`` in Flask. One driver runs the layers'
    gates: the request view is built once, and one ``start_response`` wrapper adds the
    rate-limit fields, the authentication challenges (on a 401 of the app) and the security
    headers together.

    Attributes:
        layers: The single-layer middlewares whose gates the stack runs, by layer name.
        throttle: The failed-authentication throttle (None without rate limiting).
    """

    layer_types = {
        "rate_limit": RateLimitMiddleware,
        "step_up": StepUpMiddleware,
        "auth": AuthenticationMiddleware,
        "ip": IPFilterMiddleware,
        "headers": SecurityHeadersMiddleware,
    }
    measure = MetricsMiddleware
    trace = TracingMiddleware

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.routes_read:
            self.read_routes()  # a conflict raises at every request until it is fixed
        return self.entry(environ, start_response)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the Redis clients of the rate-limit layer and of the failed-attempt throttles,
        and the identity providers' connection pools (for example when the app shuts down, or
        at the end of a test)."""
        for layer in [*self.layers.values(), *self.retired]:
            layer.close()
        if self.throttle is not None:
            self.throttle.close()
