"""The default policy against the header checks of Mozilla's HTTP Observatory, the OWASP Secure
Headers Project (on a page: the full set) and the OWASP REST Security Cheat Sheet (on a JSON
response: the API set), re-implemented as assertions.

Each rule is a function returning None when the headers pass and the reason when they fail.
Every rule also runs against a known-bad header set, so none of them can pass vacuously.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.headers.layer import SecurityHeaders
from secmw.headers.settings import HeadersSettings

Headers = dict[str, list[str]]
Rule = Callable[[Headers], "str | None"]


def collect(pairs: list[tuple[str, str]]) -> Headers:
    """Header pairs as lower-case name -> values."""
    found: Headers = {}
    for name, value in pairs:
        found.setdefault(name.lower(), []).append(value)
    return found


def csp_directives(headers: Headers) -> dict[str, list[str]]:
    """The enforced CSP (header, not report-only) parsed into directives."""
    (policy,) = headers.get("content-security-policy", [""])
    directives: dict[str, list[str]] = {}
    for item in policy.split(";"):
        tokens = item.split()
        if tokens:
            directives.setdefault(tokens[0].lower(), [t.lower() for t in tokens[1:]])
    return directives


def effective(directives: dict[str, list[str]], name: str) -> list[str] | None:
    """A fetch directive's sources, falling back to default-src (CSP3 §6.8.3)."""
    return directives.get(name, directives.get("default-src"))


# -- Mozilla HTTP Observatory (MDN) ---------------------------------------------------------------


def observatory_csp(headers: Headers) -> str | None:
    """csp-implemented-with-no-unsafe-default-src-none: an enforced CSP, default-src 'none',
    no unsafe-inline/unsafe-eval or broad sources for scripts, object-src effectively none."""
    if len(headers.get("content-security-policy", [])) != 1:
        return "no enforced Content-Security-Policy header"
    directives = csp_directives(headers)
    if directives.get("default-src") != ["'none'"]:
        return "default-src is not 'none'"
    scripts = effective(directives, "script-src") or []
    bad = {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:", "data:"} & set(scripts)
    if bad:
        return f"script-src allows {sorted(bad)}"
    if effective(directives, "object-src") != ["'none'"]:
        return "object-src is not 'none'"
    return None


def observatory_frame_ancestors(headers: Headers) -> str | None:
    """x-frame-options-implemented-via-csp: frame-ancestors 'none' or 'self'."""
    ancestors = csp_directives(headers).get("frame-ancestors")
    return None if ancestors in (["'none'"], ["'self'"]) else "no restrictive frame-ancestors"


def observatory_hsts(headers: Headers) -> str | None:
    """hsts-implemented-max-age-at-least-six-months: one HSTS header, max-age >= 15552000."""
    values = headers.get("strict-transport-security", [])
    if len(values) != 1:
        return "HSTS missing or repeated"
    found = re.search(r"(?i)max-age=(\d+)", values[0])
    if not found or int(found.group(1)) < 15_552_000:
        return "max-age under six months"
    return None


def observatory_nosniff(headers: Headers) -> str | None:
    """x-content-type-options-nosniff."""
    return None if headers.get("x-content-type-options") == ["nosniff"] else "no nosniff"


def observatory_frame_options(headers: Headers) -> str | None:
    """x-frame-options-sameorigin-or-deny."""
    values = [v.upper() for v in headers.get("x-frame-options", [])]
    return None if values in (["DENY"], ["SAMEORIGIN"]) else "X-Frame-Options not DENY/SAMEORIGIN"


def observatory_referrer(headers: Headers) -> str | None:
    """referrer-policy-private: a policy that never leaks the path cross-origin."""
    private = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
    values = headers.get("referrer-policy", [])
    if len(values) != 1:
        return "Referrer-Policy missing or repeated"
    last = values[0].split(",")[-1].strip().lower()  # the last known token wins
    return None if last in private else f"Referrer-Policy {last} leaks the URL"


def observatory_corp(headers: Headers) -> str | None:
    """cross-origin-resource-policy-implemented-with-same-origin (or same-site)."""
    values = headers.get("cross-origin-resource-policy", [])
    return None if values in (["same-origin"], ["same-site"]) else "CORP not same-origin/same-site"


def observatory_cors(headers: Headers) -> str | None:
    """cross-origin-resource-sharing-not-implemented: the layer opens no CORS access."""
    return "Access-Control-Allow-Origin set" if "access-control-allow-origin" in headers else None


# -- OWASP Secure Headers Project (headers_add.json / headers_remove.json) -------------------------


def owasp_coop(headers: Headers) -> str | None:
    """Cross-Origin-Opener-Policy: same-origin."""
    return None if headers.get("cross-origin-opener-policy") == ["same-origin"] else "COOP"


def owasp_permissions(headers: Headers) -> str | None:
    """Permissions-Policy denies the powerful features OWASP lists."""
    (policy,) = headers.get("permissions-policy", [""])
    items = {item.strip() for item in policy.split(",")}
    wanted = {
        "accelerometer=()",
        "camera=()",
        "geolocation=()",
        "gyroscope=()",
        "magnetometer=()",
        "microphone=()",
        "payment=()",
        "usb=()",
    }
    missing = wanted - items
    return f"features not denied: {sorted(missing)}" if missing else None


def owasp_xss_protection(headers: Headers) -> str | None:
    """X-XSS-Protection is absent or ``0`` (the auditor's ``1; mode=block`` caused leaks)."""
    values = headers.get("x-xss-protection", [])
    return None if values in ([], ["0"]) else f"X-XSS-Protection {values}"


def owasp_cross_domain(headers: Headers) -> str | None:
    """X-Permitted-Cross-Domain-Policies: none."""
    values = headers.get("x-permitted-cross-domain-policies")
    return None if values == ["none"] else "X-Permitted-Cross-Domain-Policies not none"


def owasp_hsts_subdomains(headers: Headers) -> str | None:
    """Strict-Transport-Security: max-age=31536000; includeSubDomains."""
    (value,) = headers.get("strict-transport-security", [""])
    found = re.search(r"(?i)max-age=(\d+)", value)
    ok = found and int(found.group(1)) >= 31_536_000 and "includesubdomains" in value.lower()
    return None if ok else "HSTS below one year or without includeSubDomains"


def owasp_no_store(headers: Headers) -> str | None:
    """Cache-Control: no-store on responses to authenticated requests."""
    values = ",".join(headers.get("cache-control", [])).lower()
    return None if "no-store" in values else "authenticated response may be cached"


def owasp_no_disclosure(headers: Headers) -> str | None:
    """headers_remove.json: no X-Powered-By / X-AspNet-Version, no version in Server."""
    leaks = {"x-powered-by", "x-aspnet-version", "x-aspnetmvc-version"} & set(headers)
    if leaks:
        return f"disclosing {sorted(leaks)}"
    if any(re.search(r"\d", value) for value in headers.get("server", [])):
        return "Server discloses a version"
    return None


# -- OWASP REST Security Cheat Sheet ("Security Headers": what every API response carries) --------


def rest_no_store(headers: Headers) -> str | None:
    """Cache-Control: no-store, on every API response (anonymous ones too)."""
    values = ",".join(headers.get("cache-control", [])).lower()
    return None if "no-store" in values else "API response may be cached"


def rest_frame_ancestors_none(headers: Headers) -> str | None:
    """Content-Security-Policy: frame-ancestors 'none'."""
    ancestors = csp_directives(headers).get("frame-ancestors")
    return None if ancestors == ["'none'"] else "frame-ancestors is not 'none'"


def rest_frame_options_deny(headers: Headers) -> str | None:
    """X-Frame-Options: DENY."""
    return None if headers.get("x-frame-options") == ["DENY"] else "X-Frame-Options not DENY"


def rest_content_type(headers: Headers) -> str | None:
    """The app's Content-Type goes out as it was set, once."""
    values = headers.get("content-type", [])
    return None if values == ["application/json"] else f"Content-Type {values}"


REST_RULES: dict[str, Rule] = {
    "rest/no-store": rest_no_store,
    "rest/frame-ancestors-none": rest_frame_ancestors_none,
    "rest/content-type": rest_content_type,
    "rest/hsts": observatory_hsts,
    "rest/nosniff": observatory_nosniff,
    "rest/x-frame-options-deny": rest_frame_options_deny,
}

RULES: dict[str, Rule] = {
    "observatory/csp": observatory_csp,
    "observatory/frame-ancestors": observatory_frame_ancestors,
    "observatory/hsts": observatory_hsts,
    "observatory/x-content-type-options": observatory_nosniff,
    "observatory/x-frame-options": observatory_frame_options,
    "observatory/referrer-policy": observatory_referrer,
    "observatory/corp": observatory_corp,
    "observatory/cors": observatory_cors,
    "owasp/coop": owasp_coop,
    "owasp/permissions-policy": owasp_permissions,
    "owasp/x-xss-protection": owasp_xss_protection,
    "owasp/cross-domain-policies": owasp_cross_domain,
    "owasp/hsts-one-year-subdomains": owasp_hsts_subdomains,
    "owasp/no-store-when-authenticated": owasp_no_store,
    "owasp/no-disclosure": owasp_no_disclosure,
}

BAD: list[tuple[str, str]] = [
    ("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' https:"),
    ("Strict-Transport-Security", "max-age=300"),
    ("X-Frame-Options", "ALLOWALL"),
    ("Referrer-Policy", "unsafe-url"),
    ("Cross-Origin-Resource-Policy", "cross-origin"),
    ("Access-Control-Allow-Origin", "*"),
    ("Cross-Origin-Opener-Policy", "unsafe-none"),
    ("Permissions-Policy", "camera=*"),
    ("X-XSS-Protection", "1; mode=block"),
    ("X-Permitted-Cross-Domain-Policies", "all"),
    ("Cache-Control", "public, max-age=600"),
    ("X-Powered-By", "Express"),
    ("X-Content-Type-Options", "sniff"),
    ("Content-Type", "text/html"),
]
OBSERVATORY = {name: rule for name, rule in RULES.items() if name.startswith("observatory/")}


def default_response(content_type: str = "text/html", *, authenticated: bool = True) -> Headers:
    """What the default policy sends on an https request (authenticated, by default) to an app
    that set only ``content_type``."""
    request = RequestView("GET", "/api/items", scheme="https")
    header_pass = SecurityHeaders().start(request)
    if authenticated:
        request.state["principal"] = Principal.create("u1", "bearer")
    return collect(header_pass.apply_str([("Content-Type", content_type)]))


@pytest.mark.parametrize("rule", RULES.values(), ids=list(RULES))
def test_default_policy_passes(rule: Rule) -> None:
    """The default policy passes this check on a page (the full set)."""
    assert rule(default_response()) is None


@pytest.mark.parametrize(
    "rule", [*REST_RULES.values(), *OBSERVATORY.values()], ids=[*REST_RULES, *OBSERVATORY]
)
def test_an_anonymous_json_response_passes(rule: Rule) -> None:
    """The API set passes the REST cheat sheet's checks and the Observatory's, unauthenticated."""
    assert rule(default_response("application/json", authenticated=False)) is None


@pytest.mark.parametrize("rule", [*RULES.values(), *REST_RULES.values()], ids=[*RULES, *REST_RULES])
def test_check_catches_a_bad_header_set(rule: Rule) -> None:
    """The check fails on headers a careless app would send (it is not vacuous)."""
    assert rule(collect(BAD)) is not None


@pytest.mark.parametrize("rule", RULES.values(), ids=list(RULES))
def test_app_cannot_weaken_a_check_under_override(rule: Rule) -> None:
    """With ``override``, the careless app's headers are replaced and every check passes."""
    request = RequestView("GET", "/", scheme="https")
    layer = SecurityHeaders(HeadersSettings(override=True, server_header=""))
    header_pass = layer.start(request)
    request.state["principal"] = Principal.create("u1", "bearer")
    kept_by_design = {"access-control-allow-origin", "cache-control", "x-powered-by"}
    # The careless app's page is HTML: the full set replaces its fields.
    app = [(name, value) for name, value in BAD if name.lower() not in kept_by_design]
    assert rule(collect(header_pass.apply_str(app))) is None
