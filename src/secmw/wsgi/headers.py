"""``SecurityHeadersMiddleware`` for WSGI apps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.context import csp_nonce_var
from secmw.core.request import RequestView
from secmw.headers.layer import SecurityHeaders
from secmw.headers.policy import INTERNAL_ERROR
from secmw.wsgi._util import (
    Environ,
    ExcInfo,
    Headers,
    StartResponse,
    WSGIApp,
    status_line,
)

NONCE_KEY = "secmw.csp_nonce"
logger = logging.getLogger("secmw.headers")
_INTERNAL_ERROR_STATUS = status_line(INTERNAL_ERROR.status)


class SecurityHeadersMiddleware:
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
        self.app = app
        if policy is None:
            policy = SecurityHeaders(resolve_settings(settings, overrides).headers)
        self.policy = policy

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.policy.enabled:
            return self.app(environ, start_response)
        request = RequestView.from_environ(environ)
        header_pass = self.policy.start(request)
        started = False

        def start(
            status: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            nonlocal started
            started = True
            return start_response(status, header_pass.apply_str(headers), exc_info)

        nonce = header_pass.nonce
        token = None
        if nonce is not None:
            environ[NONCE_KEY] = nonce
            token = csp_nonce_var.set(nonce)
        try:
            return self.app(environ, start)
        except Exception:
            return internal_error(start, started, request.method)
        finally:
            if token is not None:
                csp_nonce_var.reset(token)


def internal_error(start: StartResponse, started: bool, method: str) -> list[bytes]:
    """Log the exception being handled and answer 500 problem+json through ``start`` (which
    adds the headers); no body for ``HEAD``."""
    logger.exception("unhandled error in the WSGI app; answering 500")
    headers, body = INTERNAL_ERROR.rendered(method)
    # A second start_response must carry exc_info: the server then replaces the status if
    # nothing went out yet and re-raises otherwise (PEP 3333), so no error is ever sent after a
    # started response.
    start(
        _INTERNAL_ERROR_STATUS,
        headers,
        sys.exc_info() if started else None,
    )
    return [body]
