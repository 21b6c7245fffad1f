"""Security response headers: the policy, a small CSP builder, per-path policies, docs presets.

Everything here is pure: header blocks are validated and encoded once when a
:class:`SecurityHeaders` is built, and the per-request pass (:meth:`HeaderPass.apply`) merges
them into the response's own headers in one scan, without I/O.

The default is the strict policy of the OWASP Secure Headers Project for an API: HSTS for a year
(RFC 6797, HTTPS only), ``nosniff``, ``X-Frame-Options: DENY`` with CSP ``frame-ancestors
'none'``, CSP ``default-src 'none'``, ``Referrer-Policy: no-referrer``, a deny-by-default
``Permissions-Policy``, COOP and CORP ``same-origin``, ``X-XSS-Protection: 0`` and
``Cache-Control: no-store`` on responses to authenticated requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, AnyStr, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from secmw.core.deny import Deny
from secmw.core.paths import PathTable
from secmw.core.request import RequestView
from secmw.core.section import Section
from secmw.errors import ConfigurationError

# -- CSP ---------------------------------------------------------------------------------------

# CSP Level 3 §6 and the directives defined by Trusted Types, Mixed Content and Fenced Frames.
# fmt: off
FETCH_DIRECTIVES = frozenset((
    "child-src", "connect-src", "default-src", "fenced-frame-src", "font-src", "frame-src",
    "img-src", "manifest-src", "media-src", "object-src", "script-src", "script-src-attr",
    "script-src-elem", "style-src", "style-src-attr", "style-src-elem", "worker-src",
))
# fmt: on
_SOURCE_LIST_DIRECTIVES = FETCH_DIRECTIVES | {"base-uri", "form-action", "frame-ancestors"}
_VALUELESS_DIRECTIVES = frozenset({"upgrade-insecure-requests", "block-all-mixed-content"})
KNOWN_DIRECTIVES = (
    _SOURCE_LIST_DIRECTIVES
    | _VALUELESS_DIRECTIVES
    | {"sandbox", "trusted-types", "require-trusted-types-for", "webrtc"}
)
"""Directive names the builder accepts; anything else is a typo that would weaken the policy."""

NONCE = "'nonce'"
"""Placeholder in a source list: replaced by ``'nonce-<fresh value>'`` on every request."""

# fmt: off
_KEYWORDS = frozenset((
    "'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'",
    "'unsafe-hashes'", "'report-sample'", "'unsafe-allow-redirects'", "'wasm-unsafe-eval'",
    "'inline-speculation-rules'",
))
# fmt: on
_HASH_SOURCE = re.compile(r"'sha(256|384|512)-[A-Za-z0-9+/_-]+={0,2}'")
_SOURCE_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space (CSP3 §2.3.1 grammar)
_PLACEHOLDER = "\x00"

SourceList = Sequence[str] | str | bool


def csp_hash(text: str | bytes, algorithm: str = "sha256") -> str:
    """The CSP hash source (``'sha256-...'``) allowing an inline script or style with this text.

    The text is what sits between ``<script>`` and ``</script>``, whitespace included (CSP3 §8.4).
    """
    data = text.encode() if isinstance(text, str) else text
    digest = hashlib.new(algorithm, data).digest()
    return f"'{algorithm}-{base64.b64encode(digest).decode()}'"


def make_nonce() -> str:
    """A fresh CSP nonce: 128 random bits, base64url (CSP3 §7.2 asks for at least 128)."""
    return secrets.token_urlsafe(16)


def _check_value(value: str, setting: str) -> str:
    # A CR or LF would start a new header line (response splitting); any control character or
    # non-ASCII byte is refused too, as RFC 9110 §5.5 field values should be visible ASCII.
    if not all(" " <= char <= "~" for char in value):
        raise ConfigurationError(f"{setting}: control or non-ASCII character in a header value")
    return value


def _check_source(directive: str, source: str, setting: str) -> None:
    if not _SOURCE_CHARS.fullmatch(source) or ";" in source or "," in source:
        raise ConfigurationError(
            f"{setting}: {directive}: {source!r} is not a single source expression"
        )
    if directive not in _SOURCE_LIST_DIRECTIVES:
        return
    lowered = source.lower()
    if lowered.startswith("'nonce-"):
        raise ConfigurationError(
            f"{setting}: {directive}: a fixed nonce is no protection; write {NONCE} for a fresh "
            "nonce per request"
        )
    if source == NONCE:
        if directive not in FETCH_DIRECTIVES:
            raise ConfigurationError(
                f"{setting}: {directive}: nonces only apply to fetch directives"
            )
    elif source.startswith("'") and lowered not in _KEYWORDS and not _HASH_SOURCE.fullmatch(source):
        raise ConfigurationError(f"{setting}: {directive}: unknown keyword {source}")
    elif f"'{lowered}'" in _KEYWORDS:
        raise ConfigurationError(
            f"{setting}: {directive}: {source} is a host name; did you mean '{lowered}'?"
        )


class ContentSecurityPolicy:
    """A Content-Security-Policy built from data: ``{directive: [sources]}``.

    Directive names are checked against :data:`KNOWN_DIRECTIVES` and source expressions against
    the CSP3 grammar, so a typo fails at startup instead of silently weakening the policy. Write
    :data:`NONCE` (``"'nonce'"``) in a source list to get a fresh ``'nonce-...'`` per request.

    Args:
        directives: Directive name to its sources: a list, a space-separated string, or ``True``
            for valueless directives such as ``upgrade-insecure-requests``.
        report_only: Send as ``Content-Security-Policy-Report-Only`` (report, do not block).
        report_uri: Where browsers POST violation reports (``report-uri``, CSP2).
        report_to: Reporting API endpoint URL; adds ``report-to csp-endpoint`` and a
            ``Reporting-Endpoints`` header naming it (CSP3, Reporting API).
        setting: The setting these came from, named in errors.

    Raises:
        ConfigurationError: unknown directive, malformed source, control character.
    """

    __slots__ = ("_parts", "directives", "header_name", "report_to", "report_uri", "uses_nonce")

    def __init__(
        self,
        directives: Mapping[str, SourceList],
        *,
        report_only: bool = False,
        report_uri: str | None = None,
        report_to: str | None = None,
        setting: str = "csp",
    ) -> None:
        self.directives = _normalize_directives(directives, setting)
        self.header_name = (
            "Content-Security-Policy-Report-Only" if report_only else "Content-Security-Policy"
        )
        self.report_uri = _check_url(report_uri, f"{setting} report_uri")
        self.report_to = _check_url(report_to, f"{setting} report_to")
        self.uses_nonce = any(NONCE in sources for sources in self.directives.values())
        text = self.render(_PLACEHOLDER) if self.uses_nonce else self.render()
        self._parts = tuple(part.encode("ascii") for part in text.split(_PLACEHOLDER))

    def render(self, nonce: str | None = None) -> str:
        """The header value; ``nonce`` replaces the :data:`NONCE` placeholder."""
        items = []
        for name, sources in self.directives.items():
            if nonce is not None:
                sources = tuple(f"'nonce-{nonce}'" if s == NONCE else s for s in sources)
            elif NONCE in sources:
                sources = tuple(s for s in sources if s != NONCE) or ("'none'",)
            items.append(" ".join((name, *sources)))
        if self.report_uri:
            items.append(f"report-uri {self.report_uri}")
        if self.report_to:
            items.append("report-to csp-endpoint")
        return "; ".join(items)

    def encode(self, nonce: str | None = None) -> bytes:
        """The header value as bytes, from parts encoded once (the per-request cost is a join)."""
        if not self.uses_nonce:
            return self._parts[0]
        if nonce is None:
            return self.render().encode("ascii")
        return nonce.encode("ascii").join(self._parts)


def _normalize_directives(
    directives: Mapping[str, SourceList], setting: str
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for raw_name, value in directives.items():
        name = raw_name.strip().lower()
        if name in ("report-uri", "report-to"):
            raise ConfigurationError(
                f"{setting}: set {name} with the report_uri / report_to settings"
            )
        if name not in KNOWN_DIRECTIVES:
            raise ConfigurationError(f"{setting}: unknown CSP directive {raw_name!r}")
        if value is False:
            continue
        if value is True:
            sources: tuple[str, ...] = ()
        elif isinstance(value, str):
            sources = tuple(value.split())
        else:
            sources = tuple(value)
        if name in _VALUELESS_DIRECTIVES and sources:
            raise ConfigurationError(f"{setting}: {name} takes no value (write true)")
        if name in _SOURCE_LIST_DIRECTIVES:
            if not sources:
                raise ConfigurationError(f"{setting}: {name}: empty source list (write 'none')")
            if "'none'" in (s.lower() for s in sources) and len(sources) > 1:
                raise ConfigurationError(f"{setting}: {name}: 'none' must stand alone")
        for source in sources:
            _check_source(name, source, setting)
        out[name] = sources
    return out


def _check_url(url: str | None, setting: str) -> str | None:
    if not url:
        return None
    _check_value(url, setting)
    if any(char in url for char in ' ;,"'):
        raise ConfigurationError(f"{setting}: not a URL")
    return url


# -- docs presets ------------------------------------------------------------------------------

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


# -- settings ----------------------------------------------------------------------------------

# Powerful features an API page never needs, all denied (W3C Permissions Policy; the list is the
# OWASP Secure Headers Project's, less features browsers no longer recognise).
# fmt: off
DEFAULT_PERMISSIONS = (
    "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media", "fullscreen",
    "geolocation", "gyroscope", "hid", "idle-detection", "magnetometer", "microphone", "midi",
    "payment", "picture-in-picture", "publickey-credentials-get", "screen-wake-lock", "serial",
    "sync-xhr", "usb", "web-share", "xr-spatial-tracking",
)
# fmt: on

# fmt: off
REFERRER_POLICIES = frozenset((
    "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
    "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url",
))
# fmt: on


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
    """Overrides for one path pattern (``SECMW_HEADERS__PATHS``); unset fields inherit."""

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
    """Security headers (``SECMW_HEADERS__*``); the defaults are the strict API policy."""

    enabled: bool = Field(True, description="Run the security headers layer.")
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
        SecurityHeaders(self)  # every header value and path policy is checked at load time
        return self


# -- the policy --------------------------------------------------------------------------------

_Triple = tuple[AnyStr, AnyStr, AnyStr]  # (lower-case name, name as sent, value)
INTERNAL_ERROR = Deny(500, "the server could not complete the request", "internal_error")
"""What the adapters answer, with the headers, when the app raised before responding."""


class _Block:
    """One encoding of a policy: ``str`` with canonical casing (WSGI) or lower-case ``bytes``."""

    __slots__ = (
        "added",
        "cache",
        "csp_name",
        "multi",
        "plain",
        "plain_pairs",
        "replace",
        "secure",
        "secure_pairs",
        "singletons",
        "watched",
    )

    def __init__(self, policy: HeaderPolicy, encode: Any, *, lower: bool) -> None:
        def field(name: str, value: str) -> Any:
            return (encode(name.lower()), encode(name.lower() if lower else name), encode(value))

        fixed = [field(name, value) for name, value in policy.fixed]
        hsts = [field("Strict-Transport-Security", policy.hsts)] if policy.hsts else []
        self.secure = tuple(hsts + fixed)
        self.plain = tuple((hsts if policy.hsts_on_http else []) + fixed)
        csp = policy.csp
        self.csp_name = field(csp.header_name if csp else "", "")[:2]
        self.cache = field("Cache-Control", policy.cache_control) if policy.cache_control else None
        managed = {encode(name.lower()) for name in policy.managed}
        self.multi = frozenset(
            encode(n) for n in ("content-security-policy", "content-security-policy-report-only")
        )
        self.singletons = frozenset(managed - self.multi)
        replace = set(managed) if policy.override else set()
        server = encode("server")
        if policy.server is not None:
            replace.add(server)
            if policy.server:
                self.secure += (field("Server", policy.server),)
                self.plain += (field("Server", policy.server),)
        self.replace = frozenset(replace)
        self.watched = frozenset(managed | replace | {encode("cache-control")})
        self.secure_pairs = tuple((name, value) for _, name, value in self.secure)
        self.plain_pairs = tuple((name, value) for _, name, value in self.plain)
        cached = (self.cache[1:],) if self.cache else ()
        # What a response that set none of the watched fields gets, by (secure, authenticated):
        # ``added[secure + 2 * authenticated]``.
        self.added = (
            self.plain_pairs,
            self.secure_pairs,
            self.plain_pairs + cached,
            self.secure_pairs + cached,
        )


class HeaderPolicy:
    """The headers for one class of responses, validated and encoded once.

    Build it with :func:`build_policy`; :class:`SecurityHeaders` picks one per request.
    """

    __slots__ = (
        "bytes_block",
        "cache_control",
        "csp",
        "fixed",
        "hsts",
        "hsts_on_http",
        "managed",
        "nonced",
        "override",
        "server",
        "str_block",
    )

    def __init__(
        self,
        fixed: Sequence[tuple[str, str]],
        *,
        hsts: str | None = None,
        hsts_on_http: bool = False,
        csp: ContentSecurityPolicy | None = None,
        cache_control: str | None = None,
        server: str | None = None,
        override: bool = False,
    ) -> None:
        self.csp = csp
        if csp is not None and not csp.uses_nonce:
            fixed = [*fixed, (csp.header_name, csp.render())]
        if csp is not None and csp.report_to:
            fixed = [*fixed, ("Reporting-Endpoints", f'csp-endpoint="{csp.report_to}"')]
        self.fixed = tuple(fixed)
        self.hsts = hsts
        self.hsts_on_http = hsts_on_http
        self.cache_control = cache_control
        self.server = server
        self.override = override
        names = [name for name, _ in self.fixed]
        names += ["Strict-Transport-Security"] if hsts else []
        names += [csp.header_name] if csp else []
        self.managed = frozenset(name.lower() for name in names)
        self.nonced = csp is not None and csp.uses_nonce
        self.str_block = _Block(self, str, lower=False)
        self.bytes_block = _Block(self, lambda text: text.encode("latin-1"), lower=True)

    def apply_bytes(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        secure: bool,
        authenticated: bool,
        queued: Sequence[tuple[bytes, bytes]] = (),
    ) -> list[tuple[bytes, bytes]]:
        """ASGI, for a policy without a nonce: the response headers, then ``queued`` (fields of
        the inner layers), with the policy merged in (what a :class:`HeaderPass` does, without
        making one)."""
        block = self.bytes_block
        out = [*headers, *queued]
        watched = block.watched
        for name, _ in out:
            if name.lower() in watched:
                extra = [block.cache] if block.cache and authenticated else []
                return _merge_managed(out, block, secure, extra)
        out += block.added[secure + 2 * authenticated]  # the common case: none of them set
        return out

    def headers(self, *, secure: bool = True, authenticated: bool = False) -> list[tuple[str, str]]:
        """Every header this policy adds to a response that set none (no nonce: a preview)."""
        return HeaderPass(self, None, secure=secure).apply_str([], authenticated=authenticated)


def _permissions_policy(value: dict[str, list[str]] | str | None, setting: str) -> str:
    if isinstance(value, str):
        return _check_value(value, setting)
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


def build_policy(settings: HeadersSettings, setting: str = "SECMW_HEADERS") -> HeaderPolicy:
    """A :class:`HeaderPolicy` from settings; errors name ``<setting>__<FIELD>``.

    Raises:
        ConfigurationError: a value with a control character, an unknown CSP directive or
            referrer policy, HSTS preload without the max-age and includeSubDomains it needs.
    """
    s = settings
    hsts = None
    if s.hsts:
        if s.hsts_preload and (s.hsts_max_age < 31_536_000 or not s.hsts_include_subdomains):
            # hstspreload.org refuses entries with less; a preload that cannot land misleads.
            raise ConfigurationError(
                f"{setting}__HSTS_PRELOAD: needs HSTS_MAX_AGE >= 31536000 and "
                "HSTS_INCLUDE_SUBDOMAINS"
            )
        hsts = f"max-age={s.hsts_max_age}"
        hsts += "; includeSubDomains" if s.hsts_include_subdomains else ""
        hsts += "; preload" if s.hsts_preload else ""
    fixed: list[tuple[str, str]] = [("X-Content-Type-Options", "nosniff")]
    if s.frame_options:
        fixed.append(("X-Frame-Options", s.frame_options))
    directives: Mapping[str, SourceList] = {"default-src": ["'none'"]} if s.csp is None else s.csp
    _check_url(s.report_uri, f"{setting}__REPORT_URI")
    _check_url(s.report_to, f"{setting}__REPORT_TO")
    csp = None
    if directives:
        if "frame-ancestors" not in directives and s.frame_options:
            # Keep CSP and X-Frame-Options saying the same thing (CSP3 supersedes XFO).
            ancestors = "'none'" if s.frame_options == "DENY" else "'self'"
            directives = {**directives, "frame-ancestors": [ancestors]}
        csp = ContentSecurityPolicy(
            directives,
            report_only=s.csp_report_only,
            report_uri=s.report_uri,
            report_to=s.report_to,
            setting=f"{setting}__CSP",
        )
    if s.referrer_policy:
        tokens = {token.strip() for token in s.referrer_policy.split(",")}
        if not tokens <= REFERRER_POLICIES:
            raise ConfigurationError(f"{setting}__REFERRER_POLICY: unknown referrer policy")
        fixed.append(("Referrer-Policy", s.referrer_policy))
    permissions = _permissions_policy(s.permissions_policy, f"{setting}__PERMISSIONS_POLICY")
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
    server = s.server_header
    _check_value(server or "", f"{setting}__SERVER_HEADER")
    cache = s.authenticated_cache_control
    _check_value(cache, f"{setting}__AUTHENTICATED_CACHE_CONTROL")
    return HeaderPolicy(
        fixed,
        hsts=hsts,
        hsts_on_http=s.hsts_on_http,
        csp=csp,
        cache_control=cache or None,
        server=server,
        override=s.override,
    )


# -- per request -------------------------------------------------------------------------------


class SecurityHeaders:
    """The layer's core: the default policy, per-path policies, and a pass per request.

    Args:
        settings: The ``headers`` section; default: the strict API policy.

    Raises:
        ConfigurationError: invalid settings, naming the variable.
    """

    __slots__ = ("default", "enabled", "paths")

    def __init__(self, settings: HeadersSettings | None = None) -> None:
        s = settings if settings is not None else HeadersSettings()
        self.enabled = s.enabled
        self.default = build_policy(s)
        entries: dict[str, PathPolicy | str] = dict(s.paths)
        if s.docs_presets:
            entries.setdefault("/docs", "swagger-ui")
            entries.setdefault("/redoc", "redoc")
        table = []
        for pattern, entry in entries.items():
            label = f"SECMW_HEADERS__PATHS[{pattern}]"
            table.append((pattern, build_policy(_path_settings(s, entry), label)))
        self.paths = PathTable(table, setting="SECMW_HEADERS__PATHS")

    def plain_policy_for(self, path: str) -> HeaderPolicy | None:
        """The policy for ``path`` (``route_path``) when that policy makes no nonce and the
        path needs no normalizing: the adapters then need nothing else of the request but its
        scheme. None otherwise (the full pass with :meth:`start`)."""
        if "//" in path or "/." in path:
            return None
        found = self.paths.match(path) if self.paths else None
        policy = found[1] if found else self.default
        return None if policy.nonced else policy

    def policy_for(self, path: str) -> HeaderPolicy:
        """The policy for a normalized path: the first matching path policy, else the default."""
        found = self.paths.match(path)
        return found[1] if found else self.default

    def start(self, request: RequestView) -> HeaderPass:
        """Begin a request: pick its policy and, when that policy uses one, make a nonce.

        The nonce is stored as ``request.state["csp_nonce"]``.
        """
        policy = self.policy_for(request.normalized_path)
        nonce = None
        if policy.csp is not None and policy.csp.uses_nonce:
            nonce = request.state["csp_nonce"] = make_nonce()
        return HeaderPass(policy, nonce, secure=request.is_secure, request=request)


def _path_settings(base: HeadersSettings, entry: PathPolicy | str) -> HeadersSettings:
    overrides = entry if isinstance(entry, PathPolicy) else PathPolicy(preset=entry)
    update: dict[str, Any] = {}
    if overrides.preset == "api":
        update["csp"] = None
    elif overrides.preset is not None:
        update["csp"] = docs_preset(overrides.preset, base.openapi_url)
    update.update({name: getattr(overrides, name) for name in overrides.model_fields_set})
    update.pop("preset", None)
    return base.model_copy(update=update)


class HeaderPass:
    """The header pass of one response: merges the policy into the app's headers.

    The app's own security headers are kept (the app knows its pages) unless the policy
    overrides; a managed header the app sent twice, in any casing, leaves once; ``Cache-Control``
    is added for authenticated requests only when the app set none.
    """

    __slots__ = ("nonce", "policy", "request", "secure")

    def __init__(
        self,
        policy: HeaderPolicy,
        nonce: str | None,
        *,
        secure: bool,
        request: RequestView | None = None,
    ) -> None:
        self.policy = policy
        self.nonce = nonce
        self.secure = secure
        self.request = request

    def apply(
        self, headers: Iterable[tuple[bytes, bytes]], *, authenticated: bool | None = None
    ) -> list[tuple[bytes, bytes]]:
        """ASGI: the response headers (lower-case bytes names) with the policy merged in."""
        block = self.policy.bytes_block
        extra: list[_Triple[bytes]] = []
        csp = self.policy.csp
        if csp is not None and csp.uses_nonce:
            extra.append((block.csp_name[0], block.csp_name[1], csp.encode(self.nonce)))
        if block.cache is not None and self._authenticated(authenticated):
            extra.append(block.cache)
        return _merge(headers, block, self.secure, extra)

    def apply_str(
        self, headers: Iterable[tuple[str, str]], *, authenticated: bool | None = None
    ) -> list[tuple[str, str]]:
        """WSGI: the response headers (native strings) with the policy merged in."""
        block = self.policy.str_block
        extra: list[_Triple[str]] = []
        csp = self.policy.csp
        if csp is not None and csp.uses_nonce:
            value = csp.encode(self.nonce).decode("ascii")
            extra.append((block.csp_name[0], block.csp_name[1], value))
        if block.cache is not None and self._authenticated(authenticated):
            extra.append(block.cache)
        return _merge(headers, block, self.secure, extra)

    def _authenticated(self, given: bool | None) -> bool:
        if given is not None:
            return given
        # Read when the response starts: the authentication layer runs inside this one.
        principal = self.request.state.get("principal") if self.request else None
        return bool(getattr(principal, "is_authenticated", False))


def _merge(
    headers: Iterable[tuple[AnyStr, AnyStr]],
    block: _Block,
    secure: bool,
    extra: list[_Triple[AnyStr]],
) -> list[tuple[AnyStr, AnyStr]]:
    out = list(headers)
    watched = block.watched
    for name, _ in out:
        if name.lower() in watched:
            return _merge_managed(out, block, secure, extra)
    # The common case: the app set none of these headers.
    out.extend(block.secure_pairs if secure else block.plain_pairs)
    for _, name, value in extra:
        out.append((name, value))
    return out


def _merge_managed(
    headers: list[tuple[AnyStr, AnyStr]],
    block: _Block,
    secure: bool,
    extra: list[_Triple[AnyStr]],
) -> list[tuple[AnyStr, AnyStr]]:
    out: list[tuple[AnyStr, AnyStr]] = []
    seen: set[Any] = set()
    for name, value in headers:
        key = name.lower()
        if key in block.watched:
            if key in block.replace:
                continue
            if key in block.singletons:
                if key in seen:
                    continue
            elif key in block.multi:
                if (key, value) in seen:
                    continue
                seen.add((key, value))
            seen.add(key)
        out.append((name, value))
    fixed: tuple[_Triple[AnyStr], ...] = block.secure if secure else block.plain
    out.extend((name, value) for key, name, value in fixed if key not in seen)
    out.extend((name, value) for key, name, value in extra if key not in seen)
    return out
