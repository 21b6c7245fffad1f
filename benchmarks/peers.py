"""The stacks secmw is measured against, built the way their documentation shows.

ASGI: bare Starlette; Starlette's ``AuthenticationMiddleware`` with a PyJWT backend; slowapi with
its pure-ASGI ``SlowAPIASGIMiddleware`` and with its ``BaseHTTPMiddleware`` one; Secweb and secure
for headers; and "the usual trio" (auth + pure-ASGI slowapi + Secweb) on memory and on Redis.
WSGI: bare Flask and Flask with a PyJWT ``before_request``, Flask-Limiter and flask-talisman.

Every stack answers ``GET /`` with ``200 ok`` for the benchmark token; the stacks with
authentication answer 401 without it, so the harness can check it never measures a refusal.
Imports are inside the factories: a peer that is not installed only makes its variants "n/a".
"""

from __future__ import annotations

from typing import Any

import jwt

from benchmarks.common import LIMIT, SECRET, STRATEGY, Context

# -- ASGI -------------------------------------------------------------------------------------


def starlette_app() -> Any:
    """Bare Starlette: one async route answering ``ok``."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request: Any) -> Any:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", index)])


def _jwt_backend() -> Any:
    """A Starlette ``AuthenticationBackend`` that requires a valid HS256 bearer token."""
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        AuthenticationError,
        SimpleUser,
    )

    class JWTBackend(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> Any:
            authorization = conn.headers.get("authorization", "")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationError("missing bearer token")
            try:
                claims = jwt.decode(token, SECRET, algorithms=["HS256"])
            except jwt.PyJWTError as exc:
                raise AuthenticationError("invalid token") from exc
            scopes = str(claims.get("scope", "")).split()
            return AuthCredentials(["authenticated", *scopes]), SimpleUser(claims["sub"])

    return JWTBackend()


def _on_auth_error(conn: Any, exc: Exception) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def add_starlette_auth(app: Any) -> None:
    """Starlette's ``AuthenticationMiddleware`` with the PyJWT backend."""
    from starlette.middleware.authentication import AuthenticationMiddleware

    app.add_middleware(AuthenticationMiddleware, backend=_jwt_backend(), on_error=_on_auth_error)


def _slowapi_limiter(ctx: Context, storage_uri: str) -> Any:
    from slowapi import Limiter
    from slowapi.util import get_remote_address

    limiter = Limiter(
        key_func=get_remote_address,
        default_limits=[LIMIT],
        strategy=STRATEGY,
        storage_uri=storage_uri,
    )
    ctx.cleanups.append(lambda: _close_limits_storage(limiter._storage))
    return limiter


def add_slowapi(app: Any, ctx: Context, *, asgi: bool = True, redis: bool = False) -> None:
    """slowapi with one default limit, via its pure-ASGI or its BaseHTTPMiddleware middleware."""
    from slowapi import _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware

    uri = ctx.require_redis() if redis else "memory://"
    app.state.limiter = _slowapi_limiter(ctx, uri)
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIASGIMiddleware if asgi else SlowAPIMiddleware)


def add_secweb(app: Any) -> None:
    """Secweb with its default headers (it installs itself as a middleware)."""
    from Secweb import SecWeb

    SecWeb(app)


def add_secure(app: Any) -> None:
    """secure's ASGI middleware with its default headers."""
    from secure.middleware.asgi import SecureASGIMiddleware

    app.add_middleware(SecureASGIMiddleware)


def starlette_auth(ctx: Context) -> Any:
    app = starlette_app()
    add_starlette_auth(app)
    return app


def slowapi_asgi(ctx: Context) -> Any:
    app = starlette_app()
    add_slowapi(app, ctx, asgi=True)
    return app


def slowapi_base(ctx: Context) -> Any:
    app = starlette_app()
    add_slowapi(app, ctx, asgi=False)
    return app


def secweb(ctx: Context) -> Any:
    app = starlette_app()
    add_secweb(app)
    return app


def secure_headers(ctx: Context) -> Any:
    app = starlette_app()
    add_secure(app)
    return app


def _trio(ctx: Context, *, asgi: bool, redis: bool) -> Any:
    # add_middleware prepends: the last added runs first. Request order: headers, auth, limit
    # (auth before the limiter, as in secmw's stack, so a refused token costs no storage hit).
    app = starlette_app()
    add_slowapi(app, ctx, asgi=asgi, redis=redis)
    add_starlette_auth(app)
    add_secweb(app)
    return app


def trio_memory(ctx: Context) -> Any:
    return _trio(ctx, asgi=True, redis=False)


def trio_redis(ctx: Context) -> Any:
    return _trio(ctx, asgi=True, redis=True)


def trio_base_memory(ctx: Context) -> Any:
    return _trio(ctx, asgi=False, redis=False)


# -- WSGI -------------------------------------------------------------------------------------


def flask_app() -> Any:
    """Bare Flask: one route answering ``ok``."""
    from flask import Flask

    app = Flask("bench")

    @app.get("/")
    def index() -> str:
        return "ok"

    return app


def add_flask_jwt(app: Any) -> None:
    """A PyJWT ``before_request`` that refuses requests without a valid HS256 bearer token."""
    from flask import abort, g, request

    @app.before_request
    def authenticate() -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            abort(401)
        try:
            g.claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        except jwt.PyJWTError:
            abort(401)


def add_flask_limiter(app: Any, ctx: Context, *, redis: bool = False) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=[LIMIT],
        strategy=STRATEGY,
        storage_uri=ctx.require_redis() if redis else "memory://",
    )
    ctx.cleanups.append(lambda: _close_limits_storage(limiter.storage))


def add_talisman(app: Any) -> None:
    """flask-talisman's defaults, less the HTTPS redirect (the benchmark speaks plain HTTP)."""
    from flask_talisman import Talisman

    Talisman(app, force_https=False)


def flask_peer(ctx: Context, *, redis: bool = False) -> Any:
    """Flask with a PyJWT ``before_request``, Flask-Limiter and flask-talisman."""
    app = flask_app()
    add_flask_jwt(app)
    add_flask_limiter(app, ctx, redis=redis)
    add_talisman(app)
    return app


def flask_peer_memory(ctx: Context) -> Any:
    return flask_peer(ctx)


def flask_peer_redis(ctx: Context) -> Any:
    return flask_peer(ctx, redis=True)


def _close_limits_storage(storage: Any) -> None:
    """Disconnect a ``limits`` Redis storage's pool (memory storages have none)."""
    client = getattr(storage, "storage", None)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
