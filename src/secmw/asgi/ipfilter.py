"""``IPFilterMiddleware`` for ASGI apps."""

from __future__ import annotations

from secmw.asgi.driver import Driver
from secmw.middleware import IPFilterLayer


class IPFilterMiddleware(Driver, IPFilterLayer):
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
