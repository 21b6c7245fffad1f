"""Swagger UI served by the demo itself: its files come from the ``swagger-ui-bundle-v2``
package, not a CDN, so ``/docs`` works on a network that reaches no CDN, and its
Content-Security-Policy names this origin and a per-request nonce instead of a CDN's path."""

from __future__ import annotations

import html
import json
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

from secmw.core.context import current_csp_nonce
from secmw.headers.csp import NONCE

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(swagger_ui_path))
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}

DOCS_CSP: dict[str, list[str]] = {
    "default-src": ["'none'"],
    "script-src": ["'self'", NONCE],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
    "frame-ancestors": ["'none'"],
}
"""The page's policy: the bundle and stylesheet from this origin, the bootstrap script by the
nonce the headers layer draws for each request, the spec and "Try it out" calls to this origin."""


def swagger_page(openapi_url: str = "/openapi.json") -> str:
    """The Swagger UI page, its bootstrap script carrying the request's CSP nonce."""
    nonce = html.escape(current_csp_nonce() or "", quote=True)
    config = json.dumps({"url": openapi_url, "dom_id": "#swagger-ui"})
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>secmw demo - Swagger UI</title>"
        f'<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css"></head>'
        '<body><div id="swagger-ui"></div>'
        f'<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>'
        f'<script nonce="{nonce}">window.ui = SwaggerUIBundle({config});</script>'
        "</body></html>"
    )


def asset(name: str) -> tuple[bytes, str] | None:
    """A Swagger UI file by name (no directories) and its media type, None when unknown."""
    suffix = Path(name).suffix
    if "/" in name or "\\" in name or suffix not in ASSET_TYPES:
        return None
    path = ASSETS_DIR / name
    if not path.is_file():
        return None
    return path.read_bytes(), ASSET_TYPES[suffix]
