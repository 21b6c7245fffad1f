"""One table of raw requests, run against the ASGI and the WSGI ``SecurityStack`` on the same
settings: each row must get the same status, the same ``WWW-Authenticate`` challenges and the
same problem ``code`` on both sides, and its ``HEAD`` twin the same answer with no body.

The ASGI side gets the header fields exactly as listed (a scope's raw pairs, repeated fields
kept apart); the WSGI side goes through werkzeug's test client, which joins repeated fields with
a comma into one environ entry, as WSGI servers do. Rows come in both shapes (two fields, one
field holding a comma) because a WSGI app cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, NamedTuple

import pytest
from werkzeug.test import Client

from secmw import asgi, hash_api_key, hash_password, wsgi
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

KEY, OTHER_KEY = "k" * 32, "w" * 32
TOKEN, OTHER_TOKEN = make_token(), make_token(sub="user-2")
BASIC = base64.b64encode(b"alice:pw").decode()
WRONG_BASIC = base64.b64encode(b"alice:nope").decode()
SESSION, OTHER_SESSION = "a" * 43, "b" * 43  # well formed, unknown to the store
SETTINGS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc"}]},
    "basic": {"users": {"alice": {"password_hash": hash_password("pw")}}},
    "auth": {"required": ["/me"], "order": ["bearer", "apikey", "basic", "session"]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "", "rules": [{"path": "/limited", "limit": "1/minute"}]},
}
Fields = tuple[tuple[str, str], ...]


class Row(NamedTuple):
    """A request and the answer both sides must give it."""

    fields: Fields
    status: int
    code: str | None = None
    query: str = ""
    path: str = "/me"
    prime: int = 0  # identical requests sent first (to fill a rate limit)


def auth(*values: str) -> Fields:
    return tuple(("Authorization", value) for value in values)


def api_key(*values: str) -> Fields:
    return tuple(("X-API-Key", value) for value in values)


def cookie(*values: str) -> Fields:
    return tuple(("Cookie", value) for value in values)


BAD_REQUEST = (400, "invalid_request")
ROWS: dict[str, Row | Any] = {
    # -- Authorization: Bearer ------------------------------------------------------------------
    "bearer": Row(auth(f"Bearer {TOKEN}"), 200),
    "bearer-wrong": Row(auth("Bearer x.y.z"), 401, "invalid_token"),
    "bearer-twice-equal": Row(auth(f"Bearer {TOKEN}", f"Bearer {TOKEN}"), *BAD_REQUEST),
    "bearer-twice-differ": Row(auth(f"Bearer {TOKEN}", f"Bearer {OTHER_TOKEN}"), *BAD_REQUEST),
    "bearer-comma-joined": Row(auth(f"Bearer {TOKEN}, Bearer {OTHER_TOKEN}"), *BAD_REQUEST),
    "bearer-and-basic": Row(auth(f"Bearer {TOKEN}", f"Basic {BASIC}"), *BAD_REQUEST),
    "bearer-trailing-comma": Row(auth(f"Bearer {TOKEN},"), *BAD_REQUEST),
    "bearer-sp-before": Row(auth(f" Bearer {TOKEN}"), 200),
    "bearer-sp-after": Row(auth(f"Bearer {TOKEN} "), 200),
    "bearer-htab-before": Row(auth(f"\tBearer {TOKEN}"), 200),
    "bearer-htab-after": Row(auth(f"Bearer {TOKEN}\t"), 200),
    "bearer-htab-both": Row(auth(f"\t Bearer {TOKEN} \t"), 200),
    "bearer-htab-between": Row(auth(f"Bearer\t{TOKEN}"), *BAD_REQUEST),
    "bearer-two-tokens": Row(auth(f"Bearer {TOKEN} {TOKEN}"), *BAD_REQUEST),
    "bearer-empty": Row(auth("Bearer"), *BAD_REQUEST),
    "unsupported-scheme": Row(auth("Digest x"), 401, "invalid_credentials"),
    # -- Authorization: Basic -------------------------------------------------------------------
    "basic": Row(auth(f"Basic {BASIC}"), 200),
    "basic-wrong": Row(auth(f"Basic {WRONG_BASIC}"), 401, "invalid_credentials"),
    "basic-twice-equal": Row(auth(f"Basic {BASIC}", f"Basic {BASIC}"), *BAD_REQUEST),
    "basic-twice-differ": Row(auth(f"Basic {BASIC}", f"Basic {WRONG_BASIC}"), *BAD_REQUEST),
    "basic-comma-joined": Row(auth(f"Basic {BASIC}, Basic {WRONG_BASIC}"), *BAD_REQUEST),
    "basic-htab-after": Row(auth(f"Basic {BASIC}\t"), 200),
    "basic-sp-before": Row(auth(f" Basic {BASIC}"), 200),
    # -- X-API-Key ------------------------------------------------------------------------------
    "key": Row(api_key(KEY), 200),
    "key-wrong": Row(api_key(OTHER_KEY), 401, "invalid_credentials"),
    "key-twice-equal": Row(api_key(KEY, KEY), *BAD_REQUEST),
    "key-twice-differ": Row(api_key(KEY, OTHER_KEY), *BAD_REQUEST),
    "key-comma-joined": Row(api_key(f"{KEY}, {OTHER_KEY}"), *BAD_REQUEST),
    "key-comma-joined-equal": Row(api_key(f"{KEY},{KEY}"), *BAD_REQUEST),
    "key-sp-around": Row(api_key(f" {KEY} "), 200),
    "key-htab-around": Row(api_key(f"\t{KEY}\t"), 200),
    "key-empty": Row(api_key(""), 401, "invalid_credentials"),
    # -- api_key in the query -------------------------------------------------------------------
    "query": Row((), 200, query=f"api_key={KEY}"),
    "query-twice-equal": Row((), *BAD_REQUEST, query=f"api_key={KEY}&api_key={KEY}"),
    "query-twice-differ": Row((), *BAD_REQUEST, query=f"api_key={KEY}&api_key={OTHER_KEY}"),
    "query-comma": Row((), *BAD_REQUEST, query=f"api_key={KEY},{OTHER_KEY}"),
    "header-and-query-agree": Row(api_key(KEY), *BAD_REQUEST, query=f"api_key={KEY}"),
    "header-and-query-differ": Row(api_key(KEY), *BAD_REQUEST, query=f"api_key={OTHER_KEY}"),
    "query-right-header-wrong": Row(api_key(OTHER_KEY), *BAD_REQUEST, query=f"api_key={KEY}"),
    # -- Cookie session -------------------------------------------------------------------------
    "session-unknown": Row(cookie(f"__Host-session={SESSION}"), 401, "invalid_session"),
    "session-twice-equal": Row(
        cookie(f"__Host-session={SESSION}", f"__Host-session={SESSION}"), *BAD_REQUEST
    ),
    "session-split-fields": Row(
        cookie(f"__Host-session={SESSION}", "theme=dark"), 401, "invalid_session"
    ),
    "session-twice-differ": Row(
        cookie(f"__Host-session={SESSION}", f"__Host-session={OTHER_SESSION}"), *BAD_REQUEST
    ),
    "session-twice-one-field": Row(
        cookie(f"__Host-session={SESSION}; __Host-session={OTHER_SESSION}"), *BAD_REQUEST
    ),
    # -- the other refusals ---------------------------------------------------------------------
    "no-credential": Row((), 401, "authentication_required"),
    "ip-refused": Row((), 403, "ip_not_allowed", path="/internal/status"),
    "rate-limited": Row((), 429, "rate_limited", path="/limited", prime=1),
    "dot-segments": Row((), 400, "invalid_path", path="/public/../me"),
    "app-error": Row((), 500, "internal_error", path="/boom"),
    "public": Row((), 200, path="/public"),
}


class Answer(NamedTuple):
    status: int
    challenges: tuple[str, ...]
    code: str | None
    body: bytes
    content_length: str | None


def _code(status: int, body: bytes) -> str | None:
    return json.loads(body).get("code") if status >= 400 and body else None


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app failed")
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def call_asgi(app: Any, method: str, row: Row) -> Answer:
    """The ASGI stack on a scope holding the fields as listed."""
    scope = http_scope(row.path, method=method, headers=list(row.fields))
    scope["query_string"] = row.query.encode()
    recorder = Recorder()
    try:
        asyncio.run(app(scope, empty_receive, recorder))
    except RuntimeError:  # the app's error, re-raised to the server after the 500 went out
        assert recorder.messages, "no answer before the error"
    headers = dict(recorder.headers)
    return Answer(
        recorder.status,
        tuple(recorder.header_values("www-authenticate")),
        _code(recorder.status, recorder.body),
        recorder.body,
        headers.get("content-length"),
    )


def call_wsgi(client: Client, method: str, row: Row) -> Answer:
    """The WSGI stack through werkzeug's test client (repeated fields joined with a comma)."""
    response = client.open(
        row.path,
        method=method,
        headers=list(row.fields),
        query_string=row.query,
        environ_overrides={"REMOTE_ADDR": "127.0.0.1"},
    )
    body = response.get_data()
    return Answer(
        response.status_code,
        tuple(response.headers.getlist("WWW-Authenticate")),
        _code(response.status_code, body),
        body,
        response.headers.get("Content-Length"),
    )


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_both_sides_answer_alike(row: Row) -> None:
    """Same status, challenges and problem code on both sides; HEAD the same, with no body."""
    asgi_app = asgi.SecurityStack(_asgi_app, **SETTINGS)
    client = Client(wsgi.SecurityStack(_wsgi_app, **SETTINGS), use_cookies=False)
    for _ in range(row.prime):
        call_asgi(asgi_app, "GET", row), call_wsgi(client, "GET", row)
    get_a, get_w = call_asgi(asgi_app, "GET", row), call_wsgi(client, "GET", row)
    assert get_a[:3] == get_w[:3]  # status, challenges, problem code
    assert (get_a.status, get_a.code) == (row.status, row.code)
    head_a, head_w = call_asgi(asgi_app, "HEAD", row), call_wsgi(client, "HEAD", row)
    for get, head in ((get_a, head_a), (get_w, head_w)):
        assert (head.status, head.challenges) == (get.status, get.challenges)
        if row.status >= 400:  # a refusal by the stack: no body (RFC 9110 §9.3.2)
            assert (head.body, head.content_length) == (b"", get.content_length)
