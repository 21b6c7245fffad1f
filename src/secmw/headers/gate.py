"""The security headers layer's gate: picks the policy (and CSP nonce) per request, merges its
headers into every response start, denials of the other layers included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secmw.core.gate import PASS, Headers, Plain, Verdict
from secmw.core.request import RequestView
from secmw.headers.layer import SecurityHeaders
from secmw.headers.policy import HeaderPass, HeaderPolicy

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

    __slots__ = ("makes_nonce", "plain_fields", "policy", "raw")

    def __init__(self, policy: SecurityHeaders, *, raw: bool) -> None:
        self.policy = policy
        self.raw = raw
        self.makes_nonce = policy.nonced
        """A CSP nonce for the driver to publish; only a policy that uses one makes any."""
        self.plain_fields = policy.plain_policy_for
        """``plain_fields(path)``: the policy :meth:`check` picks for an ``http`` request to
        ``path`` (the routed path) when it makes no nonce and the path needs no normalizing:
        :meth:`merge_plain` then adds the same fields as :meth:`fields` without a view. None:
        the full pass."""

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
        return self.merge_plain(chosen, view.scheme, state, headers)

    def merge_plain(
        self,
        policy: HeaderPolicy,
        scheme: str,
        state: Mapping[str, Any] | None,
        headers: Headers,
    ) -> Headers:
        """``headers`` with ``policy`` merged in, for a request of ``scheme`` whose gates
        recorded ``state`` (None: no view was built, so no principal was found)."""
        principal = state.get("principal") if state else None
        authenticated = getattr(principal, "is_authenticated", False)
        secure = scheme == "https"  # an http response: never "wss"
        if self.raw:
            return policy.apply_bytes(headers, secure, authenticated)
        return policy.apply_str(headers, secure, authenticated)
