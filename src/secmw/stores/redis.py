"""Redis clients for the stores that keep state (denylist, sessions, TOTP replay)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def client_pair(url: str, timeout: float) -> tuple[redis.Redis, redis.asyncio.Redis]:
    """A sync and an async client for ``url``, with ``timeout`` on connect and on every call.

    Imported here, not at module level, so that secmw imports without the ``redis`` extra.
    """
    import redis
    import redis.asyncio

    return (
        redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout),
        redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout),
    )
