"""The same decorated app on Starlette, FastAPI, FastOpenAPI (Starlette and Flask routers) and
Flask, for the route-policy tests; built fresh per test, decorators written as a user would.

Routes:
- ``GET /limited``: ``@route.limit("2/minute", key="ip")``;
- ``GET /items/{id}``: ``@route.requires("items:read")``;
- ``GET /health``: ``@route.public`` (the settings require authentication everywhere else);
- ``GET /page`` (HTML): ``@route.headers(csp=...)`` and ``@route.exempt("rate_limit")``;
- ``GET /plain``: undecorated.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastopenapi.routers import FlaskRouter, StarletteRouter
from flask import Flask
from flask import Response as FlaskResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from secmw import route

ASGI_FRAMEWORKS = ("starlette", "fastapi", "fastopenapi")
WSGI_FRAMEWORKS = ("flask", "fastopenapi-flask")
PAGE_CSP = {"default-src": ["'self'"], "img-src": ["'self'", "data:"]}
# The page is HTML: a document gets the full header set, with the route's CSP.
PAGE = "<!doctype html><title>page</title><p>page</p>"


def settings(storage: str, prefix: str) -> dict[str, Any]:
    """Sections for the stack: authentication required everywhere, a roomy default limit."""
    return {
        "jwt": {"secret": "s" * 32},
        "auth": {"required": ["/**"]},
        "rate_limit": {"storage_uri": storage, "default": "50/minute", "key_prefix": prefix},
    }


def starlette_app() -> Starlette:
    @route.limit("2/minute", key="ip")
    async def limited(request: Request) -> JSONResponse:
        return JSONResponse({"view": "limited"})

    @route.requires("items:read")
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"view": "items", "id": request.path_params["id"]})

    @route.public
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"view": "health"})

    @route.headers(csp=PAGE_CSP)
    @route.exempt("rate_limit")
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def plain(request: Request) -> JSONResponse:
        return JSONResponse({"view": "plain"})

    return Starlette(
        routes=[
            Route("/limited", limited),
            Route("/items/{id}", item),
            Route("/health", health),
            Route("/page", page),
            Route("/plain", plain),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/limited")
    @route.limit("2/minute", key="ip")
    async def limited() -> dict[str, str]:
        return {"view": "limited"}

    @app.get("/items/{id}")
    @route.requires("items:read")
    async def item(id: int) -> dict[str, Any]:
        return {"view": "items", "id": id}

    @route.public  # above the route decorator works as well
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"view": "health"}

    @app.get("/page", response_class=HTMLResponse)
    @route.headers(csp=PAGE_CSP)
    @route.exempt("rate_limit")
    async def page() -> str:
        return PAGE

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"view": "plain"}

    return app


def fastopenapi_app() -> Starlette:
    app = Starlette()
    router = StarletteRouter(app=app)

    @router.get("/limited")
    @route.limit("2/minute", key="ip")
    async def limited() -> dict[str, str]:
        return {"view": "limited"}

    @router.get("/items/{id}")
    @route.requires("items:read")
    async def item(id: int) -> dict[str, Any]:
        return {"view": "items", "id": id}

    @router.get("/health")
    @route.public
    async def health() -> dict[str, str]:
        return {"view": "health"}

    @router.get("/page")
    @route.headers(csp=PAGE_CSP)
    @route.exempt("rate_limit")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @router.get("/plain")
    async def plain() -> dict[str, str]:
        return {"view": "plain"}

    return app


def flask_app() -> Flask:
    app = Flask("routes")

    @app.get("/limited")
    @route.limit("2/minute", key="ip")
    def limited() -> dict[str, str]:
        return {"view": "limited"}

    @app.get("/items/<int:id>")
    @route.requires("items:read")
    def item(id: int) -> dict[str, Any]:
        return {"view": "items", "id": id}

    @app.get("/health")
    @route.public
    def health() -> dict[str, str]:
        return {"view": "health"}

    @app.get("/page")
    @route.headers(csp=PAGE_CSP)
    @route.exempt("rate_limit")
    def page() -> str:
        return PAGE

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {"view": "plain"}

    return app


def fastopenapi_flask_app() -> Flask:
    app = Flask("fastopenapi_routes")
    router = FlaskRouter(app=app)

    @router.get("/limited")
    @route.limit("2/minute", key="ip")
    def limited() -> dict[str, str]:
        return {"view": "limited"}

    @router.get("/items/{id}")
    @route.requires("items:read")
    def item(id: int) -> dict[str, Any]:
        return {"view": "items", "id": id}

    @router.get("/health")
    @route.public
    def health() -> dict[str, str]:
        return {"view": "health"}

    @router.get("/page")
    @route.headers(csp=PAGE_CSP)
    @route.exempt("rate_limit")
    def page() -> FlaskResponse:
        return FlaskResponse(PAGE, mimetype="text/html")

    @router.get("/plain")
    def plain() -> dict[str, str]:
        return {"view": "plain"}

    return app


BUILDERS = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "fastopenapi": fastopenapi_app,
    "flask": flask_app,
    "fastopenapi-flask": fastopenapi_flask_app,
}
