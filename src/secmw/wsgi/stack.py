"""``SecurityStack``: every layer in one fixed order, for WSGI apps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.auth.throttle import FailedAuthThrottle
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.context import csp_nonce_var, principal_var, request_var
from secmw.core.deny import Deny
from secmw.core.layers import Layer, stack_layers
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore
from secmw.wsgi._util import (
    Environ,
    ExcInfo,
    Headers,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
    with_challenges,
)
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.headers import NONCE_KEY, SecurityHeadersMiddleware, internal_error
from secmw.wsgi.ipfilter import IPFilterMiddleware
from secmw.wsgi.metrics import MetricsMiddleware
from secmw.wsgi.ratelimit import RateLimitMiddleware
from secmw.wsgi.stepup import SecretLookup, StepUpMiddleware


class SecurityStack:
    """All secmw layers around a WSGI app; same order and arguments as ``secmw.asgi``'s twin.

    Use as ``app.wsgi_app = SecurityStack(app.wsgi_app)`` in Flask.

    The layers are built as the separate middlewares (``_entry`` is the outermost), but a request
    runs through them in one call: the request view is looked up once, and one ``start_response``
    wrapper adds the rate-limit fields, the authentication challenges (on a 401 of the app) and
    the security headers together. The answers are those of the middlewares composed.
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
            # Wrong codes have budgets of their own (totp.failures), built by the layer.
            "step_up": lambda app: StepUpMiddleware(app, secret_for=lookup, settings=resolved),
            "auth": lambda app: AuthenticationMiddleware(
                app, settings=resolved, throttle=throttle, revocation=revocation
            ),
            "ip": lambda app: IPFilterMiddleware(app, settings=resolved),
            "headers": lambda app: SecurityHeadersMiddleware(app, settings=resolved),
            "metrics": lambda app: MetricsMiddleware(app),
        }
        built: dict[Layer, Any] = {}
        inner = app
        for layer in stack_layers(resolved, step_up=secret_for is not None):
            inner = built[layer] = builders[layer](inner)
        self.throttle = throttle
        self._entry = inner
        self._headers: SecurityHeadersMiddleware | None = built.get("headers")
        self._ip: IPFilterMiddleware | None = built.get("ip")
        self._auth: AuthenticationMiddleware | None = built.get("auth")
        self._step_up: StepUpMiddleware | None = built.get("step_up")
        self._rate_limit: RateLimitMiddleware | None = built.get("rate_limit")
        self._guarded = any(
            layer is not None for layer in (self._ip, self._auth, self._step_up, self._rate_limit)
        )
        serve: WSGIApp = self._serve if self._guarded or self._headers is not None else app
        metrics: MetricsMiddleware | None = built.get("metrics")
        self._call = serve if metrics is None else MetricsMiddleware(serve, metrics=metrics.metrics)

    def close(self) -> None:
        """Close the Redis clients of the rate-limit layer and of the failed-attempt throttles,
        and the identity providers' connection pools (for example when the app shuts down, or
        at the end of a test)."""
        if self._auth is not None:
            self._auth.close()
        if self._rate_limit is not None:
            self._rate_limit.close()
        if self.throttle is not None:
            self.throttle.close()
        if self._step_up is not None:
            self._step_up.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._call(environ, start_response)

    def _serve(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The headers, IP, authentication, step-up and rate-limit layers, in one call."""
        request = RequestView.from_environ(environ)  # usually built here: the stack is outermost
        headers_layer = self._headers
        header_pass = None
        if headers_layer is not None and headers_layer.policy.enabled:
            header_pass = headers_layer.policy.start(request)
        # Set as the request gets past the layers that add them, read when the response starts:
        # a deny of a layer gets what the layers outside it add, the app's response all of it.
        challenges: tuple[tuple[str, str], ...] = ()
        fields: list[tuple[str, str]] | None = None
        started = False

        def start(
            status: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal started
            started = True
            if fields:
                headers = [*headers, *fields]
            if challenges and status.startswith("401"):
                headers = with_challenges(headers, status, challenges)
            if header_pass is not None:
                headers = header_pass.apply_str(headers)
            return start_response(status, headers, exc_info)

        nonce_token = None
        if header_pass is not None and header_pass.nonce is not None:
            environ[NONCE_KEY] = header_pass.nonce
            nonce_token = csp_nonce_var.set(header_pass.nonce)
        try:
            if self._guarded:  # the outermost guarding layer refuses it before anything else
                malformed = refuse_malformed(request, start)
                if malformed is not None:
                    return malformed
            ip = self._ip
            if (
                ip is not None
                and ip.filter.enabled
                and not ip.filter.admits(request.peer, request.path)
            ):
                refusal = ip.refuse(environ, request)
                if refusal is not None:
                    return respond_deny(start, refusal, request.method)
            auth = self._auth
            principal_token = request_token = None
            if auth is not None:
                principal = auth.admit(environ, request)
                if isinstance(principal, Deny):
                    return respond_deny(start, principal, request.method)
                principal_token = principal_var.set(principal)
                request_token = request_var.set(request)
                challenges = auth._challenges
            try:
                step_up = self._step_up
                if step_up is not None:
                    denied = step_up.refuse(request)
                    if denied is not None:
                        return respond_deny(start, denied, request.method)
                rate_limit = self._rate_limit
                if rate_limit is not None and rate_limit.settings.enabled:
                    verdict = rate_limit.decide(request)
                    if isinstance(verdict, Deny):
                        return respond_deny(start, verdict, request.method)
                    fields = verdict
                return self.app(environ, start)
            finally:
                if principal_token is not None:
                    request_var.reset(request_token)  # type: ignore[arg-type]
                    principal_var.reset(principal_token)
        except Exception:
            if header_pass is None:
                raise
            fields, challenges = None, ()  # the 500 is the headers layer's own answer
            return internal_error(start, started, request.method)
        finally:
            if nonce_token is not None:
                csp_nonce_var.reset(nonce_token)


def _no_secret(principal: Principal) -> None:
    return None
