"""``install(app)``: one error format and a truthful OpenAPI document for a FastAPI app behind
secmw's stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from secmw.access import AccessRules, check_scopes, raised_denial
from secmw.authz import Authorizer
from secmw.core.deny import Deny
from secmw.core.section import settings_or_environment
from secmw.fastapi.bridge import MARKER, MARKER_NAME, Denied
from secmw.openapi import amend_document, named_schemes


def install(app: FastAPI, settings: Any = None, *, token_url: str | None = None) -> FastAPI:
    """Give ``app`` secmw's error format and an OpenAPI document that says what the stack does.

    - Every 401 and 403 (a secmw dependency's, FastAPI's own security classes', an
      ``HTTPException`` of the app's) answers ``application/problem+json`` through
      :class:`~secmw.core.deny.Deny`, keeping its ``WWW-Authenticate``; a missing scope
      carries ``Bearer error="insufficient_scope"``.
    - An operation that depends on the principal refuses an anonymous caller (401) or one
      without its scopes (403) before it reports a malformed or invalid request (422):
      FastAPI reads the body before it resolves dependencies.
    - ``/openapi.json`` lists the configured security schemes (so ``/docs`` has an Authorize
      button for each), each secured operation's requirement, and the 400, 401, 403, 429 and 503
      answers of the stack, with the ``Problem`` schema component.
    - A scope that is no valid RFC 6749 scope-token (a space, a control character) in
      ``Security(..., scopes=[...])`` fails here, and at startup for routes added later.

    Args:
        app: The FastAPI app (the one ``SecurityStack`` wraps).
        settings: ``SecuritySettings``; default: the environment.
        token_url: The token endpoint shown in the OAuth2 flows; default: ``tokens.token_url``.

    Returns:
        ``app``.

    Raises:
        ConfigurationError: an invalid scope on a route.
    """
    settings = settings_or_environment(settings, {})
    rules = AccessRules.of(Authorizer.from_settings(settings))
    schemes = named_schemes(settings, token_url=token_url)

    async def on_http_exception(request: Request, exc: Any) -> Response:
        deny = denial_of(exc)
        if deny is None:
            return await http_exception_handler(request, exc)
        # A websocket handshake has no method: Starlette sends the answer as its denial response.
        return problem_response(deny, request.scope.get("method", "GET"))

    async def on_invalid_request(request: Request, exc: Any) -> Response:
        deny = rules.before_parsing(route_scopes(request.scope.get("route")))
        if deny is None:
            return await request_validation_exception_handler(request, exc)
        return problem_response(deny, request.method)

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    generate = app.openapi
    amended: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not amended or amended[0] is not document:
            document.get("components", {}).get("securitySchemes", {}).pop(MARKER_NAME, None)
            amend_document(document, settings, schemes, _marker_scopes)
            amended[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    openapi()
    _check_at_startup(app)
    return app


def denial_of(exc: StarletteHTTPException) -> Deny | None:
    """The Deny an ``HTTPException`` stands for: a secmw dependency's own, or a 401/403 of
    FastAPI or the app (with its headers); None for other statuses."""
    if isinstance(exc, Denied):
        return exc.deny
    detail = exc.detail if isinstance(exc.detail, str) else ""
    return raised_denial(exc.status_code, detail, (exc.headers or {}).items())


def problem_response(deny: Deny, method: str = "GET") -> Response:
    """The Starlette response for a Deny: problem+json, its headers; no body for ``HEAD``."""
    fields, body = deny.rendered(method)
    response = Response(body, status_code=deny.status)
    response.raw_headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
    return response


def route_scopes(route: Any) -> list[str] | None:
    """The scopes an operation's principal dependencies require, None when it has none."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    found: list[str] | None = None
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is MARKER:
            found = found if found is not None else []
            for scope in [*(current.parent_oauth_scopes or []), *(current.own_oauth_scopes or [])]:
                if scope not in found:
                    found.append(scope)
        pending.extend(current.dependencies)
    return found


def _marker_scopes(operation: dict[str, Any]) -> list[str] | None:
    """The scopes of FastAPI's placeholder requirement (removed from the operation)."""
    found: list[str] | None = None
    kept = []
    for entry in operation.get("security", []):
        if MARKER_NAME in entry:
            found = list(entry[MARKER_NAME])
            check_scopes(found, f"{operation.get('operationId', 'operation')}: Security scopes")
            entry = {k: v for k, v in entry.items() if k != MARKER_NAME}
        if entry:
            kept.append(entry)
    if found is not None:
        operation["security"] = kept
    return found


def _check_at_startup(app: FastAPI) -> None:
    """Build the document again when the app starts: routes added after ``install`` are
    checked too (an invalid scope stops the startup)."""
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: Any) -> AsyncIterator[Any]:
        app.openapi()
        async with original(running) as state:
            yield state

    app.router.lifespan_context = lifespan
