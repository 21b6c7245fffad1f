"""The demo on FastOpenAPI's Flask router, behind ``secmw.wsgi.SecurityStack``.

No ``from __future__ import annotations`` here: FastOpenAPI reads parameter annotations at run
time (``SecurityScopes``, ``Form``).
"""

from typing import Annotated, Any

from fastopenapi import Form, Header, Security
from fastopenapi.routers import FlaskRouter
from flask import Flask, Response
from pydantic import BaseModel

from secmw.core.context import current_request
from secmw.core.principal import Principal
from secmw.demo.common import TOKEN_RESPONSES, Demo, token_form
from secmw.demo.docs_ui import ASSETS_URL, DOCS_URL, asset, swagger_page
from secmw.fastopenapi import SecurityBridge, install, token_response
from secmw.wsgi import SecurityStack


class NewItem(BaseModel):
    name: str


def build_app(demo: Demo) -> Flask:
    """The demo Flask app: routes on a FastOpenAPI router, ``wsgi_app`` wrapped in the stack."""
    security = SecurityBridge(settings=demo.settings)
    app = Flask("secmw-demo")
    router = FlaskRouter(app=app, title="secmw demo", version="1", docs_url=None)
    install(router, demo.settings)
    app.add_url_rule(DOCS_URL, "docs", _docs)
    app.add_url_rule(ASSETS_URL + "/<name>", "docs_asset", _docs_asset)
    Reader = Annotated[Principal, Security(security.principal, scopes=["items:read"])]
    Writer = Annotated[Principal, Security(security.principal, scopes=["items:write"])]
    Admin = Annotated[Principal, Security(security.principal, scopes=["admin:read"])]
    Anyone = Annotated[Principal, Security(security.principal)]
    BearerHeader = Annotated[str, Header(alias="Authorization")]
    stack = SecurityStack(app.wsgi_app, settings=demo.settings, revocation=demo.revocation)

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/token", responses=TOKEN_RESPONSES)
    def token(
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
        return token_response(
            demo.issuer.exchange(form, demo.authenticate, throttle=stack.throttle)
        )

    @router.post("/logout")
    def logout(user: Anyone, authorization: BearerHeader = "") -> Any:
        scheme, _, token = authorization.partition(" ")
        revoked = scheme.lower() == "bearer" and demo.issuer.revoke(token.strip())
        return {"revoked": bool(revoked)}

    @router.get("/me")
    def me(user: Anyone) -> dict[str, Any]:
        return {"id": user.id, "scheme": user.scheme, "scopes": sorted(user.scopes)}

    @router.get("/items")
    def list_items(user: Reader) -> dict[str, Any]:
        return {"items": list(demo.items)}

    @router.post("/items", status_code=201)
    def create_item(body: NewItem, user: Writer) -> dict[str, Any]:
        return demo.add_item(body.name, user.id)

    @router.get("/admin/stats")
    def admin_stats(user: Admin) -> dict[str, Any]:
        return {"items": len(demo.items), "for": user.id}

    @router.get("/internal/status")
    def internal_status() -> dict[str, Any]:
        return {"status": "ok", "client": current_request().client}

    app.wsgi_app = stack  # type: ignore[method-assign]
    return app


def _docs() -> Response:
    return Response(swagger_page(), mimetype="text/html")


def _docs_asset(name: str) -> Response:
    found = asset(name)
    if found is None:
        return Response(status=404)
    return Response(found[0], mimetype=found[1])
