"""Security response headers: the default policy, per-path policies, and the pass per response.

Everything here is pure: header blocks are validated and encoded once when a
:class:`SecurityHeaders` is built, and the per-request pass (:meth:`HeaderPass.apply`) merges
them into the response's own headers in one scan, without I/O.

Each policy has two sets, chosen by the response's ``Content-Type`` when it starts
(:mod:`secmw.headers.content`). Responses that are no document get the API set of the OWASP REST
Security Cheat Sheet: HSTS for a year (RFC 6797, HTTPS only), ``nosniff``, ``X-Frame-Options:
DENY``, CSP ``default-src 'none'; frame-ancestors 'none'``, ``Referrer-Policy: no-referrer``,
CORP ``same-origin`` and ``Cache-Control: no-store`` unless the app set its own. Documents, and
responses without a ``Content-Type``, get the full set of the OWASP Secure Headers Project: the
same fields (``Cache-Control`` on responses to authenticated requests only, the configured CSP)
with a deny-by-default ``Permissions-Policy``, COOP ``same-origin``, ``X-XSS-Protection: 0`` and
``X-Permitted-Cross-Domain-Policies: none``.
"""

from __future__ import annotations

from secmw.core.request import RequestView, needs_normalizing
from secmw.headers.build import build_path_policies, build_policy
from secmw.headers.csp import make_nonce
from secmw.headers.policy import HeaderPass, HeaderPolicy
from secmw.headers.settings import HeadersSettings


class SecurityHeaders:
    """The layer's core: the default policy, per-path policies, and a pass per request.

    Args:
        settings: The ``headers`` section; default: the strict API policy.

    Raises:
        ConfigurationError: invalid settings, naming the variable.
    """

    __slots__ = ("default", "enabled", "nonced", "paths")

    def __init__(self, settings: HeadersSettings | None = None) -> None:
        s = settings if settings is not None else HeadersSettings()
        self.enabled = s.enabled
        self.default = build_policy(s)
        self.paths = build_path_policies(s)
        self.nonced = self.default.nonced or any(p.nonced for _, p in self.paths.entries)
        """Some response gets a CSP nonce (else no request ever has one to publish)."""

    def plain_policy_for(self, path: str) -> HeaderPolicy | None:
        """The policy for ``path`` (``route_path``) when that policy makes no nonce and the
        path needs no normalizing: the adapters then need nothing else of the request but its
        scheme. None otherwise (the full pass with :meth:`start`)."""
        if needs_normalizing(path):
            return None
        found = self.paths.match(path)  # None at once when there are no path policies
        policy = found[1] if found else self.default
        return None if policy.nonced else policy

    def policy_for(self, path: str) -> HeaderPolicy:
        """The policy for a normalized path: the first matching path policy, else the default."""
        found = self.paths.match(path)
        return found[1] if found else self.default

    def start(self, request: RequestView) -> HeaderPass:
        """Begin a request: pick its policy and, when that policy uses one, make a nonce.

        The nonce is stored as ``request.state["csp_nonce"]``.
        """
        policy = self.policy_for(request.normalized_path)
        nonce = None
        if policy.csp is not None and policy.csp.uses_nonce:
            nonce = request.state["csp_nonce"] = make_nonce()
        return HeaderPass(policy, nonce, secure=request.is_secure, request=request)
