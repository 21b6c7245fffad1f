"""``IPFilterMiddleware`` for ASGI apps."""

from __future__ import annotations

from typing import Any

from secmw import audit
from secmw.asgi._util import ASGIApp, Receive, Scope, Send, malformed, send_deny
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.deny import Deny
from secmw.core.request import RequestView, route_path
from secmw.ip.filter import DENIED, IPFilter
from secmw.ip.forwarded import FORWARDED_KEY


class IPFilterMiddleware:
    """Resolves the client address behind trusted proxies and applies the IP policy; pure ASGI.

    ``http`` and ``websocket`` scopes are checked (a websocket is refused before accept);
    ``lifespan`` passes through. A refused client gets 403 problem+json that says nothing about
    which networks are allowed, and an ``ip.denied`` audit event. With ``rewrite_client`` (the
    default) the resolved address replaces ``scope["client"]`` (None when unknown), so the app
    and every later layer see the same client; the TCP peer stays in ``RequestView.peer``.

    Args:
        app: The ASGI app to protect.
        settings: Settings to build from; default: the environment (``ip.*``).
        ip_filter: A ready :class:`secmw.ip.filter.IPFilter` (overrides ``settings``).
        **overrides: Settings sections, for example ``ip={"allow": ["10.0.0.0/8"]}``.

    Raises:
        ConfigurationError: for a bad setting, naming the variable.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        ip_filter: IPFilter | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.filter = ip_filter or IPFilter.from_settings(resolve_settings(settings, overrides).ip)
        self._enabled = self.filter.enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._enabled and scope["type"] in ("http", "websocket"):
            refusal = self.refusal(scope)
            if refusal is not None:
                await send_deny(scope, send, refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Deny | None:
        """The answer for a refused ``http`` or ``websocket`` request (audited), else None; the
        resolved client is written to the scope either way."""
        client = scope.get("client")
        if self.filter.admits(client[0] if client else None, route_path(scope)):
            return None  # a peer allowed before, on any path
        request = RequestView.from_scope(scope)
        rejection = malformed(request)
        if rejection is not None:
            return rejection
        refusal = self.filter.check(request)
        if self.filter.rewrite_client and request.client != request.peer:
            _rewrite_client(scope, request)
        if refusal is not None:
            audit.emit("ip.denied", refusal.reason, request=request, rule=refusal.rule)
            return DENIED
        return None


def _rewrite_client(scope: Scope, request: RequestView) -> None:
    if request.client is None:
        scope["client"] = None
        return
    # A header entry's port belongs to a hop we never talked to; keep the peer's port only when
    # the address is the peer's own (rewritten to canonical form, for example ::ffff:a.b.c.d).
    original = scope.get("client")
    port = 0 if request.state.get(FORWARDED_KEY) or not original else original[1]
    scope["client"] = (request.client, port)
