"""In-process WSGI: call the app with a prebuilt environ and consume the body, no server.

Every call gets a shallow copy of one prebuilt environ (``GET /`` with an HS256 bearer token
from 127.0.0.1); the body iterable is consumed and closed as a server would (PEP 3333).
secmw's WSGI middlewares wrap ``app.wsgi_app`` as their documentation shows, and the benchmark
calls the Flask app itself, so Flask's own ``__call__`` is in every figure.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks import peers
from benchmarks.common import CLIENT, TOKEN, Context, Runner, Skip, Variant
from benchmarks.inprocess_asgi import secmw_sections

BASELINE = "flask"


def environ(token: str | None = TOKEN, path: str = "/") -> dict[str, Any]:
    """The prebuilt WSGI environ: ``GET path`` with ``Authorization: Bearer <token>``."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": CLIENT[0],
        "REMOTE_PORT": str(CLIENT[1]),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "secmw-bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if token is not None:
        env["HTTP_AUTHORIZATION"] = "Bearer " + token
    return env


def _write(data: bytes) -> None:
    return None


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return _write


@dataclass
class Response:
    """What one call answered."""

    status: int
    headers: dict[str, str]
    body: bytes


class WSGIBench:
    """Calls WSGI apps in this thread."""

    def call(self, app: Any, env: dict[str, Any]) -> Response:
        """One request, recorded."""
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started.append((status, headers))
            return _write

        result = app(dict(env), start_response)
        try:
            body = b"".join(result)
        finally:
            _close(result)
        status, headers = started[-1]
        return Response(int(status.split()[0]), {k.lower(): v for k, v in headers}, body)

    def runner(self, app: Any, env: dict[str, Any] | None = None) -> Runner:
        """``run(n)``: n requests, elapsed seconds."""
        copy = (env or environ()).copy

        def batch(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                result = app(copy(), _start_response)
                for _chunk in result:
                    pass
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return time.perf_counter() - started

        return batch

    def check(self, variant: Variant, app: Any) -> list[str]:
        """What is wrong with the variant's answers (empty when it is fit to be measured)."""
        problems = []
        ok = self.call(app, environ())
        if ok.status != 200 or ok.body != b"ok":
            problems.append(f"valid token answered {ok.status} {ok.body[:80]!r}")
        if variant.auth:
            missing = self.call(app, environ(token=None))
            if missing.status != 401:
                problems.append(f"request without a token answered {missing.status}, not 401")
        if variant.headers and "x-content-type-options" not in ok.headers:
            problems.append("no security headers in the response")
        return problems

    def close(self) -> None:
        return None


def _close(result: Iterable[bytes]) -> None:
    close: Callable[[], object] | None = getattr(result, "close", None)
    if close is not None:
        close()


# -- secmw factories --------------------------------------------------------------------------


def _wrap(wrap: Callable[[Any], Any]) -> Any:
    """A bare Flask app whose ``wsgi_app`` is wrapped, as ``app.wsgi_app = Mw(app.wsgi_app)``."""
    app = peers.flask_app()
    app.wsgi_app = wrap(app.wsgi_app)
    return app


def secmw_auth(ctx: Context) -> Any:
    from secmw.wsgi import AuthenticationMiddleware

    s = secmw_sections()
    app = _wrap(lambda inner: AuthenticationMiddleware(inner, jwt=s["jwt"], auth=s["auth"]))
    cache = getattr(app.wsgi_app.chain.authenticators[0], "cache", None)
    if cache is None or not getattr(cache, "enabled", False):
        raise Skip("no verified-token cache in secmw.auth.jwt yet")
    return app


def secmw_auth_uncached(ctx: Context) -> Any:
    from secmw.wsgi import AuthenticationMiddleware

    s = secmw_sections(cached=False)
    return _wrap(lambda inner: AuthenticationMiddleware(inner, jwt=s["jwt"], auth=s["auth"]))


def secmw_ipfilter(ctx: Context) -> Any:
    from secmw.wsgi.ipfilter import IPFilterMiddleware

    return _wrap(lambda inner: IPFilterMiddleware(inner, ip=secmw_sections()["ip"]))


def _ratelimit(redis_url: str | None) -> Any:
    from secmw.wsgi.ratelimit import RateLimitMiddleware

    section = secmw_sections(redis_url=redis_url)["rate_limit"]
    return _wrap(lambda inner: RateLimitMiddleware(inner, rate_limit=section))


def secmw_ratelimit_memory(ctx: Context) -> Any:
    return _ratelimit(None)


def secmw_ratelimit_redis(ctx: Context) -> Any:
    return _ratelimit(ctx.require_redis())


def secmw_headers(ctx: Context) -> Any:
    from secmw.wsgi.headers import SecurityHeadersMiddleware

    return _wrap(SecurityHeadersMiddleware)


def _layers(redis_url: str | None) -> Any:
    from secmw.wsgi import AuthenticationMiddleware
    from secmw.wsgi.headers import SecurityHeadersMiddleware
    from secmw.wsgi.ipfilter import IPFilterMiddleware
    from secmw.wsgi.ratelimit import RateLimitMiddleware

    s = secmw_sections(redis_url=redis_url)

    def wrap(inner: Any) -> Any:
        inner = RateLimitMiddleware(inner, rate_limit=s["rate_limit"])
        inner = AuthenticationMiddleware(inner, jwt=s["jwt"], auth=s["auth"])
        inner = IPFilterMiddleware(inner, ip=s["ip"])
        return SecurityHeadersMiddleware(inner)

    return _wrap(wrap)


def secmw_layers_memory(ctx: Context) -> Any:
    return _layers(None)


def secmw_layers_redis(ctx: Context) -> Any:
    return _layers(ctx.require_redis())


def _stack(redis_url: str | None) -> Any:
    from benchmarks.inprocess_asgi import _security_stack

    stack = _security_stack("wsgi")
    sections = secmw_sections(redis_url=redis_url)
    return _wrap(lambda inner: stack(inner, **sections))


def secmw_stack_memory(ctx: Context) -> Any:
    return _stack(None)


def secmw_stack_redis(ctx: Context) -> Any:
    return _stack(ctx.require_redis())


VARIANTS: list[Variant] = [
    Variant(BASELINE, "bare Flask", "baseline", lambda ctx: peers.flask_app(), http=True),
    Variant(
        "flask_peer_memory",
        "Flask + PyJWT before_request + Flask-Limiter + flask-talisman (memory)",
        "peer",
        peers.flask_peer_memory,
        auth=True,
        headers=True,
        http=True,
    ),
    Variant(
        "flask_peer_redis",
        "Flask + PyJWT before_request + Flask-Limiter + flask-talisman (Redis)",
        "peer",
        peers.flask_peer_redis,
        redis=True,
        auth=True,
        headers=True,
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
    ),
]
