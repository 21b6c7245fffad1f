"""The demo apps behind ``make demo`` / ``secmw demo``: FastOpenAPI on Starlette or Flask, FastAPI,
protected by the whole secmw stack, configured from ``SECMW_*`` variables with embedded
defaults where they are unset."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from secmw.demo.common import DEMO_API_KEY, DEMO_USERS, Demo, banner, demo_settings

if TYPE_CHECKING:
    from werkzeug.serving import WSGIRequestHandler

__all__ = [
    "DEMO_API_KEY",
    "DEMO_USERS",
    "UVICORN_OPTIONS",
    "Demo",
    "build",
    "demo_settings",
    "request_handler",
    "serve",
]


def build(framework: str = "starlette", demo: Demo | None = None) -> Any:
    """The demo app for ``framework`` (an ASGI app for starlette and fastapi, a Flask app for
    flask)."""
    demo = demo or Demo.create()
    # Each app needs its framework (an optional dependency): load only the one asked for.
    name = {"flask": "flask_app", "fastapi": "fastapi_app"}.get(framework, "starlette_app")
    return import_module(f"secmw.demo.{name}").build_app(demo)


def serve(framework: str = "starlette", host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the demo in one process: uvicorn for Starlette and FastAPI, werkzeug for Flask."""
    demo = Demo.create()
    app = build(framework, demo)
    print(banner(demo, framework, host, port), flush=True)
    if framework == "flask":
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True, request_handler=request_handler())
        return
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", **UVICORN_OPTIONS)


UVICORN_OPTIONS: dict[str, Any] = {
    # secmw resolves the client address itself (SECMW_IP__TRUSTED_PROXIES): uvicorn must not.
    "proxy_headers": False,
    # uvicorn adds its own Server field beside the app's: with SECMW_HEADERS__SERVER_HEADER set
    # the answer would carry two. The headers layer sends the one configured, or none.
    "server_header": False,
}
"""The uvicorn settings the Starlette and FastAPI demos are served with."""


def request_handler() -> type[WSGIRequestHandler]:
    """The werkzeug request handler of the Flask demo: it sends no ``Server`` field of its own.

    werkzeug's handler sends ``Server: Werkzeug/<version> Python/<version>`` on every answer,
    naming the exact versions to look up vulnerabilities for, and, being outside the WSGI app,
    beside the field ``SECMW_HEADERS__SERVER_HEADER`` makes the headers layer send: two fields.
    Without it, an answer carries the configured value once, or no ``Server`` field at all.
    """
    from werkzeug.serving import WSGIRequestHandler

    class DemoRequestHandler(WSGIRequestHandler):
        def send_response(self, code: int, message: str | None = None) -> None:
            # BaseHTTPRequestHandler.send_response, less its Server field
            self.log_request(code)
            self.send_response_only(code, message)
            self.send_header("Date", self.date_time_string())

    return DemoRequestHandler
