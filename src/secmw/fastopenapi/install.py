"""``install(router)``: one error format and a truthful OpenAPI document for a FastOpenAPI router
behind secmw's stack.

FastOpenAPI 1.0 has no hook for error rendering, request pre-checks or document post-processing:
``install`` replaces the router instance's ``handle_exception`` / ``handle_request*`` methods
(which its adapters call through ``self``) and gives the instance a subclass whose ``openapi``
property amends what FastOpenAPI generates.
"""

import inspect
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from fastopenapi import Depends, Security
from fastopenapi.errors import AuthenticationError, AuthorizationError
from fastopenapi.response.serializer import WireResponse

from secmw.access import AccessRules, check_scopes, raised_denial
from secmw.authz import Authorizer
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.openapi import amend_document, named_schemes


def install(router: Any, settings: Any = None, *, token_url: str | None = None) -> Any:
    """Give a FastOpenAPI ``router`` (the one attached to the app) secmw's error format and an
    OpenAPI document that says what the stack does.

    - Every 401 and 403 answers ``application/problem+json`` through
      :class:`~secmw.core.deny.Deny`, with its challenge: a secmw dependency's (a missing scope
      carries ``Bearer error="insufficient_scope"``) and FastOpenAPI's ``AuthenticationError`` /
      ``AuthorizationError`` raised by the app.
    - An operation with a secmw ``Security`` dependency refuses an anonymous caller (401) or one
      without its scopes (403) before FastOpenAPI reads the request body or parameters.
    - ``/openapi.json`` lists every configured security scheme and, on each operation, the 400,
      401, 403, 429 and 503 answers of the stack, with the ``Problem`` schema component.
    - A scope that is no valid RFC 6749 scope-token raises ``ConfigurationError`` here for the
      routes declared so far, at a later route's first request otherwise.

    Args:
        router: A FastOpenAPI router (``StarletteRouter``, ``FlaskRouter``...).
        settings: ``SecuritySettings``; default: the environment.
        token_url: The token endpoint shown in the OAuth2 flows; default: ``tokens.token_url``.

    Returns:
        ``router``.
    """
    settings = settings if settings is not None else SecuritySettings()
    rules = AccessRules.of(Authorizer.from_settings(settings))
    schemes = named_schemes(settings, token_url=token_url)
    router._security_schemes = schemes
    router._openapi_schema = None
    for route in router.get_routes():  # the routes declared so far; later ones at first use
        endpoint_scopes(route.endpoint)
    _render_denials(router)
    _check_before_parsing(router, rules)
    _amend_documents(router, settings, schemes)
    return router


def denial_of(exc: BaseException) -> Deny | None:
    """The Deny an exception stands for: a secmw dependency's own, or FastOpenAPI's 401/403."""
    deny = getattr(exc, "deny", None)
    if isinstance(deny, Deny):
        return deny
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return raised_denial(int(exc.status_code), exc.message)
    return None


def endpoint_scopes(endpoint: Callable[..., Any]) -> list[str] | None:
    """The scopes an endpoint's secmw ``Security`` dependencies require, None when it has none."""
    return _scopes_of(endpoint)


@lru_cache(maxsize=4096)
def _scopes_of(endpoint: Callable[..., Any]) -> list[str] | None:
    found: list[str] | None = None
    for marker in _markers(endpoint, set()):
        if isinstance(marker, Security) and getattr(marker.dependency, "secmw_secured", False):
            scopes = check_scopes(marker.scopes, f"{endpoint.__name__}: Security scopes")
            found = found if found is not None else []
            found.extend(s for s in scopes if s not in found)
    return found


def _markers(func: Any, seen: set[int]) -> Iterator[Depends]:
    """Every Depends/Security marker of ``func``'s parameters, nested ones included."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return
    for parameter in parameters:
        candidates = [parameter.default, *getattr(parameter.annotation, "__metadata__", ())]
        for marker in candidates:
            if not isinstance(marker, Depends):
                continue
            yield marker
            if marker.dependency is not None and id(marker.dependency) not in seen:
                seen.add(id(marker.dependency))
                yield from _markers(marker.dependency, seen)


def _render_denials(router: Any) -> None:
    original = router.handle_exception

    def handle_exception(exc: Exception) -> Any:
        deny = denial_of(exc)
        if deny is None:
            return original(exc)
        fields, body = deny.rendered("GET")
        headers: dict[str, str] = {}
        for name, value in fields:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return router.build_framework_response(WireResponse(body, deny.status, headers))

    router.handle_exception = handle_exception


def _check_before_parsing(router: Any, rules: AccessRules) -> None:
    """Decide the secmw dependencies' refusal before FastOpenAPI extracts the request data (it
    parses the body before it resolves dependencies: a broken body would answer 422 first)."""
    handle = router.handle_request
    handle_async: Any = getattr(router, "handle_request_async", None)

    def refusal(endpoint: Callable[..., Any]) -> Deny | None:
        return rules.before_parsing(endpoint_scopes(endpoint))

    def handle_request(endpoint: Callable[..., Any], env: Any, meta: Any = None) -> Any:
        deny = refusal(endpoint)
        if deny is not None:
            return router.handle_exception(_Refused(deny))
        return handle(endpoint, env, meta)

    async def handle_request_async(endpoint: Callable[..., Any], env: Any, meta: Any = None) -> Any:
        deny = refusal(endpoint)
        if deny is not None:
            return router.handle_exception(_Refused(deny))
        return await handle_async(endpoint, env, meta)

    router.handle_request = handle_request
    if handle_async is not None:
        router.handle_request_async = handle_request_async


class _Refused(Exception):
    def __init__(self, deny: Deny) -> None:
        super().__init__(deny.detail)
        self.deny = deny


def _amend_documents(router: Any, settings: Any, schemes: dict[str, Any]) -> None:
    base = type(router)
    generate = base.openapi.fget
    amended: list[dict[str, Any]] = []

    def openapi(self: Any) -> dict[str, Any]:
        document: dict[str, Any] = generate(self)
        if not amended or amended[0] is not document:
            amend_document(document, settings, schemes, _secured_scopes)
            amended[:] = [document]
        return document

    router.__class__ = type(base.__name__, (base,), {"openapi": property(openapi)})


def _secured_scopes(operation: dict[str, Any]) -> list[str] | None:
    """A secured operation's scopes; FastOpenAPI's own 401/403 (its ``ErrorSchema``, no
    challenge) are dropped: the stack's problem+json answers replace them."""
    requirements = operation.get("security")
    if not requirements:
        return None
    responses = operation.get("responses", {})
    for status in ("401", "403"):
        if "ErrorSchema" in str(responses.get(status, {}).get("content", "")):
            del responses[status]
    found: list[str] = []
    for entry in requirements:
        for scopes in entry.values():
            found.extend(s for s in scopes if s not in found)
    return found
