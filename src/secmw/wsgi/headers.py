"""``SecurityHeadersMiddleware`` for WSGI apps."""

from __future__ import annotations

from secmw.middleware import SecurityHeadersLayer
from secmw.wsgi.driver import Driver


class SecurityHeadersMiddleware(Driver, SecurityHeadersLayer):
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
