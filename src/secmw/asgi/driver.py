"""The ASGI driver: runs a list of gates on ``http`` and ``websocket`` scopes.

It builds the request view once (kept in the scope), runs each gate's ``check`` in order and
awaits the I/O a gate needs, renders a denial (problem+json; a websocket is refused before
accept), publishes what the gates found (principal, client address, CSP nonce) and merges every
passed gate's fields into ``http.response.start`` with one ``send`` wrapper. A request whose
gates need no I/O awaits nothing but the app.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import Token
from typing import Any, ClassVar

from secmw.asgi._util import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    closing_on_shutdown,
    publish_principal,
    run_blocking,
    send_deny,
)
from secmw.auth.throttle import AsyncFailedAuthThrottle
from secmw.core.gate import PASS, Need, Raised, Runner, enter, leave
from secmw.core.request import ASGI_KEY, RequestView, route_path
from secmw.headers.policy import INTERNAL_ERROR
from secmw.ip.forwarded import FORWARDED_KEY
from secmw.ratelimit.astorage import AsyncLimiter


class Driver(Runner):
    """Runs ``gates`` (outermost first) before ``app``; pure ASGI. ``lifespan`` passes through,
    calling :meth:`aclose` once the app's shutdown completed when ``closes`` says there is
    something to close."""

    app: ASGIApp
    raw: ClassVar[bool] = True
    limiter_type: ClassVar[Callable[..., Any]] = AsyncLimiter
    throttle_type: ClassVar[Any] = AsyncFailedAuthThrottle

    async def aclose(self) -> None:
        """Close the gates' connections (the subclasses know them)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or not self.gates:
            if kind == "lifespan" and self._closes:
                send = closing_on_shutdown(send, self._close_edges)
            await self.app(scope, receive, send)
            return
        plain = self._plain
        if plain is not None and kind == "http" and ASGI_KEY not in scope:
            admitting, gate = plain
            path = route_path(scope)
            # The fielding gate may answer from the path, the others admit: no view needed.
            policy = gate.plain_fields(path)
            if policy is not None and admitting:
                client = scope.get("client")
                peer = client[0] if client else None
                for admitted in admitting:
                    if not admitted(peer, path):
                        policy = None
                        break
            if policy is not None:
                await self._drive_plain(scope, receive, send, gate, policy)
                return
        admits = self._admits
        if admits is not None:
            client = scope.get("client")
            peer, path = client[0] if client else None, route_path(scope)
            for admitted in admits:
                if not admitted(peer, path):
                    break
            else:  # every gate passes with nothing to record: no view needed
                await self.app(scope, receive, send)
                return
        view = RequestView.from_scope(scope)
        fielders = self._fielders
        # One wrapper merges the fields: an outer driver's when there is one (ours are handed to
        # it through view.fielders), else ours; None: nobody adds fields to this response.
        outer = view.fielders
        respond = send
        if outer is None and kind == "http" and fielders[-1]:
            respond, outer = _merging(send, view), ()
        depth = 0
        try:
            for gate in self.gates:
                verdict = gate.check(view)
                while verdict.__class__ is Need:
                    verdict = gate.resume(verdict, await _perform(verdict))
                if verdict is not PASS:
                    if outer is not None:
                        view.fielders = fielders[depth] + outer
                    await send_deny(scope, respond, verdict)
                    return
                depth += 1
            if self._rewrites and view.client != view.peer:
                _rewrite_client(scope, view)
            if outer is not None:
                view.fielders = fielders[depth] + outer
            if not self._publishing:
                await self.app(scope, receive, respond)
                return
            tokens = self._publish(scope, view)
            try:
                await self.app(scope, receive, respond)
            finally:
                leave(tokens)
        except Exception:
            if self._error_depth < 0 or outer is None:
                raise
            if view.fielders is not _STARTED:
                # The headers gate's own answer: its fields and those of the drivers outside.
                view.fielders = fielders[self._error_depth] + outer
                await send_deny(scope, respond, INTERNAL_ERROR)
            raise

    drive = __call__

    async def _drive_plain(
        self, scope: Scope, receive: Receive, send: Send, gate: Any, policy: Any
    ) -> None:
        """Call the app with ``gate``'s ``merge_plain`` of ``policy`` on the response start; an
        app's error before it is answered as on the full path."""
        started = False

        async def send_with_fields(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # A driver inside that builds a view records the principal there.
                view = scope.get(ASGI_KEY)
                state = view.state if isinstance(view, RequestView) else None
                headers = message.get("headers", ())
                headers = gate.merge_plain(policy, scope.get("scheme", "http"), state, headers)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_fields)
        except Exception:
            if self._error_depth >= 0 and not started:
                await send_deny(scope, send_with_fields, INTERNAL_ERROR)
            raise

    async def _close_edges(self) -> None:
        """Close the edges of this driver and of the drivers it took in."""
        for driver in self.closers:
            await driver.aclose()

    def _publish(self, scope: Scope, view: RequestView) -> tuple[Token[Any], ...] | None:
        """Publish the principal and the CSP nonce the gates found; the context variables'
        tokens."""
        state = view.state
        nonce = state.get("csp_nonce") if self._nonces else None
        principal = state.get("principal") if self._publishes else None
        if nonce is not None:
            scope.setdefault("state", {})["csp_nonce"] = nonce
        if principal is not None:
            publish_principal(scope, principal)
        return enter(view, nonce, principal)


_STARTED: tuple[Any, ...] = (None,)
"""``view.fielders`` once the response started (a tuple of its own: nothing more is sent)."""


def _merging(send: Send, view: RequestView) -> Send:
    """``send``, merging the fields of ``view.fielders`` into the response start (once)."""

    async def send_with_fields(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = message.get("headers", ())
            for gate in view.fielders or ():
                headers = gate.fields(view, status, headers)
            view.fielders = _STARTED
            message = {**message, "headers": headers}
        await send(message)

    return send_with_fields


async def _perform(need: Need) -> Any:
    """Do the I/O ``need`` names: ``acall`` awaited, a blocking ``call`` in a thread, else
    ``call`` (awaiting what it returns when awaitable). A failure is the answer (:class:`Raised`):
    the gate says what it means."""
    try:
        if need.acall is not None:
            return await need.acall(*need.args)
        if need.blocking:
            return await run_blocking(need.call, *need.args)
        result = need.call(*need.args)
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception as exc:
        return Raised(exc)


def _rewrite_client(scope: Scope, view: RequestView) -> None:
    if view.client is None:
        scope["client"] = None
        return
    # A header entry's port belongs to a hop we never talked to; keep the peer's port only when
    # the address is the peer's own (rewritten to canonical form, for example ::ffff:a.b.c.d).
    original = scope.get("client")
    port = 0 if view.state.get(FORWARDED_KEY) or not original else original[1]
    scope["client"] = (view.client, port)
