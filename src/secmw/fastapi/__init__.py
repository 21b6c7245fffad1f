"""FastAPI integration: ``Security(principal, scopes=[...])`` with FastAPI's own ``Security``,
role, permission and ownership dependencies, and :func:`install` for one error format and a
truthful ``/openapi.json``.

Credentials are checked by secmw's ``SecurityStack`` (or ``AuthenticationMiddleware``) before
the router runs; the dependencies read the principal it set (``secmw.current_principal()``)::

    from fastapi import FastAPI, Security
    import secmw.fastapi
    from secmw.asgi import SecurityStack

    api = FastAPI()
    secmw.fastapi.install(api)

    @api.get("/items")
    def list_items(user: Principal = Security(secmw.fastapi.principal, scopes=["items:read"])): ...

    app = SecurityStack(api)

Anonymous: 401 (the stack adds a ``WWW-Authenticate`` challenge per configured scheme). A
missing scope: 403 ``insufficient_scope`` with its RFC 6750 challenge. A missing role,
permission or ownership: 403. All ``application/problem+json`` once :func:`install` ran.
"""

from __future__ import annotations

from typing import Any

from secmw.authz import Authorizer
from secmw.fastapi.bridge import (
    Denied,
    SecurityBridge,
    bridge,
    environment_authorizer,
    request_principal,
)
from secmw.fastapi.install import denial_of, install, problem_response, route_scopes

__all__ = [
    "Denied",
    "SecurityBridge",
    "authorize",
    "bridge",
    "configure",
    "denial_of",
    "install",
    "principal",
    "problem_response",
    "request_principal",
    "require_all_roles",
    "require_owner",
    "require_permissions",
    "require_roles",
    "route_scopes",
]


def configure(settings: Any = None, *, authorizer: Authorizer | None = None) -> SecurityBridge:
    """Set the module-level functions' authorizer (see ``EnvironmentAuthorizer.configure``)."""
    environment_authorizer.configure(settings, authorizer=authorizer)
    return bridge


principal = bridge.principal
authorize = bridge.authorize
require_roles = bridge.require_roles
require_all_roles = bridge.require_all_roles
require_permissions = bridge.require_permissions
require_owner = bridge.require_owner
