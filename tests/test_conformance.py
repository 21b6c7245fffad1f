"""One table of requests and the answers they must get, run through both drivers.

Each row is sent to four apps built from the same settings: the ASGI ``SecurityStack``, the
ASGI single-layer middlewares composed, the WSGI ``SecurityStack`` and the WSGI middlewares
composed. All four must give the same answer: status, header fields in order (names compared
lower-cased, each request's CSP nonce replaced by a placeholder), problem code, what the app saw
(principal, client address, nonce) and the audit events; the row's expected status and code are
checked too, and its ``HEAD`` twin gets the same status and fields with no body for a refusal.
Websocket handshakes (ASGI only) are refused before accept, alike by the stack and the layers.
``tests/test_parity.py`` is the companion table for credential parsing.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any, NamedTuple
from wsgiref.util import setup_testing_defaults

import pytest

from secmw import asgi, current_principal, hash_api_key, wsgi
from secmw.core.context import current_csp_nonce
from tests.redis_support import free_port
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

KEY = "k" * 32
TOKEN = make_token(scope="read")
BEARER = (("authorization", f"Bearer {TOKEN}"),)
PREFLIGHT = (("origin", "https://a.example"), ("access-control-request-method", "GET"))
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc", "scopes": ["r"]}]},
    "auth": {"required": ["/private/*"]},
    "ip": {"allow": ["127.0.0.0/8", "10.0.0.0/8"], "rules": {"/lan/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "100/minute", "rules": [{"path": "/tight", "limit": "3/minute"}]},
}
HEADERS = {
    "default": {},
    "off": {"enabled": False},
    "nonce": {"csp": {"default-src": ["'none'"], "script-src": ["'self'", "'nonce'"]}},
    "full": {"api_set": False},
}
TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8"}
"""The Content-Type the apps answer with, by the path's suffix (none otherwise)."""
LOCAL, LAN, OUTSIDE = ("127.0.0.1", 50000), ("10.1.1.1", 1), ("203.0.113.9", 1)


class Row(NamedTuple):
    """A request and the answer every side gives it (``code``: the problem's, if any)."""

    path: str
    status: int
    code: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    client: tuple[str, int] = LOCAL
    method: str = "GET"
    scheme: str = "http"
    repeat: int = 1  # GET sent this many times in a row (the last answer checked), then HEAD
    document: bool | None = None  # the full header set expected (else the API set), if checked


ROWS: dict[str, Row] = {
    "bearer": Row("/", 200, fields=BEARER),
    "bearer-https": Row("/", 200, fields=BEARER, scheme="https"),
    "required-missing": Row("/private/x", 401, "authentication_required"),
    "required-present": Row("/private/x", 200, fields=BEARER),
    "bearer-wrong": Row("/", 401, "invalid_token", (("authorization", "Bearer nope"),)),
    "bearer-malformed": Row("/", 400, "invalid_request", (("authorization", "Bearer a b"),)),
    "scheme-unsupported": Row("/", 401, "invalid_credentials", (("authorization", "Digest x"),)),
    "api-key": Row("/", 200, fields=(("x-api-key", KEY),)),
    "api-key-wrong": Row("/", 401, "invalid_credentials", (("x-api-key", "wrong"),)),
    "ip-refused": Row("/", 403, "ip_not_allowed", BEARER, client=OUTSIDE),
    "ip-rule-refused": Row("/lan/a", 403, "ip_not_allowed", BEARER),
    "ip-rule-allowed": Row("/lan/a", 200, fields=BEARER, client=LAN),
    "dot-segments": Row("/a/../private/x", 400, "invalid_path", BEARER),
    "app-401-challenged": Row("/own-401", 401),
    "app-401-authenticated": Row("/own-401", 401, fields=BEARER),
    "app-error": Row("/boom", 500, "internal_error", BEARER),
    "cors-preflight": Row("/", 200, fields=PREFLIGHT, method="OPTIONS"),
    "rate-limited-address": Row("/tight", 429, "rate_limited", client=LAN, repeat=4),
    "rate-limited-principal": Row("/tight", 429, "rate_limited", BEARER, client=LAN, repeat=4),
    "under-the-limit": Row("/tight", 200, fields=BEARER, client=LAN, repeat=2),
    "json-answer": Row("/items.json", 200, fields=BEARER, document=False),
    "json-answer-anonymous": Row("/items.json", 200, document=False),
    "html-answer": Row("/page.html", 200, fields=BEARER, document=True),
    "untyped-answer": Row("/", 200, document=True),
    "refusal-problem-json": Row("/private/x", 401, "authentication_required", document=False),
}

Answer = tuple[int, list[tuple[str, str]], str | None, str, list[dict[str, Any]]]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """Echo what the app sees; answer 401 on /own-401, raise on /boom."""
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    client = scope["client"][0] if scope["client"] else ""
    seen = f"{current_principal().id}|{scope['user'].identity}|{client}|{current_csp_nonce()}"
    status = 401 if scope["path"] == "/own-401" else 200
    typed = TYPES.get(scope["path"][scope["path"].rfind(".") :])
    fields = [(b"content-type", typed.encode())] if typed else []
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": seen.encode()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The WSGI twin of ``asgi_app``."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    principal = environ["secmw.principal"]
    seen = f"{current_principal().id}|{principal.identity}|{environ['REMOTE_ADDR']}|"
    seen += str(current_csp_nonce())
    typed = TYPES.get(path[path.rfind(".") :])
    fields = [("Content-Type", typed)] if typed else []
    start_response("401 Unauthorized" if path == "/own-401" else "200 OK", fields)
    return [seen.encode()]


def composed(side: Any, app: Any, sections: dict[str, Any]) -> Any:
    """The single-layer middlewares of ``side``, in the stack's order."""
    app = side.RateLimitMiddleware(app, **sections)
    app = side.AuthenticationMiddleware(app, **sections)
    app = side.IPFilterMiddleware(app, **sections)
    return side.SecurityHeadersMiddleware(app, **sections)


def normalized(
    status: int, headers: list[tuple[str, str]], body: bytes, events: list[Any]
) -> Answer:
    fields = [(n.lower(), re.sub(r"'nonce-[^']+'", "'nonce-N'", v)) for n, v in headers]
    code = json.loads(body).get("code") if status >= 400 and body[:1] == b"{" else None
    seen = "" if status >= 400 else re.sub(r"\|(?!None$)[^|]+$", "|N", body.decode())
    return status, fields, code, seen, [event.as_dict() for event in events]


def call_asgi(app: Any, row: Row, method: str, events: list[Any], loop: Any) -> Answer:
    scope = http_scope(
        row.path, method=method, headers=list(row.fields), client=row.client, scheme=row.scheme
    )
    recorder = Recorder()
    events.clear()
    try:
        loop.run_until_complete(app(scope, empty_receive, recorder))
    except RuntimeError:  # the app's error, re-raised to the server after the 500 went out
        assert recorder.messages
    return normalized(recorder.status, recorder.headers, recorder.body, events)


def call_wsgi(app: Any, row: Row, method: str, events: list[Any]) -> Answer:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": row.path,
        "QUERY_STRING": "",
        "wsgi.url_scheme": row.scheme,
    }
    setup_testing_defaults(environ)
    environ["REMOTE_ADDR"] = row.client[0]
    for name, value in row.fields:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = int(status[:3]), headers
        return lambda data: None

    events.clear()
    body = b"".join(app(environ, start_response))
    return normalized(seen["status"], seen["headers"], body, events)


def run_row(
    apps: dict[str, Any], row: Row, events: list[Any], loop: Any, headers: str = "default"
) -> None:
    """Send the row to every app; all answer alike, as the row says (and with the header set
    it says, under the ``headers`` settings of :data:`HEADERS`)."""
    for method in ("GET", "HEAD") if row.method == "GET" else (row.method,):
        answers = {}
        for name, app in apps.items():
            for _ in range(row.repeat if method == "GET" else 1):
                if name.startswith("asgi"):
                    answer = call_asgi(app, row, method, events, loop)
                else:
                    answer = call_wsgi(app, row, method, events)
            answers[name] = answer
        first = answers["asgi-stack"]
        for name, answer in answers.items():
            assert answer[:2] == first[:2], name  # status and fields
            assert answer[3:] == first[3:], name  # what the app saw, the audit events
            if method == "GET":
                assert answer[2] == first[2] == row.code, name
        assert first[0] == row.status
        if row.document is not None and headers != "off":
            full = any(name == "permissions-policy" for name, _ in first[1])
            assert full == (row.document or headers == "full")


def build(sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "asgi-stack": asgi.SecurityStack(asgi_app, **sections),
        "asgi-layers": composed(asgi, asgi_app, sections),
        "wsgi-stack": wsgi.SecurityStack(wsgi_app, **sections),
        "wsgi-layers": composed(wsgi, wsgi_app, sections),
    }


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("name", ROWS)
def test_every_driver_answers_alike(name: str, headers: str, events: Any) -> None:
    """The row's answer, the same from both stacks and both sets of middlewares."""
    row = ROWS[name]
    if headers == "off" and row.status == 500:
        pytest.skip("without the headers layer the app's error reaches the server")
    loop = asyncio.new_event_loop()
    try:
        run_row(build({**SECTIONS, "headers": HEADERS[headers]}), row, events, loop, headers)
    finally:
        loop.close()


@pytest.mark.redis
def test_every_driver_answers_alike_on_redis(redis_url: str, events: Any) -> None:
    """With the counters in Redis (each app its own keys), and with Redis gone (503)."""

    def sections(uri: str) -> dict[str, Any]:
        limits = {"storage_uri": uri, "on_storage_error": "deny"}
        return {**SECTIONS, "rate_limit": {**SECTIONS["rate_limit"], **limits}}

    def apps(uri: str) -> dict[str, Any]:
        built = {}
        for name, make in {
            "asgi-stack": lambda s: asgi.SecurityStack(asgi_app, **s),
            "asgi-layers": lambda s: composed(asgi, asgi_app, s),
            "wsgi-stack": lambda s: wsgi.SecurityStack(wsgi_app, **s),
            "wsgi-layers": lambda s: composed(wsgi, wsgi_app, s),
        }.items():
            own = sections(uri)
            own["rate_limit"]["key_prefix"] = uuid.uuid4().hex[:16]
            built[name] = make(own)
        return built

    loop = asyncio.new_event_loop()
    gone = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: fail closed with 503
    try:
        live = apps(redis_url)
        for name in ("bearer", "bearer-wrong", "ip-refused", "rate-limited-address"):
            run_row(live, ROWS[name], events, loop)
        run_row(apps(gone), Row("/", 503, "rate_limit_unavailable", BEARER), events, loop)
    finally:
        loop.close()


# -- websocket handshakes (ASGI) ----------------------------------------------------------------

WEBSOCKET_ROWS = {
    "accepted": (BEARER, LOCAL, None),
    "auth-refused": ((("authorization", "Bearer nope"),), LOCAL, 401),
    "ip-refused": (BEARER, OUTSIDE, 403),
}


async def ws_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "websocket.accept"})


@pytest.mark.parametrize("extension", [False, True], ids=["close", "http-response"])
@pytest.mark.parametrize("name", WEBSOCKET_ROWS)
def test_websockets_are_refused_before_accept_alike(name: str, extension: bool) -> None:
    """Close 1008, or the problem as an HTTP response when the server offers the extension."""
    fields, client, status = WEBSOCKET_ROWS[name]
    extensions = {"websocket.http.response": {}} if extension else {}
    sent: list[list[dict[str, Any]]] = []
    for app in (asgi.SecurityStack(ws_app, **SECTIONS), composed(asgi, ws_app, SECTIONS)):
        recorder = Recorder()
        scope = http_scope(
            "/", type="websocket", headers=list(fields), client=client, extensions=extensions
        )
        asyncio.run(app(scope, empty_receive, recorder))
        sent.append(recorder.messages)
    assert sent[0] == sent[1]
    first = sent[0][0]
    if status is None:
        assert first == {"type": "websocket.accept"}
    elif extension:
        assert (first["type"], first["status"]) == ("websocket.http.response.start", status)
    else:
        assert (first["type"], first["code"]) == ("websocket.close", 1008)


def test_rows_cover_every_answer() -> None:
    """The table holds every kind of answer the layers give."""
    statuses: set[int] = {row.status for row in ROWS.values()}
    assert {200, 400, 401, 403, 429, 500} <= statuses
