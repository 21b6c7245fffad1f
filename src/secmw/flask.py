"""Flask helpers: the request's principal and a ``require_scopes`` view decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, request

from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.errors import MiddlewareNotInstalled
from secmw.wsgi.driver import principal_of

F = TypeVar("F", bound=Callable[..., Any])


def get_principal() -> Principal:
    """The principal secmw's WSGI middleware attached to the current Flask request."""
    principal = principal_of(request.environ)
    if principal is None:
        raise MiddlewareNotInstalled(
            "no principal: wrap app.wsgi_app with secmw.wsgi.AuthenticationMiddleware"
            " (or SecurityStack)"
        )
    return principal


def deny_response(deny: Deny) -> Response:
    """A Flask response for a Deny (problem+json, its headers)."""
    body = deny.body()
    return Response(body, status=deny.status, headers=deny.response_headers(len(body)))


def require_scopes(*scopes: str) -> Callable[[F], F]:
    """Decorate a view: 401 for the anonymous principal, 403 when a scope is missing.

    The 401 carries the challenges of the authentication middleware (it adds them to every 401).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = get_principal()
            if not principal.is_authenticated:
                return deny_response(
                    Deny(401, "authentication required", "authentication_required")
                )
            if not principal.has_scopes(*scopes):
                return deny_response(Deny(403, "insufficient scope", "insufficient_scope"))
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
