"""FastOpenAPI integration: ``Security(principal, scopes=[...])`` over the principal secmw's
middleware set, role/permission/ownership dependencies, the router's security schemes, and
:func:`install` for one error format and a truthful ``/openapi.json``.

See :mod:`secmw.fastopenapi.bridge` for how the dependencies find the principal.
"""

from typing import Any

from secmw.authz import Authorizer
from secmw.fastopenapi.bridge import (
    AuthenticationDenied,
    AuthorizationDenied,
    MiddlewareMissingError,
    SchemeKind,
    SecurityBridge,
    bridge,
    describe_security,
    environment_authorizer,
    problem_response,
    security_scheme,
    security_schemes,
    token_response,
)
from secmw.fastopenapi.install import denial_of, endpoint_scopes, install

__all__ = [
    "AuthenticationDenied",
    "AuthorizationDenied",
    "MiddlewareMissingError",
    "SchemeKind",
    "SecurityBridge",
    "authorize",
    "bridge",
    "configure",
    "denial_of",
    "describe_security",
    "endpoint_scopes",
    "install",
    "principal",
    "problem_response",
    "require_all_roles",
    "require_owner",
    "require_permissions",
    "require_roles",
    "security_scheme",
    "security_schemes",
    "token_response",
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
