"""Core building blocks: principal, request view, problems, path patterns."""

from __future__ import annotations

import json

import pytest

from secmw.core.deny import Deny
from secmw.core.fields import Headers, parse_cookies
from secmw.core.paths import PathSet, PathTable
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView, has_dot_segments, normalize_path
from secmw.errors import ConfigurationError
from tests.support import http_scope


def test_principal_is_immutable_and_frozen() -> None:
    """A principal cannot be changed after creation and freezes what it was given."""
    p = Principal.create("u1", "bearer", scopes=["a", "b"], roles=["r"], claims={"sub": "u1"})
    assert p.scopes == frozenset({"a", "b"})
    assert p.roles == frozenset({"r"})
    with pytest.raises(AttributeError):
        p.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.claims["sub"] = "x"  # type: ignore[index]


def test_principal_duck_types_starlette_base_user() -> None:
    """is_authenticated, display_name and identity work as Starlette expects."""
    p = Principal.create("u1", "basic", name="Alice")
    assert (p.is_authenticated, p.display_name, p.identity) == (True, "Alice", "u1")
    assert Principal.create("u2", "apikey").display_name == "u2"
    assert not ANONYMOUS.is_authenticated


def test_has_scopes_needs_every_scope() -> None:
    """has_scopes is true only when all required scopes were granted."""
    p = Principal.create("u1", "bearer", scopes=["items:read", "items:write"])
    assert p.has_scopes("items:read")
    assert p.has_scopes("items:read", "items:write")
    assert p.has_scopes()
    assert not p.has_scopes("items:read", "admin:read")


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    """Repeated fields are kept in order and joined with a comma on plain access."""
    h = Headers([("X-A", "1"), ("x-a", "2"), ("Other", "z")])
    assert h.getlist("X-a") == ["1", "2"]
    assert h["x-A"] == "1, 2"
    assert "OTHER" in h
    assert 42 not in h
    assert h.getlist("missing") == []
    assert sorted(h) == ["other", "x-a"]
    assert len(h) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/admin", "/admin"),
        ("//admin", "/admin"),
        ("/./admin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/../../admin", "/admin"),
        ("/a//b/", "/a/b/"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("", "/"),
        ("admin", "/admin"),
    ],
    ids=lambda v: repr(v),
)
def test_normalize_path(raw: str, expected: str) -> None:
    """Dot segments and repeated slashes are resolved; a trailing slash is kept."""
    assert normalize_path(raw) == expected


def test_request_view_from_scope_is_built_once() -> None:
    """The view is cached in the scope and parses headers, cookies and the query lazily."""
    scope = http_scope(
        "/a//b",
        headers=[("Cookie", "sid=abc; theme=dark"), ("Cookie", "x=1"), ("Host", "h")],
        query_string=b"api_key=k%201&api_key=2&empty=",
        client=("10.0.0.1", 1234),
    )
    view = RequestView.from_scope(scope)
    assert RequestView.from_scope(scope) is view
    assert (view.method, view.path, view.normalized_path) == ("GET", "/a//b", "/a/b")
    assert view.cookies == {"sid": "abc", "theme": "dark", "x": "1"}
    assert view.query_params("api_key") == ["k 1", "2"]
    assert view.query_params("empty") == [""]
    assert view.query_params("none") == []
    assert (view.peer, view.client, view.is_secure) == ("10.0.0.1", "10.0.0.1", False)


def test_request_view_malformed_cookie_is_skipped() -> None:
    """A cookie header that does not parse yields no cookies instead of an error."""
    view = RequestView.from_scope(http_scope(headers=[("cookie", 'a="unterminated')]))
    assert dict(view.cookies) in ({}, {"a": '"unterminated'})


def test_request_view_websocket_and_no_client() -> None:
    """A websocket scope without a client has method WEBSOCKET and no address."""
    view = RequestView.from_scope(http_scope(type="websocket", client=None, scheme="wss"))
    assert (view.method, view.peer, view.is_secure) == ("WEBSOCKET", None, True)


def test_request_view_from_environ() -> None:
    """The WSGI view reads HTTP_* keys, content headers and re-decodes a UTF-8 path."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/caf\u00c3\u00a9",
        "QUERY_STRING": "q=1",
        "HTTP_X_API_KEY": "k",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "https",
    }
    view = RequestView.from_environ(environ)
    assert RequestView.from_environ(environ) is view
    assert view.path == "/caf\u00e9"
    assert view.headers["x-api-key"] == "k"
    assert view.headers["content-type"] == "application/json"
    assert "content-length" not in view.headers
    assert (view.method, view.client, view.is_secure) == ("POST", "127.0.0.1", True)


def test_deny_renders_rfc9457_problem() -> None:
    """A Deny becomes a problem+json body with status, title and detail."""
    deny = Deny(401, "token expired", "invalid_token", (("www-authenticate", "Bearer"),))
    doc = json.loads(deny.body())
    assert doc == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "token expired",
        "code": "invalid_token",
    }
    headers = deny.response_headers(10)
    assert headers[:2] == [("content-type", "application/problem+json"), ("content-length", "10")]
    assert ("www-authenticate", "Bearer") in headers
    assert Deny(599, "x").title == "Error"
    assert "code" not in json.loads(Deny(403, "no").body())
    assert deny.with_headers(("retry-after", "3")).headers[-1] == ("retry-after", "3")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/health", "/health", True),
        ("/health", "/health/", True),
        ("/health", "/HEALTH", True),
        ("/health", "/healthz", False),
        ("/internal/*", "/internal", True),
        ("/internal/*", "/internal/a/b", True),
        ("/internal/*", "/internals", False),
        ("/items/{id}", "/items/1", True),
        ("/items/{id}", "/items/1/x", False),
        ("/items/*/edit", "/items/9/edit", True),
        ("/", "/", True),
        ("/", "/a", False),
        ("/*", "/anything/at/all", True),
    ],
    ids=lambda v: repr(v),
)
def test_path_patterns(pattern: str, path: str, matches: bool) -> None:
    """Patterns match segments, final wildcards match prefixes, case is folded."""
    assert (path in PathSet([pattern])) is matches


def test_path_table_first_match_wins() -> None:
    """The first declared pattern wins and its value is returned."""
    table = PathTable([("/a/*", 1), ("/a/b", 2)])
    assert table.match("/a/b") == ("/a/*", 1)
    assert table.match("/zzz") is None
    assert table.patterns == ["/a/*", "/a/b"]
    assert not PathTable([])
    assert PathTable([]).match("/") is None


@pytest.mark.parametrize("bad", ["nope", "/a*b", "/{x"], ids=repr)
def test_bad_path_pattern_is_a_configuration_error(bad: str) -> None:
    """A malformed pattern fails at construction, naming the setting."""
    with pytest.raises(ConfigurationError, match="SECMW_AUTH__REQUIRED"):
        PathSet([bad], setting="SECMW_AUTH__REQUIRED")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["a=1; b=2"], {"a": "1", "b": "2"}),
        (["a=1", "a=2; c=3"], {"a": "1", "c": "3"}),
        (['q="quoted value"'], {"q": "quoted value"}),
        (['e=""'], {"e": ""}),
        (["novalue; =x; ok=y"], {"ok": "y"}),
        (["a=b=c"], {"a": "b=c"}),
        ([], {}),
    ],
    ids=["two", "repeated", "quoted", "empty-quoted", "junk", "equals-in-value", "none"],
)
def test_parse_cookies(lines: list[str], expected: dict[str, str]) -> None:
    """RFC 6265 pairs, first value wins, one pair of quotes removed."""
    assert parse_cookies(lines) == expected


def test_parse_cookies_reads_every_pair_or_none() -> None:
    """Every pair is read, however far into the fields (a prefix would hide a late session
    cookie); fields over the bound are not read at all and the jar says it is incomplete."""
    late = parse_cookies(["a=1; big=" + "x" * 9000 + "; late=1"])
    assert (late["a"], late["late"], late.complete) == ("1", "1", True)
    over = parse_cookies(["a=1; big=" + "x" * 100_000 + "; late=1"], limit=50)
    assert (dict(over), over.complete) == ({}, False)
    assert "x" * 10 not in repr(late)


@pytest.mark.parametrize(
    ("lines", "repeated"),
    [
        (["a=1; b=2"], set()),
        (["sid=1; a=2; sid=3"], {"sid"}),
        (["sid=1", "sid=3"], {"sid"}),
        (["sid=1,sid=3"], {"sid"}),
        (["a=1,sid=3; sid=4"], {"sid"}),
        (["a=1,sid=3"], set()),
        (['j={"a":1,"b":2}'], set()),
    ],
    ids=["none", "one-field", "two-fields", "wsgi-comma-join", "comma-then-field", "hidden-once",
         "json-value"],
)  # fmt: skip
def test_parse_cookies_lists_repeated_names(lines: list[str], repeated: set[str]) -> None:
    """A name sent twice (in one field, in two, or in two that a WSGI server joined with a
    comma) is listed; the first value is the one kept."""
    jar = parse_cookies(lines)
    assert jar.repeated == repeated
    if "sid" in jar and lines[0].startswith("sid="):
        assert jar["sid"].startswith("1")


@pytest.mark.parametrize(
    ("path", "rejected"),
    [
        ("/a/b", False),
        ("/a.b/.c/..d", False),
        ("/a/./b", True),
        ("/a/../b", True),
        ("/a/..", True),
        ("/.", True),
    ],
    ids=repr,
)
def test_dot_segments_are_rejected(path: str, rejected: bool) -> None:
    """A path with '.' or '..' segments carries a 400 rejection for every layer."""
    assert has_dot_segments(path) is rejected
    view = RequestView("GET", path)
    assert (view.rejection is not None) is rejected
    if rejected:
        assert view.rejection is not None
        assert view.rejection.status == 400


def test_methods_are_upper_cased() -> None:
    """Rules see the method as routers do (werkzeug upper-cases it)."""
    assert RequestView.from_scope(http_scope(method="post")).method == "POST"
    assert RequestView.from_environ({"REQUEST_METHOD": "post"}).method == "POST"
