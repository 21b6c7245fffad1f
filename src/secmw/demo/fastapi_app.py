"""The demo on FastAPI, behind ``secmw.asgi.SecurityStack``, with :mod:`secmw.fastapi`: the
same routes and answers as the FastOpenAPI demos.

No ``from __future__ import annotations`` here: FastAPI evaluates parameter annotations, and the
``Annotated`` aliases are local to ``build_app``.
"""

import asyncio
from typing import Annotated, Any

from fastapi import FastAPI, Form, Header, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from secmw.asgi import SecurityStack
from secmw.asgi._util import ASGIApp
from secmw.core.context import current_request
from secmw.core.principal import Principal
from secmw.demo.common import Demo, token_form
from secmw.demo.docs_ui import ASSETS_URL, DOCS_URL, asset, swagger_page
from secmw.fastapi import SecurityBridge, install
from secmw.tokens.model import IssuedTokens
from secmw.tokens.oauth import OAuthError

_OAUTH_ERROR = {
    "description": "An RFC 6749 section 5.2 error.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _OAUTH_ERROR,
    401: {**_OAUTH_ERROR, "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    429: {**_OAUTH_ERROR, "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}
"""What the token endpoint answers besides its 200 (RFC 6749 error bodies)."""


class NewItem(BaseModel):
    name: str


def build_app(demo: Demo) -> ASGIApp:
    """The demo ASGI app: a FastAPI app wrapped in the whole stack."""
    security = SecurityBridge(settings=demo.settings)
    stack: dict[str, SecurityStack] = {}
    api = FastAPI(title="secmw demo", version="1", docs_url=None, redoc_url=None)
    Reader = Annotated[Principal, Security(security.principal, scopes=["items:read"])]
    Writer = Annotated[Principal, Security(security.principal, scopes=["items:write"])]
    Admin = Annotated[Principal, Security(security.principal, scopes=["admin:read"])]
    Anyone = Annotated[Principal, Security(security.principal)]

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/token", responses=TOKEN_RESPONSES)
    async def token(
        grant_type: Annotated[str, Form()] = "",
        username: Annotated[str | None, Form()] = None,
        password: Annotated[str | None, Form()] = None,
        scope: Annotated[str | None, Form()] = None,
        refresh_token: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
    ) -> Response:
        form = token_form(
            grant_type, username, password, scope, refresh_token, client_id, client_secret
        )
        result = await demo.issuer.aexchange(
            form, _in_thread(demo.authenticate), throttle=stack["app"].throttle
        )
        return token_response(result)

    @api.post("/logout")
    async def logout(user: Anyone, authorization: Annotated[str, Header()] = "") -> Any:
        scheme, _, token = authorization.partition(" ")
        revoked = scheme.lower() == "bearer" and await demo.issuer.arevoke(token.strip())
        return {"revoked": bool(revoked)}

    @api.get("/me")
    async def me(user: Anyone) -> dict[str, Any]:
        return {"id": user.id, "scheme": user.scheme, "scopes": sorted(user.scopes)}

    @api.get("/items")
    async def list_items(user: Reader) -> dict[str, Any]:
        return {"items": list(demo.items)}

    @api.post("/items", status_code=201)
    async def create_item(body: NewItem, user: Writer) -> dict[str, Any]:
        return demo.add_item(body.name, user.id)

    @api.get("/admin/stats")
    async def admin_stats(user: Admin) -> dict[str, Any]:
        return {"items": len(demo.items), "for": user.id}

    @api.get("/internal/status")
    async def internal_status() -> dict[str, Any]:
        return {"status": "ok", "client": current_request().client}

    @api.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(swagger_page())

    @api.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        found = asset(name)
        if found is None:
            return Response(status_code=404)
        return Response(found[0], media_type=found[1])

    install(api, demo.settings)
    stack["app"] = SecurityStack(api, settings=demo.settings, revocation=demo.revocation)
    return stack["app"]


def token_response(result: IssuedTokens | OAuthError) -> Response:
    """The token endpoint's answer: the RFC 6749 §5.1 body, or the §5.2 error with its status,
    both with ``Cache-Control: no-store``."""
    status = result.status if isinstance(result, OAuthError) else 200
    return JSONResponse(result.body(), status_code=status, headers=dict(result.headers))


def _in_thread(check: Any) -> Any:
    """Run the password check (argon2, CPU-heavy) off the event loop."""

    async def run(username: str, password: str) -> Any:
        return await asyncio.to_thread(check, username, password)

    return run
