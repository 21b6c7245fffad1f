"""``IPFilterMiddleware`` for WSGI apps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from secmw import audit
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.ip.filter import DENIED, IPFilter
from secmw.wsgi._util import (
    Environ,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
)


class IPFilterMiddleware:
    """Resolves the client address behind trusted proxies and applies the IP policy; PEP 3333.

    Use as ``app.wsgi_app = IPFilterMiddleware(app.wsgi_app)`` in Flask. A refused client gets
    403 problem+json that says nothing about which networks are allowed, and an ``ip.denied``
    audit event. With ``rewrite_client`` (the default) the resolved address replaces
    ``REMOTE_ADDR`` (empty when unknown); the TCP peer stays in ``RequestView.peer``. Same
    arguments as ``secmw.asgi``'s twin.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        ip_filter: IPFilter | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.filter = ip_filter or IPFilter.from_settings(resolve_settings(settings, overrides).ip)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.filter.enabled:
            return self.app(environ, start_response)
        if self.filter.admits(environ.get("REMOTE_ADDR") or None, environ.get("PATH_INFO", "/.")):
            return self.app(environ, start_response)  # a peer allowed before, on any path
        request = RequestView.from_environ(environ)
        malformed = refuse_malformed(request, start_response)
        if malformed is not None:
            return malformed
        refusal = self.refuse(environ, request)
        if refusal is not None:
            return respond_deny(start_response, refusal, request.method)
        return self.app(environ, start_response)

    def refuse(self, environ: Environ, request: RequestView) -> Deny | None:
        """Resolve the client (rewriting ``REMOTE_ADDR``) and apply the policy: the denial,
        announced as ``ip.denied``, or None."""
        refusal = self.filter.check(request)
        if self.filter.rewrite_client and request.client != request.peer:
            # Empty, not removed, when unknown: servers read REMOTE_ADDR back for access logs.
            environ["REMOTE_ADDR"] = request.client or ""
        if refusal is not None:
            audit.emit("ip.denied", refusal.reason, request=request, rule=refusal.rule)
            return DENIED
        return None
