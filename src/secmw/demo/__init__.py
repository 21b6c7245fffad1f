"""The demo apps behind ``make demo`` / ``secmw demo``: FastOpenAPI on Starlette or Flask,
protected by the whole secmw stack, configured from ``SECMW_*`` variables with embedded
defaults where they are unset."""

from __future__ import annotations

from typing import Any

from secmw.demo.common import DEMO_API_KEY, DEMO_USERS, Demo, banner, demo_settings

__all__ = ["DEMO_API_KEY", "DEMO_USERS", "Demo", "build", "demo_settings", "serve"]


def build(framework: str = "starlette", demo: Demo | None = None) -> Any:
    """The demo app for ``framework`` (an ASGI app for starlette, a Flask app for flask)."""
    demo = demo or Demo.create()
    if framework == "flask":
        from secmw.demo.flask_app import build_app as build_flask

        return build_flask(demo)
    from secmw.demo.starlette_app import build_app as build_starlette

    return build_starlette(demo)


def serve(framework: str = "starlette", host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the demo in one process: uvicorn for Starlette, werkzeug for Flask."""
    demo = Demo.create()
    app = build(framework, demo)
    print(banner(demo, framework, host, port), flush=True)
    if framework == "flask":
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True)
        return
    import uvicorn

    # secmw resolves the client address itself (SECMW_IP__TRUSTED_PROXIES): uvicorn must not.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level="info")
