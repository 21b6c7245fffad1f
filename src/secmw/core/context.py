"""Context variables: the principal (and CSP nonce) for code that sees no request object."""

from __future__ import annotations

from contextvars import ContextVar

from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import MiddlewareNotInstalled

principal_var: ContextVar[Principal] = ContextVar("secmw.principal")
request_var: ContextVar[RequestView] = ContextVar("secmw.request")
csp_nonce_var: ContextVar[str] = ContextVar("secmw.csp_nonce")


def current_principal() -> Principal:
    """The principal of the request being served.

    Raises:
        MiddlewareNotInstalled: no secmw authentication layer ran for this request. This is loud on
            purpose: a silent anonymous answer would hide a missing middleware.
    """
    try:
        return principal_var.get()
    except LookupError:
        raise MiddlewareNotInstalled(
            "no principal: install secmw's AuthenticationMiddleware (or SecurityStack) on the app"
        ) from None


def current_csp_nonce() -> str | None:
    """The CSP nonce of the request being served, None when the headers layer is not installed."""
    return csp_nonce_var.get(None)


def current_request() -> RequestView:
    """The request view of the request being served (client address, headers...).

    For code that sees no request object, such as a FastOpenAPI endpoint reporting a failed login
    to the throttle.

    Raises:
        MiddlewareNotInstalled: no secmw authentication layer ran for this request.
    """
    try:
        return request_var.get()
    except LookupError:
        raise MiddlewareNotInstalled(
            "no request: install secmw's AuthenticationMiddleware (or SecurityStack) on the app"
        ) from None
