"""``IPFilterMiddleware`` for WSGI apps."""

from __future__ import annotations

from secmw.middleware import IPFilterLayer
from secmw.wsgi.driver import Driver


class IPFilterMiddleware(Driver, IPFilterLayer):
    """Resolves the client address behind trusted proxies and applies the IP policy; PEP 3333.

    Use as ``app.wsgi_app = IPFilterMiddleware(app.wsgi_app)`` in Flask. A refused client gets
    403 problem+json that says nothing about which networks are allowed, and an ``ip.denied``
    audit event. With ``rewrite_client`` (the default) the resolved address replaces
    ``REMOTE_ADDR`` (empty when unknown); the TCP peer stays in ``RequestView.peer``. Same
    arguments as ``secmw.asgi``'s twin.
    """
