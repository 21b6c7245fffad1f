"""SecurityHeadersMiddleware on WSGI: every status, errors, streaming, HEAD, nonces, werkzeug."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.handlers import SimpleHandler
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import httpx
import pytest
from flask import Flask, Response, request
from werkzeug.test import Client

import secmw
from secmw.core.deny import Deny
from secmw.headers.csp import NONCE
from secmw.wsgi._util import Environ, StartResponse, respond_deny
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.headers import SecurityHeadersMiddleware
from tests.support import SECRET, make_token, werkzeug_server

API_CSP = "default-src 'none'; frame-ancestors 'none'"


DOCUMENT_ONLY = (
    "Permissions-Policy",
    "Cross-Origin-Opener-Policy",
    "X-XSS-Protection",
    "X-Permitted-Cross-Domain-Policies",
)


def assert_protected(headers: Any, *, document: bool) -> None:
    """The response carries the fields of both sets, each once, and the fields of the document
    set alone exactly when ``document`` (else it got the API set)."""
    get = headers.getlist if hasattr(headers, "getlist") else headers.get_list
    assert get("Content-Security-Policy") == [API_CSP]
    assert get("X-Frame-Options") == ["DENY"]
    assert get("X-Content-Type-Options") == ["nosniff"]
    assert get("Referrer-Policy") == ["no-referrer"]
    assert get("Cross-Origin-Resource-Policy") == ["same-origin"]
    for name in DOCUMENT_ONLY:
        assert len(get(name)) == document, name


def plain_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A raw WSGI app answering 200."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def html_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A raw WSGI app answering a page."""
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "2")])
    return [b"ok"]


def denying_app(deny: Deny) -> Any:
    """A raw WSGI app answering as secmw's layers do (problem+json through ``respond_deny``)."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return respond_deny(start_response, deny)

    return app


class _Client(Client):
    """A werkzeug test client that reads and closes every body (as ``wsgiref.validate`` asks)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def client(app: Any, **headers: Any) -> Client:
    """A test client on the app wrapped by the layer, PEP 3333 checked on both sides."""
    return _Client(validator(SecurityHeadersMiddleware(validator(app), headers=headers)))


@pytest.mark.parametrize(
    ("app", "document"),
    [
        (plain_app, False),
        (html_app, True),
        (denying_app(Deny(403, "address not allowed", "forbidden")), False),
        (denying_app(Deny(429, "too many", "rate_limited", (("Retry-After", "7"),))), False),
    ],
    ids=["200-text", "200-html", "403-deny", "429-deny"],
)
def test_headers_on_app_and_denial_responses(app: Any, document: bool) -> None:
    """200s and the 403/429 problem responses of inner layers all leave with the headers: the
    full set on a page, the API set on text and problem+json."""
    assert_protected(client(app).get("/x").headers, document=document)


def test_headers_on_401_from_the_authentication_layer() -> None:
    """The real authentication layer's 401 (inside) leaves with the headers and its challenge."""
    inner = AuthenticationMiddleware(
        plain_app, jwt={"secret": SECRET}, auth={"required": ["/private"]}
    )
    response = client(inner).get("/private")
    assert response.status_code == 401
    assert_protected(response.headers, document=False)
    assert response.headers.get("WWW-Authenticate")


def test_no_store_for_authenticated_requests_only() -> None:
    """On a page, the principal the inner authentication layer sets decides
    ``Cache-Control: no-store``; an API response gets it either way."""
    test_client = client(AuthenticationMiddleware(html_app, jwt={"secret": SECRET}))
    authed = test_client.get("/", headers={"Authorization": f"Bearer {make_token()}"})
    assert authed.headers.getlist("Cache-Control") == ["no-store"]
    assert test_client.get("/").headers.getlist("Cache-Control") == []
    api_client = client(AuthenticationMiddleware(plain_app, jwt={"secret": SECRET}))
    assert api_client.get("/").headers.getlist("Cache-Control") == ["no-store"]


def raises_before_start(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """An app that fails before responding."""
    raise RuntimeError("boom: secret detail")


def raises_after_start(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """An app that starts a 200, then fails before returning its body."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("boom: secret detail")


def test_500_when_the_app_raises_before_responding(caplog: pytest.LogCaptureFixture) -> None:
    """An app raising before responding gets a logged 500 problem+json with the headers."""
    with caplog.at_level(logging.ERROR, logger="secmw.headers"):
        response = client(raises_before_start).get("/")
    assert response.status_code == 500
    assert_protected(response.headers, document=False)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert json.loads(response.data)["status"] == 500
    assert b"secret detail" not in response.data
    assert any(record.exc_info for record in caplog.records)


def test_500_replaces_a_status_not_yet_sent(caplog: pytest.LogCaptureFixture) -> None:
    """With ``exc_info``, the reference server replaces an unsent 200 by the 500 (PEP 3333)."""
    output = io.BytesIO()
    environ: dict[str, Any] = {"PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    handler = SimpleHandler(io.BytesIO(), output, io.StringIO(), environ)
    with caplog.at_level(logging.CRITICAL, logger="secmw.headers"):
        handler.run(validator(SecurityHeadersMiddleware(validator(raises_after_start))))
    head, _, body = output.getvalue().partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 500") or head.startswith(b"HTTP/1.0 500")
    lines = head.decode("latin-1").split("\r\n")[1:]
    assert_protected(_Multi(tuple(line.split(": ", 1)) for line in lines), document=False)  # type: ignore[misc]
    assert json.loads(body)["status"] == 500


class _Multi:
    """``getlist`` over raw header pairs."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k.lower() == name.lower()]


def test_no_error_after_the_response_started() -> None:
    """A body that fails mid-stream propagates: nothing is sent after the response started."""

    def half(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"part"
        raise RuntimeError("mid-stream")

    response = Client(SecurityHeadersMiddleware(half)).get("/", buffered=False)
    assert response.status_code == 200
    with pytest.raises(RuntimeError, match="mid-stream"):
        b"".join(response.iter_encoded())


def test_body_iterable_is_returned_unbuffered() -> None:
    """The app's body iterable itself is returned: the layer never reads or buffers it."""
    body = iter([b"a", b"b", b"c"])

    def streaming(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    calls: list[list[tuple[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append(headers)
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "https"}
    assert SecurityHeadersMiddleware(streaming)(environ, start_response) is body
    assert len(calls) == 1
    assert ("Strict-Transport-Security", "max-age=31536000; includeSubDomains") in calls[0]


# -- a real Flask app ----------------------------------------------------------------------------


def flask_app() -> Flask:
    """A Flask app with the pages the tests need."""
    app = Flask(__name__)

    @app.get("/ok")
    def ok() -> Any:
        return {"ok": True}

    @app.get("/page")
    def page() -> Any:
        nonce = request.environ["secmw.csp_nonce"]
        return f"<script nonce='{nonce}'>1</script><p>{secmw.current_csp_nonce()}</p>"

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("endpoint failed")

    @app.get("/forbidden")
    def forbidden() -> Any:
        return {"detail": "no"}, 403

    @app.get("/stream")
    def stream() -> Any:
        return Response((f"chunk{i};" for i in range(3)), mimetype="text/plain")

    @app.get("/framed")
    def framed() -> Any:
        return {}, 200, [("X-Frame-Options", "SAMEORIGIN"), ("x-frame-options", "SAMEORIGIN")]

    return app


def test_flask_statuses_head_and_streaming(caplog: pytest.LogCaptureFixture) -> None:
    """Flask's own 403 and 500, a HEAD and a streamed body all carry the headers."""
    test_client = client(flask_app().wsgi_app)
    with caplog.at_level(logging.CRITICAL):
        assert test_client.get("/boom").status_code == 500
    for method, path, status, document in [
        ("GET", "/ok", 200, False),
        ("HEAD", "/ok", 200, False),
        ("GET", "/forbidden", 403, False),
        ("GET", "/boom", 500, True),  # Flask's error page is HTML
        ("GET", "/stream", 200, False),
    ]:
        with caplog.at_level(logging.CRITICAL):
            response = test_client.open(path, method=method)
        assert response.status_code == status, (method, path)
        assert_protected(response.headers, document=document)
    assert test_client.get("/stream").data == b"chunk0;chunk1;chunk2;"
    assert test_client.head("/ok").data == b""


def test_flask_nonce_in_environ_and_context_variable() -> None:
    """``environ["secmw.csp_nonce"]`` and ``current_csp_nonce()`` equal the header's nonce."""
    csp = {"default-src": ["'none'"], "script-src": [NONCE]}
    response = client(flask_app().wsgi_app, csp=csp).get("/page")
    nonce = response.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert response.text == f"<script nonce='{nonce}'>1</script><p>{nonce}</p>"


def test_flask_duplicates_in_odd_casing_leave_once() -> None:
    """The app's two X-Frame-Options in different casings leave as one, the app's value."""
    response = client(flask_app().wsgi_app).get("/framed")
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]


def test_disabled_layer_sends_nothing_extra() -> None:
    """``enabled=False`` passes responses through untouched."""
    response = client(plain_app, enabled=False).get("/")
    assert "Content-Security-Policy" not in response.headers


@pytest.mark.server
def test_real_werkzeug_server_every_status(caplog: pytest.LogCaptureFixture) -> None:
    """Through werkzeug's server on 127.0.0.1: 200, 401, 403, 500, HEAD and streaming."""
    inner = AuthenticationMiddleware(
        flask_app().wsgi_app, jwt={"secret": SECRET}, auth={"required": ["/forbidden"]}
    )
    token = make_token()
    with (
        caplog.at_level(logging.CRITICAL),
        werkzeug_server(SecurityHeadersMiddleware(inner)) as url,
        httpx.Client(base_url=url) as http,
    ):
        for method, path, authed, status, document in [
            ("GET", "/ok", False, 200, False),
            ("HEAD", "/ok", False, 200, False),
            ("GET", "/stream", False, 200, False),
            ("GET", "/forbidden", False, 401, False),
            ("GET", "/forbidden", True, 403, False),
            ("GET", "/boom", False, 500, True),  # Flask's error page is HTML
        ]:
            headers = {"Authorization": f"Bearer {token}"} if authed else {}
            response = http.request(method, path, headers=headers)
            assert response.status_code == status, (method, path)
            assert_protected(response.headers, document=document)
        assert http.get("/stream").text == "chunk0;chunk1;chunk2;"


def test_a_path_info_without_its_slash_gets_the_path_policy_the_other_layers_match() -> None:
    """``PATH_INFO`` ``docs`` is routed as ``/docs``: the view-free pick must not miss the
    ``/docs`` policy that the normalizing layers match."""
    app = SecurityHeadersMiddleware(
        html_app, headers={"paths": {"/docs": {"csp": {"default-src": ["'self'"]}}}}
    )
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = "docs"
    seen: list[list[tuple[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(headers)

    b"".join(app(environ, start_response))
    csp = {k.lower(): v for k, v in seen[0]}["content-security-policy"]
    assert csp.startswith("default-src 'self';")
