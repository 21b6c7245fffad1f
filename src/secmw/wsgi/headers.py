"""``SecurityHeadersMiddleware`` for WSGI apps."""

from __future__ import annotations

from typing import Any

from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.headers.gate import HeadersGate
from secmw.headers.layer import SecurityHeaders
from secmw.wsgi._util import WSGIApp
from secmw.wsgi.driver import Driver


class SecurityHeadersMiddleware(Driver):
    """Adds the security headers to every response at ``start_response``; PEP 3333 compliant.

    Same arguments and behaviour as ``secmw.asgi``'s twin. The body iterable is returned as the
    app made it (never buffered). A CSP nonce, when the policy uses one, is published as
    ``environ["secmw.csp_nonce"]`` and the ``secmw.current_csp_nonce()`` context variable (set
    while the app is called).

    If the app raises before its headers went out, the exception is logged on the
    ``secmw.headers`` logger and a 500 problem+json is answered with the headers: re-raising
    would let the server answer its own 500 without them. Use as
    ``app.wsgi_app = SecurityHeadersMiddleware(app.wsgi_app)`` in Flask.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        policy: SecurityHeaders | None = None,
        **overrides: Any,
    ) -> None:
        if policy is None:
            policy = SecurityHeaders(resolve_settings(settings, overrides).headers)
        self.policy = policy
        super().__init__(app, [HeadersGate(policy, raw=False)] if policy.enabled else [])
