"""Shared pieces of the ASGI adapters: rendering a Deny, publishing the principal."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar

from secmw import audit
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")

logger = logging.getLogger("secmw")

POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1
FIELDS_KEY = "secmw.response_fields"
"""Scope key of the fields inner layers want on the response (rate-limit fields): a list the
security headers layer puts in the scope and merges into ``http.response.start``, so the layers
inside it need no send wrapper of their own."""
CHALLENGES_KEY = "secmw.challenges"
"""Scope key of the ``WWW-Authenticate`` fields the headers layer adds to an app's own 401."""


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


def with_challenges(
    headers: Iterable[tuple[bytes, bytes]], challenges: list[tuple[bytes, bytes]] | None
) -> Iterable[tuple[bytes, bytes]]:
    """The headers of an app's own 401 with the authentication challenges added, unless it sent
    one itself (``headers`` unchanged then, or when there are none)."""
    if not challenges or any(name.lower() == b"www-authenticate" for name, _ in headers):
        return headers
    return [*headers, *challenges]


def with_fields(scope: Scope, send: Send, fields: list[tuple[bytes, bytes]]) -> Send:
    """The ``send`` to call the app with so that ``fields`` reach the response start: ``send``
    itself when an outer secmw layer merges queued fields (``FIELDS_KEY``), else a wrapper."""
    queued = scope.get(FIELDS_KEY)
    if queued is not None:
        queued += fields
        return send

    async def send_with_fields(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *fields]}
        await send(message)

    return send_with_fields


def malformed(request: RequestView) -> Deny | None:
    """The answer to a request no rule can be matched safely (``RequestView.rejection``), audited;
    None for every other request."""
    rejection = request.rejection
    if rejection is not None:
        audit.emit("request.rejected", rejection.detail, request=request)
    return rejection


async def refuse_malformed(scope: Scope, send: Send, request: RequestView) -> bool:
    """Answer a request that no rule can be matched safely (see ``RequestView.rejection``).

    Returns True when the request was answered and the layer must stop.
    """
    rejection = malformed(request)
    if rejection is None:
        return False
    await send_deny(scope, send, rejection)
    return True


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
