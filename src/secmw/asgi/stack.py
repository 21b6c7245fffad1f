"""``SecurityStack``: every layer in one fixed order, for ASGI apps."""

from __future__ import annotations

from secmw.asgi._util import Receive, Scope, Send
from secmw.asgi.auth import AuthenticationMiddleware
from secmw.asgi.driver import Driver
from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.asgi.metrics import MetricsMiddleware
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.asgi.stepup import StepUpMiddleware
from secmw.asgi.tracing import TracingMiddleware
from secmw.errors import ConfigurationError
from secmw.middleware import StackLayer


class SecurityStack(Driver, StackLayer):
    """All secmw layers around an app, in one documented order (outermost first):

    1. security headers, so every answer (401, 403, 429, 500) carries them;
    2. client address resolution and the IP filter;
    3. the failed-authentication throttle, then authentication;
    4. TOTP step-up, when ``secret_for`` is given (``totp.*`` says where);
    5. rate limiting (keyed on the principal, else the resolved address);
    6. the app.

    One driver runs the layers' gates in that order: the request is parsed once, one send
    wrapper adds the headers, the rate-limit fields and the challenges; ``http`` requests and
    websocket handshakes take the same path. Each layer can be switched off with its ``enabled``
    setting (``headers.enabled=false``...); the throttle runs with rate limiting. CORS
    preflights are neither authenticated nor rate-limited, so the framework's CORS middleware
    works inside or outside the stack. The Redis connections close when the app's lifespan
    shutdown completes (or with :meth:`aclose`). With ``metrics.enabled``, the stack is
    measured by :class:`~secmw.asgi.MetricsMiddleware` around it.

    Args:
        app: The ASGI app to protect.
        settings: Settings to build from; default: the environment.
        revocation: The JWT ``jti`` denylist, shared with ``secmw.tokens.TokenIssuer``.
        secret_for: Looks up a principal's TOTP secret; enables the step-up layer.
        **overrides: Settings sections, for example ``jwt={"secret": "..."}``.

    Attributes:
        layers: The single-layer middlewares whose gates the stack runs, by layer name
            (``"auth"``, ``"rate_limit"``...), for their ``chain``, ``limiter``, ``policy``...
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.routes_read:
            try:
                self.read_routes()
            except ConfigurationError as exc:
                if scope["type"] != "lifespan":
                    raise
                # Refused at startup: the server stops (uvicorn exits) and shows why.
                await receive()
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        await self.entry(scope, receive, send)

    async def aclose(self) -> None:
        """Close the Redis clients of the rate-limit layer and of the failed-attempt throttles,
        and the identity providers' connection pools. Done by itself when the app's lifespan
        shutdown completes (the server must run the lifespan: uvicorn's default
        ``--lifespan auto`` does for Starlette and FastAPI)."""
        for layer in [*self.layers.values(), *self.retired]:
            await layer.aclose()
        if self.throttle is not None:
            await self.throttle.aclose()
