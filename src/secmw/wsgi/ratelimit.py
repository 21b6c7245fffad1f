"""``RateLimitMiddleware`` for WSGI apps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.ratelimit.plan import announce_refusal
from secmw.ratelimit.policy import Fields, KeyFunc, RateLimitPolicy
from secmw.ratelimit.storage import Limiter
from secmw.wsgi._util import (
    Environ,
    ExcInfo,
    Headers,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
)


class RateLimitMiddleware:
    """Rate limits every request before the app; PEP 3333 compliant.

    Same arguments and behaviour as ``secmw.asgi.RateLimitMiddleware``: 429 problem+json with
    ``Retry-After`` over a limit, rate-limit fields added at ``start_response`` on every response
    under a limit. Use as ``app.wsgi_app = RateLimitMiddleware(app.wsgi_app)`` in Flask, after
    the authentication layer so limits can key on the principal.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        key_func: KeyFunc | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        resolved = resolve_settings(settings, overrides)
        self.settings = resolved.rate_limit
        self.policy = RateLimitPolicy(
            self.settings,
            key_func=key_func,
            apikey_header=resolved.api_keys.header,
            apikey_query=resolved.api_keys.query_param,
        )
        self.limiter = Limiter(self.settings)

    def close(self) -> None:
        """Close the Redis client (for example when the app shuts down)."""
        self.limiter.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.settings.enabled:
            return self.app(environ, start_response)
        request = RequestView.from_environ(environ)
        malformed = refuse_malformed(request, start_response)
        if malformed is not None:
            return malformed
        verdict = self.decide(request)
        if verdict is None:
            return self.app(environ, start_response)
        if isinstance(verdict, Deny):
            return respond_deny(start_response, verdict, request.method)
        return self.app(environ, _with_fields(start_response, verdict))

    def decide(self, request: RequestView) -> Deny | Fields | None:
        """Charge the request: the denial (announced), the rate-limit fields to add to the
        response, or None when there are none (exempt, unlimited, storage down under
        ``on_storage_error=allow``, or no field configured)."""
        plan = self.policy.plan(request)
        if plan is None:
            return None
        if isinstance(plan, Deny):
            audit.emit("ratelimit.unidentified", plan.detail, request=request)
            return plan
        result = self.limiter.apply(plan.hits)
        if result is None:  # storage down, on_storage_error=allow
            return None
        verdict = result if isinstance(result, Deny) else self.policy.conclude(plan, result)
        if isinstance(verdict, Deny):
            announce_refusal(request, plan, verdict)
            return verdict
        return verdict or None


def _with_fields(start_response: StartResponse, fields: Fields) -> StartResponse:
    def start(
        status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        return start_response(status, [*headers, *fields], exc_info)

    return start
