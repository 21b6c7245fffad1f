"""The WSGI driver: runs a list of gates before the app (PEP 3333).

It builds the request view once (kept in the environ), runs each gate's ``check`` in order and
calls the I/O a gate needs, renders a denial (problem+json, no body for ``HEAD``), publishes what
the gates found (principal, client address, CSP nonce) and merges every passed gate's fields in
one ``start_response`` wrapper. The body iterable is returned as the app made it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from contextvars import Token
from typing import Any, ClassVar

from secmw.auth.throttle import FailedAuthThrottle
from secmw.core.gate import PASS, Need, Raised, Runner, enter, leave
from secmw.core.principal import Principal
from secmw.core.request import RequestView, environ_path
from secmw.headers.policy import INTERNAL_ERROR
from secmw.ratelimit.storage import Limiter
from secmw.wsgi._util import (
    PRINCIPAL_KEY,
    Environ,
    ExcInfo,
    Headers,
    StartResponse,
    WSGIApp,
    respond_deny,
    status_line,
)

NONCE_KEY = "secmw.csp_nonce"
logger = logging.getLogger("secmw.headers")
_INTERNAL_ERROR_STATUS = status_line(INTERNAL_ERROR.status)


def principal_of(environ: Environ) -> Principal | None:
    """The principal secmw published for this request (None when no authentication ran)."""
    principal = environ.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None


class Driver(Runner):
    """Runs ``gates`` (outermost first) before ``app``; PEP 3333 compliant."""

    app: WSGIApp
    raw: ClassVar[bool] = False
    limiter_type: ClassVar[Callable[..., Any]] = Limiter
    throttle_type: ClassVar[Any] = FailedAuthThrottle

    def close(self) -> None:
        """Close the gates' connections (the subclasses know them)."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.gates:
            return self.app(environ, start_response)
        admits = self._admits
        if admits is not None:
            peer, path = environ.get("REMOTE_ADDR") or None, environ_path(environ)
            for admitted in admits:
                if not admitted(peer, path):
                    break
            else:  # every gate passes with nothing to record: no view needed
                return self.app(environ, start_response)
        view = RequestView.from_environ(environ)
        fielders = self._fielders
        # One wrapper merges the fields: an outer driver's when there is one (ours are handed to
        # it through view.fielders), else ours; None: nobody adds fields to this response.
        outer = view.fielders
        respond = start_response
        if outer is None and fielders[-1]:
            respond, outer = _merging(start_response, view), ()
        depth = 0
        try:
            for gate in self.gates:
                verdict = gate.check(view)
                while verdict.__class__ is Need:
                    try:
                        answer = verdict.call(*verdict.args)
                    except Exception as exc:  # the gate says what a failure means
                        answer = Raised(exc)
                    verdict = gate.resume(verdict, answer)
                if verdict is not PASS:
                    if outer is not None:
                        view.fielders = fielders[depth] + outer
                    return respond_deny(respond, verdict, view.method)
                depth += 1
            if self._rewrites and view.client != view.peer:
                # Empty, not removed, when unknown: servers read REMOTE_ADDR back for access logs.
                environ["REMOTE_ADDR"] = view.client or ""
            if outer is not None:
                view.fielders = fielders[depth] + outer
            if not self._publishing:
                return self.app(environ, respond)
            tokens = self._publish(environ, view)
            try:
                return self.app(environ, respond)
            finally:
                leave(tokens)
        except Exception:
            if self._error_depth < 0 or outer is None:
                raise
            started = view.fielders is _STARTED
            # The headers gate's own answer: its fields and those of the drivers outside.
            view.fielders = fielders[self._error_depth] + outer
            return _internal_error(respond, started, view.method)

    drive = __call__

    def _publish(self, environ: Environ, view: RequestView) -> tuple[Token[Any], ...] | None:
        """Publish the principal and the CSP nonce the gates found; the context variables'
        tokens."""
        state = view.state
        nonce = state.get("csp_nonce") if self._nonces else None
        principal = state.get("principal") if self._publishes else None
        if nonce is not None:
            environ[NONCE_KEY] = nonce
        if principal is not None:
            environ[PRINCIPAL_KEY] = principal
        return enter(view, nonce, principal)


_STARTED: tuple[Any, ...] = (None,)
"""``view.fielders`` once the response started (a tuple of its own)."""


def _merging(start_response: StartResponse, view: RequestView) -> StartResponse:
    """``start_response``, merging the fields of ``view.fielders`` into the headers."""

    def start(
        status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        fielders = view.fielders
        if fielders is not _STARTED:
            code = int(status[:3])
            for gate in fielders or ():
                headers = gate.fields(view, code, headers)
            view.fielders = _STARTED
        return start_response(status, headers, exc_info)

    return start


def _internal_error(start: StartResponse, started: bool, method: str) -> list[bytes]:
    """Log the exception being handled and answer 500 problem+json through ``start`` (which
    adds the headers); no body for ``HEAD``."""
    logger.exception("unhandled error in the WSGI app; answering 500")
    headers, body = INTERNAL_ERROR.rendered(method)
    # A second start_response must carry exc_info: the server then replaces the status if
    # nothing went out yet and re-raises otherwise (PEP 3333), so no error is ever sent after a
    # started response.
    start(_INTERNAL_ERROR_STATUS, headers, sys.exc_info() if started else None)
    return [body]
