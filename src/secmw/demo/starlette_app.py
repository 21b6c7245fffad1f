"""The demo on FastOpenAPI's Starlette router, behind ``secmw.asgi.SecurityStack``.

No ``from __future__ import annotations`` here: FastOpenAPI reads parameter annotations at run
time (``SecurityScopes``, ``Form``).
"""

import asyncio
from typing import Annotated, Any

from fastopenapi import Form, Header, Security
from fastopenapi.routers import StarletteRouter
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from secmw.asgi import SecurityStack
from secmw.asgi._util import ASGIApp
from secmw.core.context import current_request
from secmw.core.principal import Principal
from secmw.demo.common import TOKEN_RESPONSES, Demo, token_form
from secmw.demo.docs_ui import ASSETS_URL, DOCS_URL, asset, swagger_page
from secmw.fastopenapi import SecurityBridge, install, token_response


class NewItem(BaseModel):
    name: str


def build_app(demo: Demo) -> ASGIApp:
    """The demo ASGI app: routes on a FastOpenAPI router, wrapped in the whole stack."""
    security = SecurityBridge(settings=demo.settings)
    stack: dict[str, SecurityStack] = {}
    app = Starlette()  # the stack closes its Redis connections when the lifespan shuts down
    router = StarletteRouter(app=app, title="secmw demo", version="1", docs_url=None)
    install(router, demo.settings)
    app.router.routes += [Route(DOCS_URL, _docs), Route(ASSETS_URL + "/{name}", _docs_asset)]
    Reader = Annotated[Principal, Security(security.principal, scopes=["items:read"])]
    Writer = Annotated[Principal, Security(security.principal, scopes=["items:write"])]
    Admin = Annotated[Principal, Security(security.principal, scopes=["admin:read"])]
    Anyone = Annotated[Principal, Security(security.principal)]
    BearerHeader = Annotated[str, Header(alias="Authorization")]

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/token", responses=TOKEN_RESPONSES)
    async def token(
        grant_type: Annotated[str, Form()] = "",
        username: Annotated[str | None, Form()] = None,
        password: Annotated[str | None, Form()] = None,
        scope: Annotated[str | None, Form()] = None,
        refresh_token: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
    ) -> Any:
        form = token_form(
            grant_type, username, password, scope, refresh_token, client_id, client_secret
        )
        result = await demo.issuer.aexchange(
            form, _in_thread(demo.authenticate), throttle=stack["app"].throttle
        )
        return token_response(result)

    @router.post("/logout")
    async def logout(user: Anyone, authorization: BearerHeader = "") -> Any:
        scheme, _, token = authorization.partition(" ")
        revoked = scheme.lower() == "bearer" and await demo.issuer.arevoke(token.strip())
        return {"revoked": bool(revoked)}

    @router.get("/me")
    async def me(user: Anyone) -> dict[str, Any]:
        return {"id": user.id, "scheme": user.scheme, "scopes": sorted(user.scopes)}

    @router.get("/items")
    async def list_items(user: Reader) -> dict[str, Any]:
        return {"items": list(demo.items)}

    @router.post("/items", status_code=201)
    async def create_item(body: NewItem, user: Writer) -> dict[str, Any]:
        return demo.add_item(body.name, user.id)

    @router.get("/admin/stats")
    async def admin_stats(user: Admin) -> dict[str, Any]:
        return {"items": len(demo.items), "for": user.id}

    @router.get("/internal/status")
    async def internal_status() -> dict[str, Any]:
        return {"status": "ok", "client": current_request().client}

    stack["app"] = SecurityStack(app, settings=demo.settings, revocation=demo.revocation)
    return stack["app"]


async def _docs(request: Request) -> Response:
    return HTMLResponse(swagger_page())


async def _docs_asset(request: Request) -> Response:
    found = asset(request.path_params["name"])
    if found is None:
        return Response(status_code=404)
    return Response(found[0], media_type=found[1])


def _in_thread(check: Any) -> Any:
    """Run the password check (argon2, CPU-heavy) off the event loop."""

    async def run(username: str, password: str) -> Any:
        return await asyncio.to_thread(check, username, password)

    return run
