"""Shared pieces of the ASGI side: rendering a Deny, publishing the principal, closing."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from secmw.core.deny import Deny
from secmw.core.principal import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")

logger = logging.getLogger("secmw")

POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1


def closing_on_shutdown(send: Send, close: Callable[[], Awaitable[None]]) -> Send:
    """The ``send`` of a ``lifespan`` scope that runs ``close`` (a layer's Redis clients) once the
    app reports its shutdown complete: on the loop that served the requests, before the server
    hears of it. Closing is best effort: a failure is logged (its type only), shutdown goes on."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            try:
                await close()
            except Exception as exc:  # the connections die with the process anyway
                logger.warning("closing the Redis connections failed: %s", type(exc).__name__)
        await send(message)

    return send_closing


async def send_deny(scope: Scope, send: Send, deny: Deny) -> None:
    """Answer with the problem document, without calling the app.

    A websocket is refused before accept: with an HTTP response through the
    ``websocket.http.response`` extension when the server offers it, else by closing with 1008.
    """
    fields, body = deny.rendered(scope.get("method", "GET").upper())
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": deny.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": deny.status, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": deny.detail})


class AuthCredentials:
    """What Starlette's ``@requires`` reads from ``scope["auth"]``: a ``scopes`` list.

    Authenticated principals also carry Starlette's conventional ``"authenticated"`` scope.
    """

    __slots__ = ("_principal",)

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    @property
    def scopes(self) -> list[str]:
        """Built when read (only routes with ``@requires`` read it), not on every request."""
        scopes = sorted(self._principal.scopes)
        if self._principal.is_authenticated:
            scopes.append("authenticated")
        return scopes


def publish_principal(scope: Scope, principal: Principal) -> None:
    """Make the principal visible to the app: ``request.state.principal``, ``request.user``,
    ``request.auth``."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state["principal"] = principal
    scope["user"] = principal
    scope["auth"] = AuthCredentials(principal)


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a CPU-heavy call in the default executor so the event loop keeps serving."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args))
