"""``SecurityHeadersMiddleware`` for ASGI apps."""

from __future__ import annotations

from typing import Any

from secmw.asgi._util import (
    CHALLENGES_KEY,
    FIELDS_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    send_deny,
    with_challenges,
)
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.context import csp_nonce_var
from secmw.core.request import RequestView, route_path
from secmw.headers.layer import SecurityHeaders
from secmw.headers.policy import INTERNAL_ERROR


class SecurityHeadersMiddleware:
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

    def __init__(
        self,
        app: ASGIApp,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.enabled:
            await self.app(scope, receive, send)
            return
        await self.around(self.app, scope, receive, send)

    async def around(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` on an ``http`` scope with the headers merged into its response."""
        # A policy without a nonce needs nothing of the request but its scheme; else the full
        # pass (path normalized, nonce made and published).
        plain = self.policy.plain_policy_for(route_path(scope))
        header_pass = token = None
        if plain is None:
            header_pass = self.policy.start(RequestView.from_scope(scope))
            if header_pass.nonce is not None:
                scope.setdefault("state", {})["csp_nonce"] = header_pass.nonce
                token = csp_nonce_var.set(header_pass.nonce)
        secure = scope.get("scheme") == "https"
        started = False
        queued: list[tuple[bytes, bytes]] = []
        scope[FIELDS_KEY] = queued  # inner layers' fields (rate limits), merged below

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", ())
                extra: list[tuple[bytes, bytes]] = queued
                if message["status"] == 401:
                    headers = with_challenges([*headers, *queued], scope.get(CHALLENGES_KEY))
                    extra = []
                if plain is not None:
                    state = scope.get("state")
                    principal = state.get("principal") if state else None
                    authenticated = getattr(principal, "is_authenticated", False)
                    headers = plain.apply_bytes(headers, secure, authenticated, extra)
                else:
                    headers = header_pass.apply([*headers, *extra])  # type: ignore[union-attr]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                await send_deny(scope, send_with_headers, INTERNAL_ERROR)
            raise
        finally:
            if token is not None:
                csp_nonce_var.reset(token)
