"""FastAPI dependencies over the principal secmw's middleware set: ``Security(principal,
scopes=[...])`` with FastAPI's own ``Security`` and ``SecurityScopes``, and role, permission
and ownership checks. The decisions are :mod:`secmw.access`'s, shared with the FastOpenAPI
bridge.

No ``from __future__ import annotations`` here: FastAPI evaluates the dependencies' parameter
annotations, which name local objects (``Security(self.principal)``, ``Depends(load)``).
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Security
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from secmw.access import Bridge, Dependency, EnvironmentAuthorizer, Rule
from secmw.core.context import current_principal
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.errors import MiddlewareNotInstalled

logger = logging.getLogger("secmw")

MARKER_NAME = "secmw"
"""The placeholder scheme name FastAPI writes on each operation that depends on a principal;
:func:`secmw.fastapi.install` replaces it with the configured schemes."""


class Denied(HTTPException):
    """A refusal from a secmw dependency: an ``HTTPException`` (so FastAPI answers it even
    without :func:`~secmw.fastapi.install`) carrying the :class:`~secmw.core.deny.Deny` that
    ``install`` renders as problem+json."""

    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.status, deny.detail, dict(deny.headers) or None)
        self.deny = deny


class SecuredMarker(SecurityBase):
    """Tells FastAPI's OpenAPI generator an operation is secured, with its scopes.

    FastAPI lists an operation's ``security`` (scopes collected through nested dependencies,
    router dependencies and included routers) only for dependencies that are ``SecurityBase``
    instances. The principal dependency depends on this one, which reads nothing: the middleware
    has already checked the credential.
    """

    def __init__(self) -> None:
        self.model = HTTPBaseModel(scheme="bearer", description="secmw")
        self.scheme_name = MARKER_NAME

    def __call__(self, request: HTTPConnection) -> None:
        return None


MARKER = SecuredMarker()


class SecurityBridge(Bridge):
    """The FastAPI dependencies, bound to one :class:`~secmw.authz.Authorizer`: use them in
    FastAPI's ``Security(...)``. See :class:`secmw.access.Bridge` for the arguments."""

    def _principal_dependency(self) -> Dependency:
        def principal(
            security_scopes: SecurityScopes, _: Annotated[None, Depends(MARKER)]
        ) -> Principal:
            """``Security(principal, scopes=[...])``: the request's principal; 401 when
            anonymous, 403 ``insufficient_scope`` when a scope is missing."""
            return self.authorize(security_scopes.scopes)

        return principal

    def _current(self) -> Principal:
        return request_principal()

    def _refusal(self, deny: Deny) -> Exception:
        return Denied(deny)

    def _owner_dependency(
        self, load: Dependency, check: Callable[[Principal, Any], Any]
    ) -> Dependency:
        # Sub-dependencies resolve in parameter order: ``current`` (authentication) first.
        def dependency(
            current: Annotated[Principal, Security(self.principal)],
            resource: Annotated[Any, Depends(load)],
        ) -> Any:
            return check(current, resource)

        return dependency

    def _check(self, rule: Rule) -> Dependency:
        # FastAPI hands the outer Security's scopes down to the nested principal dependency.
        def dependency(current: Annotated[Principal, Security(self.principal)]) -> Principal:
            return self.enforce(rule, current)

        return dependency


def request_principal() -> Principal:
    """The principal of the request being served, or a logged 500 without the middleware: a
    secured route never runs as anonymous because the layer is missing."""
    try:
        return current_principal()
    except MiddlewareNotInstalled as exc:
        logger.error(
            "secmw.fastapi: no principal for a secured route: wrap the app in"
            " secmw.asgi.SecurityStack (or secmw.asgi.AuthenticationMiddleware)"
        )
        raise HTTPException(500, "Internal Server Error") from exc


environment_authorizer = EnvironmentAuthorizer()
bridge = SecurityBridge.deferred(environment_authorizer)
"""The module-level bridge; its methods are ``secmw.fastapi``'s functions."""
