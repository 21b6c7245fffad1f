"""FastOpenAPI bridge: ``Security(principal, scopes=[...])`` over the principal secmw's middleware
set, role/permission/ownership dependencies, and the router's ``security_scheme``.

Credentials are checked by secmw's ``AuthenticationMiddleware`` (or ``SecurityStack``) before the
router runs; FastOpenAPI's ``RequestData`` carries no request object, so the dependencies here
read the principal from the context variable the middleware sets (``secmw.current_principal()``).
It follows the request into ``asyncio.to_thread`` and Starlette's ``run_in_threadpool`` (both copy
the context) and never leaks into another request: the middleware resets it when the request
ends. Without the middleware the dependencies answer 500 and log how to install it: never an
anonymous pass.

    from fastopenapi import Security
    from secmw.fastopenapi import principal

    @router.get("/items")
    def list_items(user: Principal = Security(principal, scopes=["items:read"])): ...

Anonymous: 401 (fastopenapi ``AuthenticationError``; the middleware adds its
``WWW-Authenticate`` challenges). Missing scope, role or permission: 403
(``AuthorizationError``). Wildcard scopes and permissions follow :mod:`secmw.authz`.

FastOpenAPI tells which parameter receives the required scopes by comparing its annotation with
``SecurityScopes`` at run time, through ``inspect.signature`` without evaluating string
annotations. This module therefore does not use ``from __future__ import annotations``, and
neither may app modules that declare their own ``security_scopes: SecurityScopes`` parameters.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Annotated, Any, Literal

from fastopenapi import Depends, Response, Security, SecurityScopes
from fastopenapi.errors import AuthenticationError, AuthorizationError, InternalServerError

from secmw.authz import Authorizer, check_permission
from secmw.config.settings import SecuritySettings
from secmw.core.context import current_principal
from secmw.core.deny import PROBLEM_CONTENT_TYPE, Deny
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError, MiddlewareNotInstalled
from secmw.tokens.model import IssuedTokens
from secmw.tokens.oauth import OAuthError

logger = logging.getLogger("secmw")

Dependency = Callable[..., Any]


class MiddlewareMissingError(InternalServerError):
    """A secured route ran without secmw's authentication middleware: 500, generic body."""


class SecurityBridge:
    """The dependencies, bound to one :class:`~secmw.authz.Authorizer`.

    The module-level :func:`principal`, :func:`require_roles`... belong to a bridge that reads
    ``authz.*`` from the environment at its first use (or takes :func:`configure`'s
    settings); build your own bridge to hold explicit settings.

    Args:
        authorizer: The role hierarchy and scope rules; default: built from ``settings``.
        settings: ``SecuritySettings`` for the authorizer; default: the environment, read now.
    """

    def __init__(self, authorizer: Authorizer | None = None, *, settings: Any = None) -> None:
        fixed = authorizer or Authorizer.from_settings(settings)
        self._setup(lambda: fixed)

    @classmethod
    def deferred(cls, get_authorizer: Callable[[], Authorizer]) -> "SecurityBridge":
        """A bridge asking ``get_authorizer`` for its authorizer at each check."""
        bridge = cls.__new__(cls)
        bridge._setup(get_authorizer)
        return bridge

    def _setup(self, get_authorizer: Callable[[], Authorizer]) -> None:
        self._get_authorizer = get_authorizer

        def principal(security_scopes: SecurityScopes) -> Principal:
            """``Security(principal, scopes=[...])``: the request's principal; 401 when
            anonymous, 403 when a scope is missing."""
            return self.authorize(security_scopes.scopes)

        self.principal: Dependency = principal

    @property
    def authorizer(self) -> Authorizer:
        """The authorizer the checks use."""
        return self._get_authorizer()

    def authorize(self, scopes: Iterable[str] = ()) -> Principal:
        """The request's principal, checked: authenticated and holding every scope in ``scopes``.

        Use it in your own dependencies with ``security_scopes.scopes``.

        Raises:
            AuthenticationError: the anonymous principal (401).
            AuthorizationError: a scope is missing (403).
            MiddlewareMissingError: no secmw authentication layer ran (500, logged).
        """
        try:
            found = current_principal()
        except MiddlewareNotInstalled as exc:
            logger.error(
                "secmw.fastopenapi: no principal for a secured route: wrap the app in"
                " secmw.asgi.AuthenticationMiddleware (Starlette) or"
                " secmw.wsgi.AuthenticationMiddleware (Flask), or in SecurityStack"
            )
            raise MiddlewareMissingError() from exc
        if not found.is_authenticated:
            raise AuthenticationError("Authentication required")
        missing = self.authorizer.missing_scopes(found, scopes)
        if missing:
            raise AuthorizationError(f"Missing scope: {' '.join(missing)}")
        return found

    def require_roles(self, *roles: str) -> Dependency:
        """``Depends(require_roles("admin", "moderator"))``: at least one of the roles
        (roles a role includes count)."""
        return self._check(roles, "One of roles", lambda a, p: a.has_any_role(p, *roles))

    def require_all_roles(self, *roles: str) -> Dependency:
        """``Depends(require_all_roles("admin", "auditor"))``: every one of the roles."""
        return self._check(roles, "Roles", lambda a, p: a.has_all_roles(p, *roles))

    def require_permissions(self, *permissions: str) -> Dependency:
        """``Depends(require_permissions("users:delete"))``: every permission, granted by the
        principal's roles through the hierarchy (wildcards included)."""
        for permission in permissions:
            try:
                check_permission(permission)
            except ValueError as exc:
                raise ConfigurationError(f"require_permissions: {exc}") from None
        return self._check(
            permissions, "Permission", lambda a, p: a.has_permissions(p, *permissions)
        )

    def require_owner(
        self,
        load: Dependency,
        *,
        owner: Callable[[Any], object] = attrgetter("owner_id"),
        roles: Iterable[str] = (),
    ) -> Dependency:
        """``Depends(require_owner(load_post, roles=["admin"]))``: the resource ``load`` finds,
        for its owner or a holder of one of ``roles`` only.

        Args:
            load: A dependency function loading the resource (FastOpenAPI resolves its
                parameters, such as a path parameter); it may raise ``ResourceNotFoundError``.
                It runs after authentication, so an anonymous caller learns nothing.
            owner: Reads the owner's id from the resource (``resource.owner_id`` by default);
                compared as a string with ``Principal.id``.
            roles: Roles that may act on resources they do not own (``"admin"``).
        """
        allowed = tuple(roles)

        # Parameters resolve in order: ``current`` (authentication) before ``resource``.
        def dependency(
            security_scopes: SecurityScopes,
            current: Annotated[Principal, Security(self.principal)],
            resource: Annotated[Any, Depends(load)],
        ) -> Any:
            self.authorize(security_scopes.scopes)
            if not self.authorizer.is_owner(current, owner(resource), or_roles=allowed):
                raise AuthorizationError("You do not own this resource")
            return resource

        return dependency

    def _check(
        self, names: tuple[str, ...], label: str, check: Callable[[Authorizer, Principal], bool]
    ) -> Dependency:
        if not names:
            raise ConfigurationError(f"{label}: name at least one")
        message = f"{label} required: {', '.join(names)}"

        # ``current`` is a nested Security so that /openapi.json marks the route as secured even
        # under Depends(); the outer Security's scopes arrive in ``security_scopes`` only
        # (FastOpenAPI does not pass them down to nested dependencies), so they are checked here.
        def dependency(
            security_scopes: SecurityScopes, current: Annotated[Principal, Security(self.principal)]
        ) -> Principal:
            self.authorize(security_scopes.scopes)
            if not check(self.authorizer, current):
                raise AuthorizationError(message)
            return current

        return dependency


class _EnvironmentAuthorizer:
    """The module-level bridge's authorizer: built from the environment once, on first use."""

    def __init__(self) -> None:
        self._value: Authorizer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Authorizer:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = Authorizer.from_settings(None)
        return self._value

    def set(self, authorizer: Authorizer) -> None:
        with self._lock:
            self._value = authorizer


_environment = _EnvironmentAuthorizer()
bridge = SecurityBridge.deferred(_environment)
"""The module-level bridge; its methods are this module's functions."""


def configure(settings: Any = None, *, authorizer: Authorizer | None = None) -> SecurityBridge:
    """Set the module-level bridge's authorizer from explicit settings (or the environment, read
    now): call it at app start so a bad ``authz.roles`` fails there."""
    _environment.set(authorizer or Authorizer.from_settings(settings))
    return bridge


principal = bridge.principal
authorize = bridge.authorize
require_roles = bridge.require_roles
require_all_roles = bridge.require_all_roles
require_permissions = bridge.require_permissions
require_owner = bridge.require_owner


def token_response(result: IssuedTokens | OAuthError) -> Response:
    """The FastOpenAPI response for a token-endpoint result: the RFC 6749 §5.1 token body, or the
    §5.2 error with its status, both with ``Cache-Control: no-store``."""
    status = result.status if isinstance(result, OAuthError) else 200
    return Response(content=result.body(), status_code=status, headers=dict(result.headers))


def problem_response(deny: Deny) -> Response:
    """The FastOpenAPI response for a :class:`~secmw.core.deny.Deny` (problem+json, its headers),
    for routes that refuse a request themselves (a throttled login, for example)."""
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE}
    headers.update(dict(deny.headers))
    return Response(content=json.loads(deny.body()), status_code=deny.status, headers=headers)


SchemeKind = Literal["oauth2", "bearer", "apikey", "apikey-query", "basic"]


def security_scheme(
    settings: Any = None,
    *,
    kind: SchemeKind | None = None,
    token_url: str | None = None,
    scopes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``security_scheme`` for a FastOpenAPI router, describing what the middleware checks.

    With no ``kind``, the first configured scheme of ``auth.order`` is described: a JWT
    becomes the OAuth2 password flow when a token URL is known (``token_url`` or
    ``tokens.token_url``), else HTTP bearer; API keys use the configured header (or query
    parameter); Basic users become HTTP basic.

    Args:
        settings: ``SecuritySettings``; default: the environment.
        kind: Force one scheme.
        token_url: The token endpoint for the OAuth2 password flow.
        scopes: Scope descriptions for the flow, added to ``tokens.scopes``.

    Raises:
        ConfigurationError: nothing is configured to describe.
    """
    schemes = security_schemes(settings, token_url=token_url, scopes=scopes)
    if kind is not None:
        if kind not in schemes:
            raise ConfigurationError(f"security_scheme: {kind!r} is not configured")
        return schemes[kind]
    if not schemes:
        raise ConfigurationError(
            "security_scheme: no authentication configured (set jwt.secret,"
            " api_keys.keys or basic.users)"
        )
    return next(iter(schemes.values()))


def security_schemes(
    settings: Any = None,
    *,
    token_url: str | None = None,
    scopes: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every configured scheme as an OpenAPI security scheme object, keyed by kind, in
    ``auth.order``."""
    if settings is None:
        settings = SecuritySettings()
    found: dict[str, dict[str, Any]] = {}
    for name in settings.auth.order:
        if name == "bearer" and _has_jwt(settings):
            url = token_url or settings.tokens.token_url
            flows = _oauth2_flows(settings, url, scopes) if url else {}
            if flows:
                found["oauth2"] = {"type": "oauth2", "flows": flows}
            found["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        elif name == "apikey" and (settings.api_keys.keys or settings.api_keys.file):
            if settings.api_keys.header:
                found["apikey"] = {
                    "type": "apiKey",
                    "in": "header",
                    "name": settings.api_keys.header,
                }
            if settings.api_keys.query_param:
                found["apikey-query"] = {
                    "type": "apiKey",
                    "in": "query",
                    "name": settings.api_keys.query_param,
                }
        elif name == "basic" and (settings.basic.users or settings.basic.users_file):
            found["basic"] = {"type": "http", "scheme": "basic"}
    return found


def _oauth2_flows(
    settings: Any, url: str, scopes: Mapping[str, str] | None
) -> dict[str, dict[str, Any]]:
    """The OAuth2 flows the token endpoint answers: password (when ``tokens.password_grant`` is
    on), client credentials (when ``tokens.clients`` lists a client)."""
    known = {**settings.tokens.scopes, **(scopes or {})}
    flows: dict[str, dict[str, Any]] = {}
    if settings.tokens.password_grant:
        flows["password"] = {"tokenUrl": url, "refreshUrl": url, "scopes": known}
    if settings.tokens.clients:
        flows["clientCredentials"] = {"tokenUrl": url, "scopes": known}
    return flows


_SCHEME_NAMES = {
    "oauth2": "OAuth2",
    "bearer": "BearerAuth",
    "apikey": "ApiKeyAuth",
    "apikey-query": "ApiKeyQuery",
    "basic": "BasicAuth",
}


def describe_security(router: Any, settings: Any = None, *, token_url: str | None = None) -> None:
    """Register every configured scheme on ``router``, so /openapi.json lists each alternative.

    FastOpenAPI's ``security_scheme=`` takes one scheme; a router can hold several (its
    ``include_router`` merges them), and each secured operation then lists every one as an
    accepted alternative. FastOpenAPI 1.0 has no public setter for several, so this writes the
    router's scheme table directly. Call it before the schema is first served.
    """
    schemes = security_schemes(settings, token_url=token_url)
    if "oauth2" in schemes:
        del schemes["bearer"]  # the same bearer token: the flow already describes it
    router._security_schemes = {_SCHEME_NAMES[kind]: scheme for kind, scheme in schemes.items()}
    router._openapi_schema = None


def _has_jwt(settings: Any) -> bool:
    jwt = settings.jwt
    return bool(jwt.secret or jwt.secret_file or jwt.public_key or jwt.public_key_file) or bool(
        getattr(jwt, "jwks_url", None)
    )
