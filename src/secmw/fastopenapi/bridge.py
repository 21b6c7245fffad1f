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
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from fastopenapi import Depends, Response, Security, SecurityScopes
from fastopenapi.errors import (
    APIError,
    AuthenticationError,
    AuthorizationError,
    InternalServerError,
)

from secmw import openapi
from secmw.access import Bridge, Dependency, EnvironmentAuthorizer, Rule
from secmw.config.settings import SecuritySettings
from secmw.core.context import current_principal
from secmw.core.deny import PROBLEM_CONTENT_TYPE, Deny
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError, MiddlewareNotInstalled
from secmw.tokens.model import IssuedTokens
from secmw.tokens.oauth import OAuthError

logger = logging.getLogger("secmw")


class MiddlewareMissingError(InternalServerError):
    """A secured route ran without secmw's authentication middleware: 500, generic body."""


class AuthenticationDenied(AuthenticationError):
    """401 from a secmw dependency, carrying its :class:`~secmw.core.deny.Deny` (rendered as
    problem+json once :func:`~secmw.fastopenapi.install` ran, FastOpenAPI's format before)."""

    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.detail)
        self.deny = deny


class AuthorizationDenied(AuthorizationError):
    """403 from a secmw dependency, carrying its :class:`~secmw.core.deny.Deny`."""

    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.detail)
        self.deny = deny


def refusal(deny: Deny) -> APIError:
    """The FastOpenAPI error for a Deny of a secmw dependency."""
    return AuthenticationDenied(deny) if deny.status == 401 else AuthorizationDenied(deny)


def secured(dependency: Dependency) -> Dependency:
    """Mark a dependency as one of secmw's (the installer checks such routes before their body
    is parsed)."""
    dependency.secmw_secured = True  # type: ignore[attr-defined]
    return dependency


class SecurityBridge(Bridge):
    """The FastOpenAPI dependencies, bound to one :class:`~secmw.authz.Authorizer`. See
    :class:`secmw.access.Bridge` for the arguments; ``authorize`` raises
    :class:`AuthenticationDenied` (401), :class:`AuthorizationDenied` (403) or
    :class:`MiddlewareMissingError` (500, logged) when no secmw authentication layer ran."""

    def _principal_dependency(self) -> Dependency:
        def principal(security_scopes: SecurityScopes) -> Principal:
            """``Security(principal, scopes=[...])``: the request's principal; 401 when
            anonymous, 403 when a scope is missing."""
            return self.authorize(security_scopes.scopes)

        return secured(principal)

    def _current(self) -> Principal:
        return request_principal()

    def _refusal(self, deny: Deny) -> Exception:
        return refusal(deny)

    def _owner_dependency(
        self, load: Dependency, check: Callable[[Principal, Any], Any]
    ) -> Dependency:
        # Parameters resolve in order: ``current`` (authentication) before ``resource``.
        def dependency(
            security_scopes: SecurityScopes,
            current: Annotated[Principal, Security(self.principal)],
            resource: Annotated[Any, Depends(load)],
        ) -> Any:
            self.authorize(security_scopes.scopes)
            return check(current, resource)

        return secured(dependency)

    def _check(self, rule: Rule) -> Dependency:
        # ``current`` is a nested Security so that /openapi.json marks the route as secured even
        # under Depends(); the outer Security's scopes arrive in ``security_scopes`` only
        # (FastOpenAPI does not pass them down to nested dependencies), so they are checked here.
        def dependency(
            security_scopes: SecurityScopes, current: Annotated[Principal, Security(self.principal)]
        ) -> Principal:
            self.authorize(security_scopes.scopes)
            return self.enforce(rule, current)

        return secured(dependency)


def request_principal() -> Principal:
    """The principal of the request being served, or a logged 500 without the middleware: a
    secured route never runs as anonymous because the layer is missing."""
    try:
        return current_principal()
    except MiddlewareNotInstalled as exc:
        logger.error(
            "secmw.fastopenapi: no principal for a secured route: wrap the app in"
            " secmw.asgi.AuthenticationMiddleware (Starlette) or"
            " secmw.wsgi.AuthenticationMiddleware (Flask), or in SecurityStack"
        )
        raise MiddlewareMissingError() from exc


environment_authorizer = EnvironmentAuthorizer()
bridge = SecurityBridge.deferred(environment_authorizer)
"""The module-level bridge; its methods are this module's functions."""


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
    return openapi.security_schemes(settings, token_url=token_url, scopes=scopes)


def describe_security(router: Any, settings: Any = None, *, token_url: str | None = None) -> None:
    """Register every configured scheme on ``router``, so /openapi.json lists each alternative.

    FastOpenAPI's ``security_scheme=`` takes one scheme; a router can hold several (its
    ``include_router`` merges them), and each secured operation then lists every one as an
    accepted alternative. FastOpenAPI 1.0 has no public setter for several, so this writes the
    router's scheme table directly. Call it before the schema is first served.
    """
    router._security_schemes = openapi.named_schemes(
        settings if settings is not None else SecuritySettings(), token_url=token_url
    )
    router._openapi_schema = None
