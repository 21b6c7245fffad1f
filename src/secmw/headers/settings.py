"""The headers section of the settings: the strict API policy by default, per-path overrides."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from secmw.core.section import Section
from secmw.headers.build import build_path_policies, build_policy


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith(("{", "[")):
        return json.loads(value)
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


CSPDirectives = dict[str, list[str] | str | bool]
JSONOrText = Annotated[dict[str, list[str]] | str | None, NoDecode, BeforeValidator(_json_or_text)]
FrameOptions = Annotated[Literal["DENY", "SAMEORIGIN", ""], BeforeValidator(_upper)]
COOP = Literal[
    "same-origin", "same-origin-allow-popups", "noopener-allow-popups", "unsafe-none", ""
]
CORP = Literal["same-origin", "same-site", "cross-origin", ""]
COEP = Literal["require-corp", "credentialless", "unsafe-none", ""]
PRESETS = ("api", "swagger-ui", "redoc")


class PathPolicy(Section):
    """Overrides for one path pattern (``headers.paths``); unset fields inherit."""

    preset: Literal["api", "swagger-ui", "redoc"] | None = Field(
        None, description="Start from a shipped policy: `api`, `swagger-ui` or `redoc`."
    )
    csp: CSPDirectives | None = None
    csp_report_only: bool | None = None
    frame_options: FrameOptions | None = None
    referrer_policy: str | None = None
    permissions_policy: JSONOrText = None
    coop: COOP | None = None
    corp: CORP | None = None
    coep: COEP | None = None


class HeadersSettings(Section):
    """Security headers (``headers.*``); the defaults are the strict API policy."""

    enabled: bool = Field(True, description="Run the security headers layer.")
    api_set: bool = Field(
        True,
        description="Responses that are no document (JSON, problem+json, text...) get the API "
        "set; false: the full document set on every response.",
    )
    api_cache_control: str = Field(
        "no-store",
        description="Cache-Control on every API-set response that set none; empty: only "
        "`AUTHENTICATED_CACHE_CONTROL`, on responses to authenticated requests.",
    )
    hsts: bool = Field(True, description="Send Strict-Transport-Security.")
    hsts_max_age: int = Field(31_536_000, ge=0, description="HSTS max-age in seconds (one year).")
    hsts_include_subdomains: bool = Field(True, description="HSTS includeSubDomains.")
    hsts_preload: bool = Field(False, description="HSTS preload (opt-in: hard to undo).")
    hsts_on_http: bool = Field(
        False, description="Also send HSTS on plain-http requests (TLS ends at a proxy)."
    )
    csp: CSPDirectives | None = Field(
        None,
        description="CSP directives as a JSON object; default `default-src 'none'; "
        "frame-ancestors 'none'`; `{}` sends no CSP.",
    )
    csp_report_only: bool = Field(False, description="Send CSP as report-only.")
    report_uri: str | None = Field(None, description="CSP `report-uri` endpoint.")
    report_to: str | None = Field(None, description="Reporting API endpoint URL for CSP reports.")
    frame_options: FrameOptions = Field("DENY", description="X-Frame-Options; empty for none.")
    referrer_policy: str = Field("no-referrer", description="Referrer-Policy; empty for none.")
    permissions_policy: JSONOrText = Field(
        None,
        description="JSON object of feature to allowlist, merged over the deny-all default; "
        "a string replaces the header; empty for none.",
    )
    coop: COOP = Field("same-origin", description="Cross-Origin-Opener-Policy; empty for none.")
    corp: CORP = Field("same-origin", description="Cross-Origin-Resource-Policy; empty for none.")
    coep: COEP = Field("", description="Cross-Origin-Embedder-Policy; off by default.")
    xss_protection: bool = Field(True, description="Send `X-XSS-Protection: 0`.")
    cross_domain_policies: Literal["none", "master-only", "by-content-type", "all", ""] = Field(
        "none", description="X-Permitted-Cross-Domain-Policies (Flash/PDF); empty for none."
    )
    authenticated_cache_control: str = Field(
        "no-store", description="Cache-Control on responses to authenticated requests."
    )
    server_header: str | None = Field(
        None, description="Replace the app's Server header; empty strips it; unset keeps it."
    )
    override: bool = Field(False, description="Replace security headers the app set itself.")
    paths: dict[str, PathPolicy | Literal["api", "swagger-ui", "redoc"]] = Field(
        default_factory=dict,
        description="JSON object: path pattern to overrides or a preset name; first match wins.",
    )
    docs_presets: bool = Field(
        True, description="Give /docs the swagger-ui and /redoc the redoc preset."
    )
    openapi_url: str = Field("/openapi.json", description="Spec URL the docs pages load.")

    @model_validator(mode="after")
    def _builds(self) -> HeadersSettings:
        # Every header value and path policy is checked at load time, not at the first request.
        build_policy(self)
        build_path_policies(self)
        return self
