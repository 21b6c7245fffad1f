"""What the documentation pages (Swagger UI, ReDoc) need from the Content-Security-Policy."""

from __future__ import annotations

from secmw.errors import ConfigurationError
from secmw.headers.csp import csp_hash

# What FastOpenAPI 1.0 pages load (fastopenapi/core/constants.py and openapi/ui.py). The CDN
# paths are pinned to the exact files: cdn.jsdelivr.net serves every npm package, so allowing
# the host alone would allow any script anybody publishes.
SWAGGER_UI_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.20.0/"
REDOC_JS = "https://cdn.jsdelivr.net/npm/redoc@2.5.3/bundles/redoc.standalone.js"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # "API docs by Redocly" footer


def _swagger_bootstrap(openapi_url: str) -> str:
    # Byte for byte the inline script of fastopenapi.openapi.ui.render_swagger_ui.
    return (
        "\n          SwaggerUIBundle({\n"
        f"            url: '{openapi_url}',\n"
        "            dom_id: '#swagger-ui'\n"
        "          });\n        "
    )


def docs_preset(name: str, openapi_url: str = "/openapi.json") -> dict[str, list[str]]:
    """The CSP directives for FastOpenAPI's docs pages: ``"swagger-ui"`` or ``"redoc"``.

    Measured in Chromium against the pages FastOpenAPI 1.0.0rc2 serves (zero violation reports):

    - Swagger UI: its bundle and stylesheet (exact files), its inline bootstrap script by hash
      (the page has no nonce attribute), ``data:`` images (the stylesheet's icons), the spec and
      "Try it out" calls on the same origin.
    - ReDoc: its bundle (exact file); inline ``<style>`` elements, which its styled-components
      runtime injects without a nonce because the page gives it none, so ``'unsafe-inline'`` for
      style elements only (``style-src-attr 'none'``); ``data:`` images and Redocly's footer
      logo (exact URL); its search worker (a ``blob:`` URL); the spec on the same origin.

    Nothing else for either: no ``'unsafe-eval'``, no framing, no forms, no ``<base>``.
    """
    common = {
        "default-src": ["'none'"],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    if name == "swagger-ui":
        bootstrap = csp_hash(_swagger_bootstrap(openapi_url))
        return {
            **common,
            "script-src": [SWAGGER_UI_CDN + "swagger-ui-bundle.js", bootstrap],
            "style-src": [SWAGGER_UI_CDN + "swagger-ui.css"],
            "img-src": ["data:"],
        }
    if name == "redoc":
        return {
            **common,
            "script-src": [REDOC_JS],
            "style-src": ["'unsafe-inline'"],
            "style-src-attr": ["'none'"],
            "img-src": ["data:", REDOC_LOGO],
            "worker-src": ["blob:"],
        }
    raise ConfigurationError(f"unknown preset {name!r} (known: swagger-ui, redoc)")
