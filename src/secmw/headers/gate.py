"""The security headers layer's gate: picks the policy (and CSP nonce) per request, merges its
headers into every response start, denials of the other layers included."""

from __future__ import annotations

from typing import Any

from secmw.core.gate import PASS, Headers, Plain, Verdict
from secmw.core.request import RequestView
from secmw.headers.layer import SecurityHeaders
from secmw.headers.policy import HeaderPass

CHOSEN = "secmw.header_policy"
"""``view.state`` key of the policy (or pass, with its nonce) picked for the request."""


class HeadersGate(Plain):
    """Refuses nothing; adds the security headers. ``http`` only: a websocket handshake gets
    none (its answer is not a document), and no nonce.

    Args:
        policy: The default and per-path policies.
        raw: Fields as ASGI byte pairs, else WSGI strings.
    """

    guards = False
    answers_errors = True
    """When the app raises before its response started, the driver answers 500 problem+json
    through this gate (so with the headers)."""

    __slots__ = ("makes_nonce", "policy", "raw")

    def __init__(self, policy: SecurityHeaders, *, raw: bool) -> None:
        self.policy = policy
        self.raw = raw
        self.makes_nonce = policy.nonced
        """A CSP nonce for the driver to publish; only a policy that uses one makes any."""

    def check(self, view: RequestView) -> Verdict:
        if view.method == "WEBSOCKET":
            return PASS
        # A policy without a nonce on a path that needs no normalizing is used as it is; else
        # the full pass (normalized path, a fresh nonce in view.state["csp_nonce"]).
        plain = self.policy.plain_policy_for(view.path)
        view.state[CHOSEN] = plain if plain is not None else self.policy.start(view)
        return PASS

    def fields(self, view: RequestView, status: int, headers: Headers) -> Headers:
        state = view.state
        chosen: Any = state.get(CHOSEN)
        if chosen is None:
            return headers
        if chosen.__class__ is HeaderPass:
            return chosen.apply(headers) if self.raw else chosen.apply_str(headers)
        authenticated = getattr(state.get("principal"), "is_authenticated", False)
        secure = view.scheme == "https"  # an http response: never "wss"
        if self.raw:
            return chosen.apply_bytes(headers, secure, authenticated)  # type: ignore[no-any-return]
        return chosen.apply_str(headers, secure, authenticated)  # type: ignore[no-any-return]
