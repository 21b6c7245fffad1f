"""``IPFilterMiddleware`` for WSGI apps."""

from __future__ import annotations

from typing import Any

from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.ip.filter import IPFilter
from secmw.ip.gate import IPGate
from secmw.wsgi._util import WSGIApp
from secmw.wsgi.driver import Driver


class IPFilterMiddleware(Driver):
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
        self.filter = ip_filter or IPFilter.from_settings(resolve_settings(settings, overrides).ip)
        super().__init__(app, [IPGate(self.filter)] if self.filter.enabled else [])
