"""The header policy core: defaults, the CSP builder, per-path policies, presets, merging."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from fastopenapi.openapi.ui import render_redoc_ui, render_swagger_ui

from secmw.config.settings import SecuritySettings
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.headers.csp import NONCE, ContentSecurityPolicy, csp_hash
from secmw.headers.gate import HeadersGate
from secmw.headers.layer import SecurityHeaders
from secmw.headers.policy import HeaderPass
from secmw.headers.presets import docs_preset
from secmw.headers.settings import HeadersSettings

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def build(**headers: Any) -> SecurityHeaders:
    """The layer's core built through the settings root, as the middlewares build it."""
    return SecurityHeaders(SecuritySettings(headers=headers).headers)


def sent(
    layer: SecurityHeaders,
    path: str = "/",
    *,
    scheme: str = "https",
    app_headers: list[tuple[str, str]] | None = None,
    principal: Principal | None = None,
) -> list[tuple[str, str]]:
    """The WSGI-form headers of one response to ``path``."""
    request = RequestView("GET", path, scheme=scheme)
    header_pass = layer.start(request)
    if principal is not None:
        request.state["principal"] = principal
    return header_pass.apply_str(app_headers or [])


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """Every value of ``name`` (case-insensitive)."""
    return [value for key, value in headers if key.lower() == name.lower()]


# -- the default policy --------------------------------------------------------------------------

DEFAULTS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": API_CSP,
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-XSS-Protection": "0",
    "X-Permitted-Cross-Domain-Policies": "none",
}


@pytest.mark.parametrize(("name", "value"), DEFAULTS.items(), ids=list(DEFAULTS))
def test_default_policy_value(name: str, value: str) -> None:
    """Each header of the default API policy has the documented value, exactly once."""
    assert values(sent(SecurityHeaders()), name) == [value]


def test_default_permissions_policy_denies_every_listed_feature() -> None:
    """The default Permissions-Policy gives every feature an empty allowlist."""
    (policy,) = values(sent(SecurityHeaders()), "Permissions-Policy")
    items = policy.split(", ")
    assert "camera=()" in items
    assert "geolocation=()" in items
    assert "microphone=()" in items
    assert all(item.endswith("=()") for item in items)


# Features Debian's Chromium reports as "Unrecognized feature" in the Permissions-Policy header
# (each is an error in the console of every page that gets it).
UNRECOGNIZED_BY_CHROMIUM = (
    "ambient-light-sensor",
    "battery",
    "bluetooth",
    "document-domain",
    "navigation-override",
    "web-share",
)


def test_default_permissions_policy_names_no_feature_chromium_rejects() -> None:
    """The default Permissions-Policy leaves out the features Chromium does not recognise (the
    browser check in tests/integration/test_browser_csp.py reads its console)."""
    (policy,) = values(sent(SecurityHeaders()), "Permissions-Policy")
    features = {item.split("=")[0] for item in policy.split(", ")}
    assert not features & set(UNRECOGNIZED_BY_CHROMIUM)
    extended = build(permissions_policy={"web-share": []})
    assert "web-share=()" in values(sent(extended), "Permissions-Policy")[0].split(", ")


def test_defaults_leave_out_optional_headers() -> None:
    """COEP, Cache-Control and Server are not sent by default to an anonymous request."""
    headers = sent(SecurityHeaders())
    for name in ("Cross-Origin-Embedder-Policy", "Cache-Control", "Server", "Reporting-Endpoints"):
        assert values(headers, name) == []


@pytest.mark.parametrize(
    ("scheme", "on_http", "expected"),
    [("https", False, 1), ("http", False, 0), ("http", True, 1)],
    ids=["https", "http-not-sent", "http-when-configured"],
)
def test_hsts_only_on_https_unless_configured(scheme: str, on_http: bool, expected: int) -> None:
    """RFC 6797 §7.2: HSTS goes out on secure requests, on plain http only when configured."""
    layer = build(hsts_on_http=on_http)
    assert len(values(sent(layer, scheme=scheme), "Strict-Transport-Security")) == expected


def test_hsts_preload_is_opt_in() -> None:
    """``hsts_preload`` appends the preload token."""
    (hsts,) = values(sent(build(hsts_preload=True)), "Strict-Transport-Security")
    assert hsts == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.parametrize(
    "overrides",
    [{"hsts_max_age": 86400}, {"hsts_include_subdomains": False}],
    ids=["short-max-age", "no-subdomains"],
)
def test_hsts_preload_without_its_requirements_is_refused(overrides: dict[str, Any]) -> None:
    """A preload the preload list would reject fails at startup, naming the variable."""
    with pytest.raises(ConfigurationError, match="SECMW_HEADERS__HSTS_PRELOAD"):
        build(hsts_preload=True, **overrides)


def test_authenticated_response_gets_no_store() -> None:
    """An authenticated principal turns on ``Cache-Control: no-store``; anonymous does not."""
    user = Principal.create("u1", "bearer")
    assert values(sent(SecurityHeaders(), principal=user), "Cache-Control") == ["no-store"]
    anonymous = Principal("", "anonymous")
    assert values(sent(SecurityHeaders(), principal=anonymous), "Cache-Control") == []


def test_app_cache_control_wins_even_when_authenticated() -> None:
    """The app's own Cache-Control is kept, and no second one is added."""
    user = Principal.create("u1", "bearer")
    headers = sent(
        SecurityHeaders(), app_headers=[("cache-control", "private, max-age=60")], principal=user
    )
    assert values(headers, "Cache-Control") == ["private, max-age=60"]


@pytest.mark.parametrize(
    ("server_header", "expected"),
    [(None, ["app/1.0"]), ("", []), ("edge", ["edge"])],
    ids=["kept-by-default", "stripped", "replaced"],
)
def test_server_header(server_header: str | None, expected: list[str]) -> None:
    """``server_header``: unset keeps the app's, empty strips it, a value replaces it."""
    app = [("Server", "app/1.0")] if server_header is None else [("Server", "a"), ("SERVER", "b")]
    assert values(sent(build(server_header=server_header), app_headers=app), "Server") == expected


# -- the CSP builder -------------------------------------------------------------------------------


def test_csp_is_built_from_data() -> None:
    """Lists, space-separated strings and valueless directives render in declaration order."""
    csp = ContentSecurityPolicy(
        {
            "default-src": "'self'",
            "img-src": ["'self'", "data:"],
            "upgrade-insecure-requests": True,
            "object-src": False,
        },
        report_uri="/csp-report",
    )
    assert csp.render() == (
        "default-src 'self'; img-src 'self' data:; upgrade-insecure-requests; "
        "report-uri /csp-report"
    )
    assert csp.header_name == "Content-Security-Policy"


def test_csp_report_only_and_report_to() -> None:
    """Report-only changes the header name; report-to adds the directive and its endpoint."""
    layer = build(csp_report_only=True, report_to="https://r.example/csp", report_uri="/r")
    headers = sent(layer)
    assert values(headers, "Content-Security-Policy") == []
    (policy,) = values(headers, "Content-Security-Policy-Report-Only")
    assert policy == API_CSP + "; report-uri /r; report-to csp-endpoint"
    assert values(headers, "Reporting-Endpoints") == ['csp-endpoint="https://r.example/csp"']


def test_frame_options_sameorigin_keeps_csp_in_step() -> None:
    """X-Frame-Options SAMEORIGIN (any case) sets CSP frame-ancestors 'self'."""
    headers = sent(build(frame_options="sameorigin"))
    assert values(headers, "X-Frame-Options") == ["SAMEORIGIN"]
    assert values(headers, "Content-Security-Policy") == [
        "default-src 'none'; frame-ancestors 'self'"
    ]


def test_empty_csp_sends_none() -> None:
    """``csp = {}`` turns the CSP header off."""
    assert values(sent(build(csp={})), "Content-Security-Policy") == []


def test_nonce_is_fresh_per_request_and_published() -> None:
    """Each request gets its own 128-bit nonce, in the header and in ``request.state``."""
    layer = build(csp={"default-src": ["'none'"], "script-src": ["'self'", NONCE]})
    seen = set()
    for _ in range(3):
        request = RequestView("GET", "/", scheme="https")
        header_pass = layer.start(request)
        nonce = request.state["csp_nonce"]
        assert nonce == header_pass.nonce
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", nonce)
        (policy,) = values(header_pass.apply_str([]), "Content-Security-Policy")
        assert f"script-src 'self' 'nonce-{nonce}';" in policy
        seen.add(nonce)
    assert len(seen) == 3


def test_no_nonce_when_the_policy_uses_none() -> None:
    """A policy without the placeholder makes no nonce (no random bytes spent)."""
    request = RequestView("GET", "/")
    assert SecurityHeaders().start(request).nonce is None
    assert "csp_nonce" not in request.state


def test_csp_hash_matches_the_browser_algorithm() -> None:
    """``csp_hash`` is base64 of the SHA-256 of the exact text (CSP3 §8.4 example)."""
    assert csp_hash("alert('Hello, world.');") == (
        "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
    )


# -- bad configuration -----------------------------------------------------------------------------

BAD_CSP = {
    "unknown-directive": ({"scirpt-src": ["'self'"]}, "unknown CSP directive 'scirpt-src'"),
    "unquoted-keyword": ({"script-src": ["self"]}, "did you mean 'self'"),
    "unknown-keyword": ({"script-src": ["'unsafe-everything'"]}, "unknown keyword"),
    "fixed-nonce": ({"script-src": ["'nonce-abc'"]}, "fixed nonce"),
    "none-with-others": ({"script-src": ["'none'", "'self'"]}, "'none' must stand alone"),
    "semicolon-injection": ({"script-src": ["'self';img-src"]}, "not a single source"),
    "empty-list": ({"img-src": []}, "empty source list"),
    "value-on-valueless": ({"upgrade-insecure-requests": ["x"]}, "takes no value"),
    "report-uri-inside": ({"report-uri": ["/r"]}, "report_uri"),
    "nonce-in-frame-ancestors": ({"frame-ancestors": [NONCE]}, "fetch directives"),
}


@pytest.mark.parametrize(("csp", "message"), BAD_CSP.values(), ids=list(BAD_CSP))
def test_bad_csp_fails_at_startup(csp: dict[str, Any], message: str) -> None:
    """A CSP mistake that would silently weaken the policy fails at startup, naming the variable."""
    with pytest.raises(ConfigurationError, match="SECMW_HEADERS__CSP") as caught:
        build(csp=csp)
    assert message in str(caught.value)


INJECTIONS = {
    "server-crlf": ({"server_header": "x\r\nSet-Cookie: a=b"}, "SERVER_HEADER"),
    "server-nul": ({"server_header": "x\x00"}, "SERVER_HEADER"),
    "referrer-crlf": ({"referrer_policy": "no-referrer\r\nX: y"}, "REFERRER_POLICY"),
    "permissions-lf": ({"permissions_policy": "camera=()\nX: y"}, "PERMISSIONS_POLICY"),
    "csp-source-cr": ({"csp": {"img-src": ["a.example\rX: y"]}}, "CSP"),
    "report-uri-lf": ({"report_uri": "/r\nX: y"}, "SECMW_HEADERS__REPORT_URI"),
    "report-to-quote": ({"report_to": 'https://r.example/"x'}, "SECMW_HEADERS__REPORT_TO"),
    "cache-control-tab": ({"authenticated_cache_control": "no-store\t"}, "CACHE_CONTROL"),
    "path-csp-lf": ({"paths": {"/p": {"csp": {"img-src": ["a\n"]}}}}, "PATHS[/p]__CSP"),
}


@pytest.mark.parametrize(("headers", "variable"), INJECTIONS.values(), ids=list(INJECTIONS))
def test_control_characters_in_configuration_are_refused(
    headers: dict[str, Any], variable: str
) -> None:
    """CR, LF or any control character in a configured value fails at startup (no injection)."""
    with pytest.raises(ConfigurationError, match=re.escape(variable)):
        build(**headers)


def test_control_characters_from_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment variable holding a CR/LF is named in the error."""
    monkeypatch.setenv("SECMW_HEADERS__SERVER_HEADER", "edge\r\nSet-Cookie: s=1")
    with pytest.raises(ConfigurationError, match="SECMW_HEADERS__SERVER_HEADER"):
        SecuritySettings()


@pytest.mark.parametrize(
    ("headers", "variable"),
    [
        ({"referrer_policy": "no-referer"}, "SECMW_HEADERS__REFERRER_POLICY"),
        ({"frame_options": "ALLOW-FROM x"}, "SECMW_HEADERS__FRAME_OPTIONS"),
        ({"coop": "same-orign"}, "SECMW_HEADERS__COOP"),
        ({"permissions_policy": {"camera": ["evil"]}}, "SECMW_HEADERS__PERMISSIONS_POLICY"),
        ({"paths": {"/p": {"cps": {}}}}, "SECMW_HEADERS__PATHS"),
        ({"paths": {"no-slash": "api"}}, "SECMW_HEADERS__PATHS"),
        ({"paths": {"/p": "swagger"}}, "SECMW_HEADERS__PATHS"),
        ({"hsts_max_age": -1}, "SECMW_HEADERS__HSTS_MAX_AGE"),
    ],
    ids=[
        "referrer-typo",
        "frame-options-obsolete",
        "coop-typo",
        "permission-origin",
        "path-key-typo",
        "path-pattern",
        "unknown-preset",
        "negative-max-age",
    ],
)
def test_invalid_values_name_their_variable(headers: dict[str, Any], variable: str) -> None:
    """Every other invalid value is a ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=re.escape(variable)):
        build(**headers)


# -- settings from the environment -----------------------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON and plain values are read from ``SECMW_HEADERS__*``."""
    monkeypatch.setenv("SECMW_HEADERS__HSTS_MAX_AGE", "63072000")
    monkeypatch.setenv("SECMW_HEADERS__HSTS_PRELOAD", "true")
    monkeypatch.setenv("SECMW_HEADERS__CSP", '{"default-src": "\'self\'", "img-src": ["data:"]}')
    monkeypatch.setenv("SECMW_HEADERS__FRAME_OPTIONS", "sameorigin")
    monkeypatch.setenv("SECMW_HEADERS__REFERRER_POLICY", "strict-origin-when-cross-origin")
    monkeypatch.setenv("SECMW_HEADERS__PERMISSIONS_POLICY", '{"geolocation": ["self"]}')
    monkeypatch.setenv("SECMW_HEADERS__PATHS", '{"/admin/*": {"referrer_policy": "same-origin"}}')
    layer = SecurityHeaders(SecuritySettings().headers)
    headers = sent(layer)
    assert values(headers, "Strict-Transport-Security") == [
        "max-age=63072000; includeSubDomains; preload"
    ]
    assert values(headers, "Content-Security-Policy") == [
        "default-src 'self'; img-src data:; frame-ancestors 'self'"
    ]
    assert values(headers, "Referrer-Policy") == ["strict-origin-when-cross-origin"]
    assert "geolocation=(self)" in values(headers, "Permissions-Policy")[0].split(", ")
    assert values(sent(layer, "/admin/users"), "Referrer-Policy") == ["same-origin"]


@pytest.mark.parametrize(
    ("api_set", "document"), [("false", True), ("true", False)], ids=["full-everywhere", "api"]
)
def test_api_set_from_environment(
    monkeypatch: pytest.MonkeyPatch, api_set: str, document: bool
) -> None:
    """``SECMW_HEADERS__API_SET=false`` keeps the full set on a JSON response;
    ``SECMW_HEADERS__API_CACHE_CONTROL`` sets what the API set caches."""
    monkeypatch.setenv("SECMW_HEADERS__API_SET", api_set)
    monkeypatch.setenv("SECMW_HEADERS__API_CACHE_CONTROL", "no-store, private")
    layer = SecurityHeaders(SecuritySettings().headers)
    headers = sent(layer, app_headers=[("Content-Type", "application/json")])
    assert len(values(headers, "Permissions-Policy")) == document
    assert values(headers, "Cache-Control") == ([] if document else ["no-store, private"])


def test_api_cache_control_is_checked_at_startup() -> None:
    """A control character in ``api_cache_control`` fails at startup, naming the variable."""
    with pytest.raises(ConfigurationError, match="SECMW_HEADERS__API_CACHE_CONTROL"):
        build(api_cache_control="no-store\r\nSet-Cookie: a=b")


def test_permissions_policy_forms() -> None:
    """An object merges over the deny list; a string replaces it; empty sends nothing."""
    merged = values(
        sent(build(permissions_policy={"geolocation": ["self", "https://maps.example"]})),
        "Permissions-Policy",
    )[0].split(", ")
    assert 'geolocation=(self "https://maps.example")' in merged
    assert "camera=()" in merged
    assert values(sent(build(permissions_policy="camera=()")), "Permissions-Policy") == [
        "camera=()"
    ]
    assert values(sent(build(permissions_policy="")), "Permissions-Policy") == []


# -- per-path policies and presets -----------------------------------------------------------------


def test_path_policy_first_match_wins_and_inherits() -> None:
    """Per-path overrides replace only what they set; the first matching pattern wins."""
    layer = build(
        paths={
            "/embed/*": {"frame_options": "SAMEORIGIN"},
            "/embed/special": {"frame_options": ""},
            "/static/**": {"csp": {"default-src": ["'self'"]}},
        }
    )
    embed = sent(layer, "/embed/special")
    assert values(embed, "X-Frame-Options") == ["SAMEORIGIN"]
    assert values(embed, "Referrer-Policy") == ["no-referrer"]
    static = sent(layer, "/static/app.js")
    assert values(static, "Content-Security-Policy") == [
        "default-src 'self'; frame-ancestors 'none'"
    ]
    assert values(sent(layer, "/api"), "Content-Security-Policy") == [API_CSP]


def test_path_matching_uses_the_normalized_path() -> None:
    """``//docs`` and ``/x/../docs`` get the /docs policy: rules match the normalized path."""
    layer = SecurityHeaders()
    docs = layer.policy_for("/docs")
    for path in ("//docs", "/x/../docs", "/DOCS"):
        assert layer.policy_for(RequestView("GET", path).normalized_path) is docs


def test_docs_presets_are_on_by_default_and_can_be_turned_off() -> None:
    """/docs and /redoc get their presets; ``docs_presets=False`` keeps the API policy there."""
    on = SecurityHeaders()
    assert on.policy_for("/docs").csp is not None
    assert "swagger-ui-bundle.js" in on.policy_for("/docs").csp.render()  # type: ignore[union-attr]
    assert "redoc.standalone.js" in on.policy_for("/redoc").csp.render()  # type: ignore[union-attr]
    off = build(docs_presets=False)
    assert off.policy_for("/docs").csp.render() == API_CSP  # type: ignore[union-attr]


def test_preset_by_name_on_another_path() -> None:
    """A preset name maps any docs URL (hashed for ``openapi_url``); ``api`` restores strictness."""
    layer = build(
        paths={"/v1/docs": "swagger-ui", "/docs/raw": "api"}, openapi_url="/v1/openapi.json"
    )
    policy = layer.policy_for("/v1/docs").csp
    assert policy is not None
    assert (
        policy.render()
        == ContentSecurityPolicy(docs_preset("swagger-ui", "/v1/openapi.json")).render()
    )
    (bootstrap,) = _inline(render_swagger_ui("/v1/openapi.json"), "script")
    assert csp_hash(bootstrap) in policy.render()
    assert layer.policy_for("/docs/raw").csp.render() == API_CSP  # type: ignore[union-attr]


class _Page(HTMLParser):
    """What a page loads: external scripts and stylesheets, inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"] or "")
        elif tag == "link" and found.get("rel") == "stylesheet":
            self.styles.append(found.get("href") or "")
        elif tag in ("script", "style"):
            self._open = tag

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open].append(data)
            self._open = None


def _inline(html: str, tag: str) -> list[str]:
    page = _Page()
    page.feed(html)
    return page.inline[tag]


@pytest.mark.parametrize(
    ("preset", "render"),
    [("swagger-ui", render_swagger_ui), ("redoc", render_redoc_ui)],
    ids=["swagger-ui", "redoc"],
)
@pytest.mark.parametrize("openapi_url", ["/openapi.json", "/v2/spec.json"])
def test_docs_preset_allows_exactly_what_fastopenapi_pages_load(
    preset: str, render: Any, openapi_url: str
) -> None:
    """Each script, stylesheet and inline block of FastOpenAPI's page is allowed, exactly."""
    html = render(openapi_url)
    page = _Page()
    page.feed(html)
    directives = docs_preset(preset, openapi_url)
    assert sorted(directives["script-src"]) == sorted(
        page.scripts + [csp_hash(text) for text in page.inline["script"]]
    )
    external_styles = [s for s in directives["style-src"] if s.startswith("https://")]
    assert external_styles == page.styles
    if page.inline["style"]:  # styled-components injects nonce-less <style> elements too
        assert directives["style-src"] == ["'unsafe-inline'"]
        assert directives["style-src-attr"] == ["'none'"]
    flat = [source for sources in directives.values() for source in sources]
    assert "'unsafe-eval'" not in flat
    assert "https://cdn.jsdelivr.net" not in flat
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]


def test_docs_preset_unknown_name() -> None:
    """An unknown preset name is a configuration error."""
    with pytest.raises(ConfigurationError, match="unknown preset"):
        docs_preset("rapidoc")


# -- merging ---------------------------------------------------------------------------------------


def test_app_set_headers_are_kept_whatever_their_casing() -> None:
    """A security header the app set (any casing) is kept and not added a second time."""
    headers = sent(SecurityHeaders(), app_headers=[("x-FRAME-options", "SAMEORIGIN")])
    assert [(k, v) for k, v in headers if k.lower() == "x-frame-options"] == [
        ("x-FRAME-options", "SAMEORIGIN")
    ]


def test_override_replaces_app_set_headers() -> None:
    """With ``override`` the policy's value replaces every app copy."""
    app = [("X-Frame-Options", "ALLOWALL"), ("content-security-policy", "default-src *")]
    headers = sent(build(override=True), app_headers=app)
    assert values(headers, "X-Frame-Options") == ["DENY"]
    assert values(headers, "Content-Security-Policy") == [API_CSP]


def test_app_duplicates_end_up_once() -> None:
    """App duplicates leave once; two different app CSPs both stay (the browser enforces both)."""
    app = [
        ("X-Content-Type-Options", "nosniff"),
        ("x-content-type-options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("REFERRER-POLICY", "unsafe-url"),
        ("Content-Security-Policy", "default-src 'self'"),
        ("content-security-policy", "default-src 'self'"),
        ("Content-Security-Policy", "img-src 'none'"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    headers = sent(SecurityHeaders(), app_headers=app)
    assert values(headers, "X-Content-Type-Options") == ["nosniff"]
    assert values(headers, "Referrer-Policy") == ["same-origin"]
    assert values(headers, "Content-Security-Policy") == ["default-src 'self'", "img-src 'none'"]
    assert values(headers, "Set-Cookie") == ["a=1", "b=2"]
    lowered = [k.lower() for k, _ in headers if k.lower() != "set-cookie"]
    assert len(lowered) == len(set(lowered)) + 1  # only the two distinct CSPs share a name


def test_bytes_pass_uses_lowercase_names() -> None:
    """The ASGI form has lower-case byte names and the same values as the WSGI form."""
    request = RequestView("GET", "/", scheme="https")
    header_pass = SecurityHeaders().start(request)
    as_bytes = header_pass.apply([(b"content-type", b"application/json")])
    as_str = header_pass.apply_str([("Content-Type", "application/json")])
    assert [(k.decode(), v.decode()) for k, v in as_bytes] == [(k.lower(), v) for k, v in as_str]
    assert all(k == k.lower() for k, _ in as_bytes)


def test_headers_settings_alone_validate() -> None:
    """Building the section alone checks the policy too (errors surface at settings load)."""
    with pytest.raises(ValueError, match="unknown CSP directive"):
        HeadersSettings(csp={"scirpt-src": ["'self'"]})


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "authenticated"])
@pytest.mark.parametrize(
    "own",
    [
        [],
        [("X-Frame-Options", "SAMEORIGIN")],
        [("Cache-Control", "public")],
        [("Server", "x")],
        [("Content-Type", "application/json")],
        [("Content-Type", "application/json"), ("Cache-Control", "public")],
    ],
    ids=["none", "own-frame-options", "own-cache-control", "own-server", "json", "json-cached"],
)
def test_a_plain_policy_merges_like_a_header_pass_on_both_sides(
    secure: bool, authenticated: bool, own: list[tuple[str, str]]
) -> None:
    """Without a nonce, the policy's own merge (used per request on ASGI and WSGI) gives what
    the full pass gives, in strings and in bytes."""
    policy = build().default
    assert not policy.nonced
    full = HeaderPass(policy, None, secure=secure)
    own_bytes = [(n.lower().encode(), v.encode()) for n, v in own]
    expected = full.apply_str(list(own), authenticated=authenticated)
    assert policy.apply_str(list(own), secure, authenticated) == expected
    assert policy.apply_bytes(own_bytes, secure, authenticated) == full.apply(
        own_bytes, authenticated=authenticated
    )


def test_the_layer_knows_whether_any_policy_makes_a_nonce() -> None:
    """Only a policy with a nonce makes one; the gate publishes none otherwise."""
    assert not build().nonced
    nonced = build(paths={"/app/*": {"csp": {"script-src": [NONCE]}}})
    assert nonced.nonced
    assert not nonced.default.nonced
    assert HeadersGate(nonced, raw=False).makes_nonce
    assert not HeadersGate(build(), raw=True).makes_nonce
