"""``SecurityHeadersMiddleware`` for ASGI apps."""

from __future__ import annotations

from secmw.asgi.driver import Driver
from secmw.middleware import SecurityHeadersLayer


class SecurityHeadersMiddleware(Driver, SecurityHeadersLayer):
    """Adds the security headers to every ``http`` response; pure ASGI, no body buffering.

    The headers are merged into ``http.response.start`` as it passes (headers the app set are
    kept unless ``override`` is set; none is ever sent twice), so streaming and ``HEAD`` responses
    are untouched otherwise. When the active policy's CSP uses a nonce, a fresh one is published
    as ``scope["state"]["csp_nonce"]`` (``request.state.csp_nonce`` in Starlette) and the
    ``secmw.current_csp_nonce()`` context variable.

    If the app raises before starting its response, a 500 problem+json goes out with the headers,
    then the exception is re-raised so the server logs it (as Starlette's ``ServerErrorMiddleware``
    does); once the response has started nothing more is sent. ``lifespan`` and ``websocket``
    scopes pass through.

    Args:
        app: The ASGI app to wrap (place this layer outermost: it must see every response,
            including the 401, 403 and 429 of the inner layers).
        settings: Settings to build from; default: the environment.
        policy: A ready :class:`~secmw.headers.layer.SecurityHeaders` (overrides ``settings``).
        **overrides: Settings sections, for example ``headers={"frame_options": "SAMEORIGIN"}``.
    """
