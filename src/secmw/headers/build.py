"""From the headers section to header policies: every value checked when the settings load."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from secmw.core.paths import PathTable
from secmw.errors import ConfigurationError
from secmw.headers.csp import ContentSecurityPolicy, SourceList, check_url, check_value
from secmw.headers.policy import HeaderPolicy
from secmw.headers.presets import docs_preset

if TYPE_CHECKING:
    from secmw.headers.settings import HeadersSettings, PathPolicy

# Powerful features an API page never needs, all denied (W3C Permissions Policy; the list is the
# OWASP Secure Headers Project's, less features Chromium does not recognise: it logs an error on
# every page for each, "web-share" included, which Chromium on Linux does not know).
# fmt: off
DEFAULT_PERMISSIONS = (
    "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media", "fullscreen",
    "geolocation", "gyroscope", "hid", "idle-detection", "magnetometer", "microphone", "midi",
    "payment", "picture-in-picture", "publickey-credentials-get", "screen-wake-lock", "serial",
    "sync-xhr", "usb", "xr-spatial-tracking",
)
# fmt: on

# fmt: off
REFERRER_POLICIES = frozenset((
    "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
    "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url",
))
# fmt: on


def _permissions_policy(value: dict[str, list[str]] | str | None, setting: str) -> str:
    if isinstance(value, str):
        return check_value(value, setting)
    features: dict[str, list[str]] = {name: [] for name in DEFAULT_PERMISSIONS}
    features.update(value or {})
    items = []
    for feature, allow in features.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", feature):
            raise ConfigurationError(f"{setting}: {feature!r} is not a feature name")
        if allow == ["*"]:
            items.append(f"{feature}=*")
            continue
        members = []
        for origin in allow:
            if origin in ("self", "src"):
                members.append(origin)
            elif re.fullmatch(r"https?://[A-Za-z0-9.:\[\]*-]+", origin):
                members.append(f'"{origin}"')  # RFC 8941 sf-string
            else:
                raise ConfigurationError(f"{setting}: {feature}: {origin!r} is not an origin")
        items.append(f"{feature}=({' '.join(members)})")
    return ", ".join(items)


def build_policy(settings: HeadersSettings, setting: str = "headers") -> HeaderPolicy:
    """A :class:`HeaderPolicy` from settings, its API set attached unless ``api_set`` is off;
    errors name ``<setting>__<FIELD>``.

    Raises:
        ConfigurationError: a value with a control character, an unknown CSP directive or
            referrer policy, HSTS preload without the max-age and includeSubDomains it needs.
    """
    s = settings
    hsts = _hsts(s, setting)
    check_url(s.report_uri, f"{setting}.report_uri")
    check_url(s.report_to, f"{setting}.report_to")
    server = s.server_header
    check_value(server or "", f"{setting}.server_header")
    cache = s.authenticated_cache_control
    check_value(cache, f"{setting}.authenticated_cache_control")
    check_value(s.api_cache_control, f"{setting}.api_cache_control")
    # The fields both sets send: what the OWASP REST Security Cheat Sheet asks of every API
    # response, with Referrer-Policy and CORP.
    core: list[tuple[str, str]] = [("X-Content-Type-Options", "nosniff")]
    if s.frame_options:
        core.append(("X-Frame-Options", s.frame_options))
    if s.referrer_policy:
        tokens = {token.strip() for token in s.referrer_policy.split(",")}
        if not tokens <= REFERRER_POLICIES:
            raise ConfigurationError(f"{setting}.referrer_policy: unknown referrer policy")
        core.append(("Referrer-Policy", s.referrer_policy))
    directives: Mapping[str, SourceList] = {"default-src": ["'none'"]} if s.csp is None else s.csp
    if directives and "frame-ancestors" not in directives and s.frame_options:
        # Keep CSP and X-Frame-Options saying the same thing (CSP3 supersedes XFO).
        ancestors = "'none'" if s.frame_options == "DENY" else "'self'"
        directives = {**directives, "frame-ancestors": [ancestors]}
    api = None
    if s.api_set:
        # A response that is no document loads nothing and runs nothing: the API CSP is
        # default-src 'none' with the document policy's framing rule, whatever else that allows.
        framing = {k: v for k, v in directives.items() if k == "frame-ancestors"}
        api_csp = {"default-src": ["'none'"], **framing} if directives else {}
        api_cache = s.api_cache_control or cache
        corp: list[tuple[str, str]] = [("Cross-Origin-Resource-Policy", s.corp)] if s.corp else []
        api = HeaderPolicy(
            core + corp,
            hsts=hsts,
            hsts_on_http=s.hsts_on_http,
            csp=_csp(api_csp, s, setting),
            cache_control=api_cache or None,
            cache_always=bool(s.api_cache_control),
            server=server,
            override=s.override,
        )
    return HeaderPolicy(
        core + _document_fields(s, setting),
        hsts=hsts,
        hsts_on_http=s.hsts_on_http,
        csp=_csp(directives, s, setting),
        cache_control=cache or None,
        server=server,
        override=s.override,
        api=api,
    )


def _hsts(s: HeadersSettings, setting: str) -> str | None:
    if not s.hsts:
        return None
    if s.hsts_preload and (s.hsts_max_age < 31_536_000 or not s.hsts_include_subdomains):
        # hstspreload.org refuses entries with less; a preload that cannot land misleads.
        raise ConfigurationError(
            f"{setting}.hsts_preload: needs HSTS_MAX_AGE >= 31536000 and HSTS_INCLUDE_SUBDOMAINS"
        )
    hsts = f"max-age={s.hsts_max_age}"
    hsts += "; includeSubDomains" if s.hsts_include_subdomains else ""
    return hsts + ("; preload" if s.hsts_preload else "")


def _csp(
    directives: Mapping[str, SourceList], s: HeadersSettings, setting: str
) -> ContentSecurityPolicy | None:
    if not directives:
        return None
    return ContentSecurityPolicy(
        directives,
        report_only=s.csp_report_only,
        report_uri=s.report_uri,
        report_to=s.report_to,
        setting=f"{setting}.csp",
    )


def _document_fields(s: HeadersSettings, setting: str) -> list[tuple[str, str]]:
    """The fields only a document (or a worker's script) gets, after the core ones."""
    fixed = []
    permissions = _permissions_policy(s.permissions_policy, f"{setting}.permissions_policy")
    if permissions:
        fixed.append(("Permissions-Policy", permissions))
    for name, value in (
        ("Cross-Origin-Opener-Policy", s.coop),
        ("Cross-Origin-Resource-Policy", s.corp),
        ("Cross-Origin-Embedder-Policy", s.coep),
    ):
        if value:
            fixed.append((name, value))
    if s.cross_domain_policies:
        fixed.append(("X-Permitted-Cross-Domain-Policies", s.cross_domain_policies))
    if s.xss_protection:
        # "0" turns off the legacy XSS auditor, whose "1; mode=block" opened leaks (OWASP).
        fixed.append(("X-XSS-Protection", "0"))
    return fixed


def build_path_policies(settings: HeadersSettings) -> PathTable[HeaderPolicy]:
    """The per-path policies of ``headers.paths`` (and of the docs presets), each checked."""
    entries: dict[str, PathPolicy | str] = dict(settings.paths)
    if settings.docs_presets:
        entries.setdefault("/docs", "swagger-ui")
        entries.setdefault("/redoc", "redoc")
    table = []
    for pattern, entry in entries.items():
        label = f"headers.paths[{pattern}]"
        table.append((pattern, build_policy(_path_settings(settings, entry), label)))
    return PathTable(table, setting="headers.paths")


def _path_settings(base: HeadersSettings, entry: PathPolicy | str) -> HeadersSettings:
    if isinstance(entry, str):
        preset: str | None = entry
        fields: dict[str, Any] = {}
    else:
        preset = entry.preset
        fields = {name: getattr(entry, name) for name in entry.model_fields_set}
    update: dict[str, Any] = {}
    if preset == "api":
        update["csp"] = None
    elif preset is not None:
        update["csp"] = docs_preset(preset, base.openapi_url)
    update.update(fields)
    update.pop("preset", None)
    return base.model_copy(update=update)
