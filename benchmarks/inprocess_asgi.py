"""In-process ASGI: ``await app(scope, receive, send)`` in a loop, no server, no sockets.

Every call gets a shallow copy of one prebuilt scope (``GET /`` with an HS256 bearer token from
127.0.0.1), so per-request caches kept in the scope (secmw's request view, Starlette's ``app``)
start empty each time, as they do behind a server. ``receive`` returns an empty body; ``send``
drops the messages. One event loop serves the whole group, so Redis connections made by the
async storages stay valid between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from benchmarks import peers
from benchmarks.common import (
    CLIENT,
    LIMIT,
    NETWORKS,
    SECRET,
    STRATEGY,
    TOKEN,
    Context,
    Runner,
    Skip,
    Variant,
)

BASELINE = "starlette"

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def http_scope(token: str | None = TOKEN, path: str = "/") -> dict[str, Any]:
    """The prebuilt ASGI scope: ``GET path`` with ``Authorization: Bearer <token>``."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"secmw-bench"),
        (b"accept", b"*/*"),
    ]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": CLIENT,
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def _receive() -> dict[str, Any]:
    return _REQUEST


async def _drop(message: MutableMapping[str, Any]) -> None:
    return None


CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")
"""The ASGI benchmark apps' answer type (Starlette's ``PlainTextResponse``, ``raw_app``)."""


async def raw_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """The floor: a bare ASGI callable answering ``ok``."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [CONTENT_TYPE, (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Response:
    """What one call answered."""

    status: int
    headers: dict[str, str]
    body: bytes


class ASGIBench:
    """Calls ASGI apps on one private event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._apps: list[Any] = []

    def call(self, app: Any, scope: dict[str, Any]) -> Response:
        """One request, recorded."""
        messages: list[MutableMapping[str, Any]] = []
        if not any(app is seen for seen in self._apps):
            self._apps.append(app)

        async def record(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        self.loop.run_until_complete(app(dict(scope), _receive, record))
        start = next(m for m in messages if m["type"] == "http.response.start")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return Response(int(start["status"]), headers, body)

    def runner(self, app: Any, scope: dict[str, Any] | None = None) -> Runner:
        """``run(n)``: n requests, elapsed seconds."""

        copy = (scope or http_scope()).copy

        async def batch(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                await app(copy(), _receive, _drop)
            return time.perf_counter() - started

        return lambda n: self.loop.run_until_complete(batch(n))

    def check(self, variant: Variant, app: Any) -> list[str]:
        """What is wrong with the variant's answers (empty when it is fit to be measured)."""
        problems = []
        ok = self.call(app, http_scope())
        if ok.status != 200 or ok.body != b"ok":
            problems.append(f"valid token answered {ok.status} {ok.body[:80]!r}")
        if variant.auth:
            missing = self.call(app, http_scope(token=None))
            if missing.status != 401:
                problems.append(f"request without a token answered {missing.status}, not 401")
        if variant.headers and "x-content-type-options" not in ok.headers:
            problems.append("no security headers in the response")
        return problems

    def close(self) -> None:
        """Close what the apps opened on this loop (Redis connections), then the loop."""
        for app in self._apps:
            for close in _async_closers(app):
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def _async_closers(app: Any) -> list[Any]:
    """``aclose`` of every middleware reachable from ``app`` (layers, limiters, throttles)."""
    found: list[Any] = []
    seen: set[int] = set()
    todo = [app]
    while todo and len(seen) < 64:  # a middleware chain: small and bounded
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        close = getattr(node, "aclose", None)
        if callable(close):
            found.append(close)
        todo += [getattr(node, name, None) for name in ("app", "_entry", "limiter", "throttle")]
    return found


# -- secmw factories --------------------------------------------------------------------------


def _jwt_section(*, cached: bool = True) -> dict[str, Any]:
    from secmw.auth.settings import JWTSettings

    section: dict[str, Any] = {"secret": SECRET}
    if not cached:
        if "cache_size" not in JWTSettings.model_fields:
            return section  # no cache in this version: every check is uncached
        section["cache_size"] = 0
    return section


def secmw_sections(*, redis_url: str | None = None, cached: bool = True) -> dict[str, Any]:
    """The settings every secmw variant shares (the issue's full-stack configuration)."""
    return {
        "jwt": _jwt_section(cached=cached),
        "auth": {"required": ["/*"]},
        "ip": {"allow": NETWORKS},
        "rate_limit": {
            "storage_uri": redis_url or "memory://",
            "default": LIMIT,
            "strategy": STRATEGY,
            # A Redis failure must show as 503 in the check, not fall back to memory unnoticed.
            "on_storage_error": "deny",
        },
    }


def _require_cache(app: Any) -> None:
    chain = app.chain
    cache = getattr(chain.authenticators[0], "cache", None)
    if cache is None or not getattr(cache, "enabled", False):
        raise Skip("no verified-token cache in secmw.auth.jwt yet")


def secmw_auth(ctx: Context) -> Any:
    from secmw.asgi import AuthenticationMiddleware

    s = secmw_sections()
    app = AuthenticationMiddleware(peers.starlette_app(), jwt=s["jwt"], auth=s["auth"])
    _require_cache(app)
    return app


def secmw_auth_uncached(ctx: Context) -> Any:
    from secmw.asgi import AuthenticationMiddleware

    s = secmw_sections(cached=False)
    return AuthenticationMiddleware(peers.starlette_app(), jwt=s["jwt"], auth=s["auth"])


def secmw_ipfilter(ctx: Context) -> Any:
    from secmw.asgi.ipfilter import IPFilterMiddleware

    return IPFilterMiddleware(peers.starlette_app(), ip=secmw_sections()["ip"])


def _ratelimit(ctx: Context, redis_url: str | None) -> Any:
    from secmw.asgi.ratelimit import RateLimitMiddleware

    section = secmw_sections(redis_url=redis_url)["rate_limit"]
    return RateLimitMiddleware(peers.starlette_app(), rate_limit=section)


def secmw_ratelimit_memory(ctx: Context) -> Any:
    return _ratelimit(ctx, None)


def secmw_ratelimit_redis(ctx: Context) -> Any:
    return _ratelimit(ctx, ctx.require_redis())


def secmw_headers(ctx: Context) -> Any:
    from secmw.asgi.headers import SecurityHeadersMiddleware

    return SecurityHeadersMiddleware(peers.starlette_app())


def _layers(ctx: Context, redis_url: str | None) -> Any:
    """The four middlewares composed by hand, in the stack's order (headers outermost)."""
    from secmw.asgi import AuthenticationMiddleware
    from secmw.asgi.headers import SecurityHeadersMiddleware
    from secmw.asgi.ipfilter import IPFilterMiddleware
    from secmw.asgi.ratelimit import RateLimitMiddleware

    s = secmw_sections(redis_url=redis_url)
    app: Any = RateLimitMiddleware(peers.starlette_app(), rate_limit=s["rate_limit"])
    app = AuthenticationMiddleware(app, jwt=s["jwt"], auth=s["auth"])
    app = IPFilterMiddleware(app, ip=s["ip"])
    return SecurityHeadersMiddleware(app)


def secmw_layers_memory(ctx: Context) -> Any:
    return _layers(ctx, None)


def secmw_layers_redis(ctx: Context) -> Any:
    return _layers(ctx, ctx.require_redis())


def _security_stack(module: str) -> Any:
    """``SecurityStack`` from ``secmw.<module>`` or its ``stack`` module; ImportError if none."""
    import importlib

    found = getattr(importlib.import_module(f"secmw.{module}"), "SecurityStack", None)
    if found is None:
        try:
            found = importlib.import_module(f"secmw.{module}.stack").SecurityStack
        except (ImportError, AttributeError):
            raise ImportError(f"secmw.{module} has no SecurityStack yet") from None
    return found


def _stack(ctx: Context, redis_url: str | None) -> Any:
    stack = _security_stack("asgi")
    return stack(peers.starlette_app(), **secmw_sections(redis_url=redis_url))


def starlette_fields(ctx: Context) -> Any:
    """Bare Starlette answering with the fields the stack adds to its response (the default
    security headers, the two rate-limit fields), appended as cheaply as an ASGI middleware can:
    no checks, nothing read from the request. What writing those fields costs the server."""
    stack = _security_stack("asgi")(raw_app, **secmw_sections())
    fields = [
        (b"ratelimit-policy", b'"default";q=1000000;w=60'),
        (b"ratelimit", b'"default";r=999999;t=60'),
        # What the benchmark's plain-text answer gets on plain http, authenticated.
        *stack.layers["headers"]
        .policy.plain_policy_for("/")
        .apply_bytes([CONTENT_TYPE], False, True)[1:],
    ]
    app = peers.starlette_app()

    async def appending(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        async def send_with_fields(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *fields]}
            await send(message)

        await app(scope, receive, send_with_fields)

    return appending


def secmw_stack_memory(ctx: Context) -> Any:
    return _stack(ctx, None)


def secmw_stack_redis(ctx: Context) -> Any:
    return _stack(ctx, ctx.require_redis())


VARIANTS: list[Variant] = [
    Variant("raw", "raw ASGI app (floor)", "floor", lambda ctx: raw_app),
    Variant(BASELINE, "bare Starlette", "baseline", lambda ctx: peers.starlette_app(), http=True),
    Variant(
        "starlette_fields",
        "bare Starlette + the stack's response fields, static (no checks)",
        "floor",
        starlette_fields,
        headers=True,
        http=True,
    ),
    Variant(
        "starlette_auth",
        "Starlette AuthenticationMiddleware + PyJWT",
        "peer",
        peers.starlette_auth,
        auth=True,
    ),
    Variant("slowapi_asgi", "slowapi SlowAPIASGIMiddleware (memory)", "peer", peers.slowapi_asgi),
    Variant(
        "slowapi_base",
        "slowapi SlowAPIMiddleware, BaseHTTPMiddleware (memory)",
        "peer",
        peers.slowapi_base,
    ),
    Variant("secweb", "Secweb headers", "peer", peers.secweb, headers=True),
    Variant(
        "secure",
        "secure headers (SecureASGIMiddleware)",
        "peer",
        peers.secure_headers,
        headers=True,
    ),
    Variant(
        "trio_memory",
        "peer trio: auth + slowapi ASGI + Secweb (memory)",
        "peer",
        peers.trio_memory,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant(
        "trio_base_memory",
        "peer trio with slowapi BaseHTTPMiddleware (memory)",
        "peer",
        peers.trio_base_memory,
        auth=True,
        headers=True,
    ),
    Variant(
        "trio_redis",
        "peer trio: auth + slowapi ASGI + Secweb (Redis)",
        "peer",
        peers.trio_redis,
        redis=True,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant("secmw_auth", "secmw authentication (token cache)", "secmw", secmw_auth, auth=True),
    Variant(
        "secmw_auth_uncached",
        "secmw authentication (no token cache)",
        "secmw",
        secmw_auth_uncached,
        auth=True,
    ),
    Variant("secmw_ipfilter", "secmw IP filter", "secmw", secmw_ipfilter),
    Variant("secmw_ratelimit_memory", "secmw rate limit (memory)", "secmw", secmw_ratelimit_memory),
    Variant(
        "secmw_ratelimit_redis",
        "secmw rate limit (Redis)",
        "secmw",
        secmw_ratelimit_redis,
        redis=True,
    ),
    Variant("secmw_headers", "secmw security headers", "secmw", secmw_headers, headers=True),
    Variant(
        "secmw_layers_memory",
        "secmw four middlewares composed (memory)",
        "secmw",
        secmw_layers_memory,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant(
        "secmw_layers_redis",
        "secmw four middlewares composed (Redis)",
        "secmw",
        secmw_layers_redis,
        redis=True,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant(
        "secmw_stack_memory",
        "secmw SecurityStack (memory)",
        "secmw",
        secmw_stack_memory,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant(
        "secmw_stack_redis",
        "secmw SecurityStack (Redis)",
        "secmw",
        secmw_stack_redis,
        redis=True,
        auth=True,
        headers=True,
        http=True,
    ),
]
