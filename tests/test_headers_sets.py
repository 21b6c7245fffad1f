"""The two header sets: the API set on responses that are no document, the full set on documents
and on responses without a Content-Type. One table, run through the ASGI and the WSGI layer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, NamedTuple
from wsgiref.util import setup_testing_defaults

import pytest

from secmw import asgi, wsgi
from secmw.headers.content import is_document
from secmw.headers.csp import NONCE
from secmw.headers.layer import SecurityHeaders
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

JSON = ("Content-Type", "application/json")
HTML = ("Content-Type", "text/html; charset=utf-8")
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCUMENT_ONLY = (
    "permissions-policy",
    "cross-origin-opener-policy",
    "x-xss-protection",
    "x-permitted-cross-domain-policies",
)
BOTH = (
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
    "cross-origin-resource-policy",
    "strict-transport-security",
)
NONCED = {"csp": {"default-src": ["'none'"], "script-src": [NONCE]}}


class Case(NamedTuple):
    """What the app answers, under which settings; whether the full set is expected."""

    fields: tuple[tuple[str, str], ...]
    document: bool
    settings: dict[str, Any] = {}
    path: str = "/"
    method: str = "GET"
    authenticated: bool = False


CASES: dict[str, Case] = {
    "json": Case((JSON,), False),
    "json-head": Case((JSON,), False, method="HEAD"),
    "json-authenticated": Case((JSON,), False, authenticated=True),
    "problem-json": Case((("Content-Type", "application/problem+json"),), False),
    "text-plain": Case((("Content-Type", "text/plain; charset=utf-8"),), False),
    "image-png": Case((("Content-Type", "image/png"),), False),
    "html": Case((HTML,), True),
    "html-head": Case((HTML,), True, method="HEAD"),
    "html-odd-casing": Case((("CONTENT-TYPE", "Text/HTML;charset=UTF-8"),), True),
    "no-content-type": Case((), True),
    "no-content-type-authenticated": Case((), True, authenticated=True),
    "xhtml": Case((("Content-Type", "application/xhtml+xml"),), True),
    "svg": Case((("Content-Type", "image/svg+xml"),), True),
    "xml": Case((("Content-Type", "text/xml"),), True),
    "javascript": Case((("Content-Type", "text/javascript"),), True),
    "sniffed-type": Case((("Content-Type", "*/*"),), True),
    "empty-content-type": Case((("Content-Type", ""),), True),
    "malformed-content-type": Case((("Content-Type", "json"),), True),
    "repeated-json-then-html": Case((JSON, HTML), True),
    "repeated-html-then-json": Case((HTML, JSON), True),
    "repeated-json": Case((JSON, ("content-type", "application/json")), False),
    "joined-json-html": Case((("Content-Type", "application/json, text/html"),), True),
    "setting-full-everywhere": Case((JSON,), True, {"api_set": False}),
    "nonce-policy-json": Case((JSON,), False, NONCED),
    "nonce-policy-html": Case((HTML,), True, NONCED),
    "path-policy-json": Case(
        (JSON,), False, {"paths": {"/embed/*": {"frame_options": "SAMEORIGIN"}}}, "/embed/x"
    ),
    "docs-preset-html": Case((HTML,), True, path="/docs"),
    "docs-spec-json": Case((JSON,), False, path="/openapi.json"),
}


def asgi_app(fields: tuple[tuple[str, str], ...]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else b"x"}
        )

    return app


def wsgi_app(fields: tuple[tuple[str, str], ...]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", list(fields))
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else b"x"]

    return app


def wrapped(side: Any, app: Any, case: Case) -> Any:
    if case.authenticated:
        app = side.AuthenticationMiddleware(app, jwt={"secret": SECRET})
    return side.SecurityHeadersMiddleware(app, headers=case.settings)


def answer_asgi(case: Case) -> list[tuple[str, str]]:
    auth = [("authorization", f"Bearer {make_token()}")] if case.authenticated else []
    scope = http_scope(case.path, method=case.method, headers=auth, scheme="https")
    recorder = Recorder()
    asyncio.run(wrapped(asgi, asgi_app(case.fields), case)(scope, empty_receive, recorder))
    return recorder.headers


def answer_wsgi(case: Case) -> list[tuple[str, str]]:
    environ: dict[str, Any] = {"REQUEST_METHOD": case.method, "PATH_INFO": case.path}
    setup_testing_defaults(environ)
    environ["wsgi.url_scheme"] = "https"
    if case.authenticated:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {make_token()}"
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["headers"] = headers
        return lambda data: None

    b"".join(wrapped(wsgi, wsgi_app(case.fields), case)(environ, start_response))
    return list(seen["headers"])


def collect(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        found.setdefault(name.lower(), []).append(value)
    return found


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
@pytest.mark.parametrize("name", CASES)
def test_the_set_follows_the_content_type(name: str, side: str) -> None:
    """Both sets carry the core fields once; the document fields come with the full set only;
    the app's own fields are untouched."""
    case = CASES[name]
    found = collect(answer_asgi(case) if side == "asgi" else answer_wsgi(case))
    for field in BOTH:
        assert len(found.get(field, [])) == 1, field
    for field in DOCUMENT_ONLY:
        assert len(found.get(field, [])) == case.document, field
    assert found.get("content-type", []) == [value for _, value in case.fields]


@pytest.mark.parametrize("name", CASES)
def test_both_sides_send_the_same_fields(name: str) -> None:
    """The ASGI and the WSGI layer answer each row with the same fields, in the same order."""
    case = CASES[name]
    nonce_free = [(n.lower(), v.split("'nonce-")[0]) for n, v in answer_asgi(case)]
    assert nonce_free == [(n.lower(), v.split("'nonce-")[0]) for n, v in answer_wsgi(case)]


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_api_responses_get_no_store_unless_the_app_set_its_own(side: str) -> None:
    """``Cache-Control: no-store`` on every API response, anonymous too; the app's value is
    kept; a document to an anonymous request gets none."""
    answer = answer_asgi if side == "asgi" else answer_wsgi
    assert collect(answer(CASES["json"]))["cache-control"] == ["no-store"]
    public = Case((JSON, ("Cache-Control", "public, max-age=60")), False)
    assert collect(answer(public))["cache-control"] == ["public, max-age=60"]
    assert "cache-control" not in collect(answer(CASES["html"]))
    assert collect(answer(CASES["no-content-type-authenticated"]))["cache-control"] == ["no-store"]


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_empty_api_cache_control_keeps_no_store_for_authenticated_requests(side: str) -> None:
    """``api_cache_control=""``: API responses get ``no-store`` as documents do, when
    authenticated only."""
    answer = answer_asgi if side == "asgi" else answer_wsgi
    off = {"api_cache_control": ""}
    assert "cache-control" not in collect(answer(Case((JSON,), False, off)))
    authed = Case((JSON,), False, off, authenticated=True)
    assert collect(answer(authed))["cache-control"] == ["no-store"]


def test_the_api_csp_keeps_the_framing_rule_and_drops_the_rest() -> None:
    """A JSON response loads nothing: its CSP is ``default-src 'none'`` with the document
    policy's ``frame-ancestors``, whatever sources the document policy allows, and no nonce."""
    found = collect(answer_asgi(CASES["nonce-policy-json"]))
    assert found["content-security-policy"] == [API_CSP]
    html = collect(answer_asgi(CASES["nonce-policy-html"]))["content-security-policy"]
    assert "'nonce-" in html[0]
    embed = collect(answer_asgi(CASES["path-policy-json"]))
    assert embed["content-security-policy"] == ["default-src 'none'; frame-ancestors 'self'"]
    assert embed["x-frame-options"] == ["SAMEORIGIN"]
    unframed = collect(answer_wsgi(Case((JSON,), False, {"frame_options": ""})))
    assert unframed["content-security-policy"] == ["default-src 'none'"]
    assert "x-frame-options" not in unframed
    own = Case((JSON,), False, {"csp": {"img-src": ["'self'"], "frame-ancestors": ["'self'"]}})
    assert collect(answer_wsgi(own))["content-security-policy"] == [
        "default-src 'none'; frame-ancestors 'self'"
    ]
    assert "content-security-policy" not in collect(answer_asgi(Case((JSON,), False, {"csp": {}})))


def test_docs_presets_still_reach_the_docs_pages() -> None:
    """``/docs`` (HTML) keeps the Swagger UI preset's CSP; its spec (JSON) gets the API set."""
    docs = collect(answer_asgi(CASES["docs-preset-html"]))["content-security-policy"][0]
    assert "swagger-ui-bundle.js" in docs
    spec = collect(answer_asgi(CASES["docs-spec-json"]))
    assert spec["content-security-policy"] == [API_CSP]


def test_the_preview_gives_each_set() -> None:
    """``HeaderPolicy.headers(content_type=...)`` previews the set a response would get."""
    policy = SecurityHeaders().default
    api = dict(policy.headers(content_type="application/json"))
    assert "Permissions-Policy" not in api
    assert api["Cache-Control"] == "no-store"
    assert "Permissions-Policy" in dict(policy.headers())


@pytest.mark.parametrize(
    ("values", "document"),
    [
        ([], True),
        ([b"application/json"], False),
        (["application/json; charset=utf-8"], False),
        ([b"application/vnd.api+json"], False),
        ([b"text/html"], True),
        ([b"TEXT/HTML"], True),
        (["application/atom+xml"], True),
        ([b"application/javascript"], True),
        ([b"unknown/unknown"], True),
        ([b" "], True),
        ([b"application/json", b"application/json"], False),
        ([b"application/json", b"text/html"], True),
    ],
)
def test_is_document(values: list[Any], document: bool) -> None:
    """The classification, on bytes (ASGI) and native strings (WSGI)."""
    assert is_document(values) is document


def test_the_choice_per_content_type_is_remembered_within_a_bound() -> None:
    """Each block remembers its choice for a bounded number of Content-Type values; past the
    bound, and for repeated fields, it still chooses right without remembering."""
    policy = SecurityHeaders().default
    block = policy.bytes_block
    for index in range(200):
        kind = b"text/html" if index % 2 else b"application/json"
        fields = [(b"content-type", kind + b"; v=%d" % index)]
        added = dict(policy.apply_bytes(fields, True, False))
        assert (b"permissions-policy" in added) == bool(index % 2), index
    assert 0 < len(block.by_type) <= 64
    repeated = [(b"content-type", b"application/json"), (b"content-type", b"image/svg+xml")]
    assert b"permissions-policy" in dict(policy.apply_bytes(repeated, True, False))
    assert len(block.by_type) <= 64
