"""The authentication layer's gate: the chain, the failed-attempt throttle, the principal."""

from __future__ import annotations

from typing import Any

from secmw import audit
from secmw.auth.base import AuthChain, Authenticator, Found
from secmw.auth.session import after_failure
from secmw.core.deny import Deny
from secmw.core.gate import PASS, Flow, Headers, Need, Pass, Stepwise, Verdict, advance
from secmw.core.principal import Principal
from secmw.core.request import RequestView


class AuthGate(Stepwise):
    """Finds the request's credential, verifies it, and stores the principal in
    ``view.state["principal"]`` for the later gates and for the driver to publish; a refusal
    (401/400 with ``WWW-Authenticate``, 429 from the throttle) is audited as ``auth.denied``.
    The challenges are added to an app's own 401 that carries none.

    Args:
        chain: The authenticators, in order.
        throttle: The failed-attempt throttle of the side (sync or async ``charge``), charged
            before ``verify`` and refunded unless it fails, or after a failure for
            ``throttle_first = False`` schemes; None: no throttle.
        raw: Fields as ASGI byte pairs, else WSGI strings.
    """

    publishes = True

    __slots__ = ("_challenges", "_modes", "chain", "throttle")

    def __init__(self, chain: AuthChain, throttle: Any = None, *, raw: bool) -> None:
        self.chain = chain
        self.throttle = throttle
        self._modes = {id(a): _mode(a) for a in chain.authenticators}
        pairs: tuple[tuple[Any, Any], ...] = chain.challenge_headers()
        if raw:
            pairs = tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in pairs)
        self._challenges = pairs

    def check(self, view: RequestView) -> Verdict:
        if view.method != "OPTIONS":
            # A token the verified-token cache answers for: what find() would try first.
            known = self.chain.cached_principal(view)
            if known is not None:
                if self.chain.scopes is not None:
                    return self._settle(view, known)  # checked like a fresh one
                view.state["principal"] = known
                return PASS
        found = self.chain.find(view)
        if found.__class__ is Found:
            return advance(self._verify(view, found))
        return self._settle(view, found)  # type: ignore[arg-type]

    def _verify(self, view: RequestView, found: Found) -> Flow:
        authenticator, credential = found.authenticator, found.credential
        throttle = self.throttle
        throttle_first, averify, blocking = self._modes.get(id(authenticator)) or _mode(
            authenticator
        )
        attempt = None
        if throttle is not None and throttle_first:
            # Charged before the check and refunded unless it fails: guesses in flight never
            # outnumber the budget.
            charged = yield Need(throttle.charge, (view, credential))
            if isinstance(charged, Deny):
                return self._settle(view, charged)
            attempt = charged
        result = yield Need(authenticator.verify, (credential,), averify, blocking=blocking)
        failed = isinstance(result, Deny) and result.status == 401
        if attempt is not None:
            if not failed:
                yield Need(attempt.refund)
        elif throttle is not None and failed:
            # Counted after the fact; once over the budget, 429 as throttle-first schemes do.
            refused = yield Need(throttle.charge, (view, credential))
            if isinstance(refused, Deny):
                result = after_failure(refused, result)
        return self._settle(view, result)

    def _settle(self, view: RequestView, result: Principal | Deny) -> Pass | Deny:
        if result.__class__ is not Deny and self.chain.scopes is not None:
            result = self.chain.authorize(view, result) or result  # type: ignore[arg-type]
        if isinstance(result, Deny):
            audit.emit("auth.denied", result.detail, request=view, denial=result)
            return result
        view.state["principal"] = result  # later gates (rate limits, headers) read it here
        return PASS

    def fields(self, view: RequestView, status: int, headers: Headers) -> Headers:
        if status != 401 or not self._challenges:
            return headers
        for name, _ in headers:
            if name.lower() in _WWW_AUTHENTICATE:
                return headers  # the app's own challenge
        return [*headers, *self._challenges]


_WWW_AUTHENTICATE = ("www-authenticate", b"www-authenticate")


def _mode(authenticator: Authenticator) -> tuple[bool, Any, bool]:
    """How to run an authenticator: (throttle first, ``averify`` for an async driver or None,
    blocking)."""
    averify = getattr(authenticator, "averify", None)
    if not getattr(authenticator, "needs_io", True):
        averify = None  # configured without network I/O: ``verify``, no coroutine
    return getattr(authenticator, "throttle_first", True), averify, authenticator.blocking
