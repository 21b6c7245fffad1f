"""IPFilterMiddleware on both sides, driven in-process (hand-built scopes, werkzeug's client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.test import Client

from secmw import audit
from secmw.asgi.ipfilter import IPFilterMiddleware as ASGIIPFilter
from secmw.config.settings import SecuritySettings
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ip.filter import IPFilter, IPPolicy
from secmw.wsgi.ipfilter import IPFilterMiddleware as WSGIIPFilter
from tests.support import Recorder, empty_receive, http_scope, run_asgi

PROBLEM = "application/problem+json"
BEHIND_PROXY = {"trusted_proxies": ["10.0.0.0/8"], "allow": ["198.51.100.0/24"]}


async def echo_client(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering with the client it sees as JSON."""
    body = json.dumps({"client": scope.get("client")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def wsgi_echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app answering with the REMOTE_ADDR it sees as JSON."""
    body = json.dumps({"client": environ.get("REMOTE_ADDR")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def asgi_call(
    ip: dict[str, Any],
    path: str = "/",
    client: tuple[str, int] | None = ("10.0.0.2", 4000),
    **kw: Any,
) -> tuple[Recorder, dict[str, Any]]:
    """Run the ASGI middleware once; return the recorded response and the scope."""
    scope = http_scope(path, client=client, **kw)
    return run_asgi(ASGIIPFilter(echo_client, ip=ip), scope), scope


def wsgi_call(
    ip: dict[str, Any], path: str = "/", remote: str | None = "10.0.0.2", **kw: Any
) -> Any:
    """Run the WSGI middleware once through wsgiref.validate; return werkzeug's response."""
    app = validator(WSGIIPFilter(validator(wsgi_echo), ip=ip))
    base = {} if remote is None else {"REMOTE_ADDR": remote}
    return Client(app).get(path, environ_base=base, buffered=True, **kw)


# -- ASGI ----------------------------------------------------------------------------------


def test_asgi_allows_and_rewrites_client() -> None:
    """An allowed client behind a trusted proxy reaches the app, which sees the real client."""
    recorder, scope = asgi_call(BEHIND_PROXY, headers=[("x-forwarded-for", "198.51.100.7")])
    assert recorder.status == 200
    assert json.loads(recorder.body) == {"client": ["198.51.100.7", 0]}
    view = RequestView.from_scope(scope)
    assert (view.peer, view.client) == ("10.0.0.2", "198.51.100.7")


def test_asgi_denies_with_problem_and_no_hint(events: list[audit.AuditEvent]) -> None:
    """A refused client gets 403 problem+json that names no network, and an audit event."""
    recorder, _ = asgi_call(BEHIND_PROXY, headers=[("x-forwarded-for", "203.0.113.5")])
    assert recorder.status == 403
    assert recorder.header_values("content-type") == [PROBLEM]
    body = recorder.body.decode()
    assert json.loads(body)["status"] == 403
    for network_text in ("198.51.100", "10.0.0", "203.0.113"):
        assert network_text not in body
    assert [(e.name, e.client, e.reason, e.rule) for e in events] == [
        ("ip.denied", "203.0.113.5", "address not in allow list", "*")
    ]


def test_asgi_spoofed_header_from_untrusted_peer_is_ignored() -> None:
    """An untrusted peer cannot talk its way in with X-Forwarded-For."""
    recorder, scope = asgi_call(
        BEHIND_PROXY, client=("203.0.113.5", 4000), headers=[("x-forwarded-for", "198.51.100.7")]
    )
    assert recorder.status == 403
    assert scope["client"] == ("203.0.113.5", 4000)


def test_asgi_canonical_peer_keeps_its_port() -> None:
    """A mapped IPv6 peer is rewritten to its IPv4 form, port kept."""
    recorder, _ = asgi_call({}, client=("::ffff:198.51.100.7", 4242))
    assert json.loads(recorder.body) == {"client": ["198.51.100.7", 4242]}


def test_asgi_unknown_client_rewritten_to_none() -> None:
    """A garbage header from a trusted proxy makes the client unknown for the app too."""
    recorder, _ = asgi_call({"trusted_proxies": ["10.0.0.0/8"]}, headers=[("x-forwarded-for", "x")])
    assert recorder.status == 200
    assert json.loads(recorder.body) == {"client": None}


def test_asgi_rewrite_can_be_turned_off() -> None:
    """With rewrite_client off the app sees the peer; secmw layers still see the client."""
    recorder, scope = asgi_call(
        {**BEHIND_PROXY, "rewrite_client": False}, headers=[("x-forwarded-for", "198.51.100.7")]
    )
    assert json.loads(recorder.body) == {"client": ["10.0.0.2", 4000]}
    assert RequestView.from_scope(scope).client == "198.51.100.7"


def test_asgi_no_peer_is_not_allowlisted() -> None:
    """A scope without a client address is refused by an allow list."""
    recorder, _ = asgi_call({"allow": ["127.0.0.1"]}, client=None)
    assert recorder.status == 403


def test_asgi_per_path_rules() -> None:
    """A rule guards its paths only; normalized paths cannot dodge it."""
    ip = {"rules": {"/internal/*": {"allow": ["127.0.0.1"]}}}
    assert asgi_call(ip, "/internal/status", client=("127.0.0.1", 1))[0].status == 200
    assert asgi_call(ip, "/internal/status", client=("192.0.2.1", 1))[0].status == 403
    assert asgi_call(ip, "//internal//status", client=("192.0.2.1", 1))[0].status == 403
    assert asgi_call(ip, "//internal/./status", client=("192.0.2.1", 1))[0].status == 400
    assert asgi_call(ip, "/public", client=("192.0.2.1", 1))[0].status == 200


def test_asgi_websocket_refused_before_accept() -> None:
    """A refused websocket handshake is closed with 1008 (or answered 403 with the extension)."""
    mw = ASGIIPFilter(echo_client, ip={"allow": ["10.0.0.0/8"]})
    closed = run_asgi(mw, http_scope(type="websocket", client=("192.0.2.1", 1)))
    assert closed.messages == [
        {
            "type": "websocket.close",
            "code": 1008,
            "reason": "Access from this address is not allowed.",
        }
    ]
    extension: dict[str, Any] = {"websocket.http.response": {}}
    scope = http_scope(type="websocket", client=("192.0.2.1", 1), extensions=extension)
    answered = run_asgi(mw, scope)
    assert answered.messages[0]["type"] == "websocket.http.response.start"
    assert answered.status == 403


def test_asgi_websocket_allowed_reaches_app() -> None:
    """An allowed websocket handshake reaches the app."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = ASGIIPFilter(app, ip={"allow": ["10.0.0.0/8"]})
    asyncio.run(mw(http_scope(type="websocket", client=("10.1.1.1", 1)), empty_receive, Recorder()))
    assert seen == ["websocket"]


def test_asgi_lifespan_passes_through() -> None:
    """Lifespan scopes reach the app untouched, even with a closed allow list."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(ASGIIPFilter(app, ip={"allow": ["10.0.0.0/8"]})(scope, empty_receive, Recorder()))
    assert seen == [{"type": "lifespan", "asgi": {"version": "3.0"}}]


def test_asgi_disabled_does_nothing() -> None:
    """With enabled=false the request passes and the client is not resolved."""
    recorder, scope = asgi_call({**BEHIND_PROXY, "enabled": False}, client=("192.0.2.1", 1))
    assert recorder.status == 200
    assert "secmw.request" not in scope


def test_asgi_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no arguments, the middleware reads SECMW_IP__*."""
    monkeypatch.setenv("SECMW_IP__DENY", "192.0.2.0/24")
    mw = ASGIIPFilter(echo_client)
    assert run_asgi(mw, http_scope(client=("192.0.2.1", 1))).status == 403
    assert run_asgi(mw, http_scope(client=("192.0.3.1", 1))).status == 200


def test_ready_filter_and_explicit_settings() -> None:
    """An IPFilter object or a SecuritySettings object can be passed instead of overrides."""
    ready = IPFilter(policy=IPPolicy(deny=["192.0.2.0/24"]))
    assert (
        run_asgi(
            ASGIIPFilter(echo_client, ip_filter=ready), http_scope(client=("192.0.2.1", 1))
        ).status
        == 403
    )
    explicit = SecuritySettings(ip={"allow": ["192.0.2.0/24"]})
    response = Client(WSGIIPFilter(wsgi_echo, settings=explicit)).get(
        "/", environ_base={"REMOTE_ADDR": "192.0.3.1"}
    )
    assert response.status_code == 403


# -- WSGI ----------------------------------------------------------------------------------


def test_wsgi_allows_and_rewrites_remote_addr() -> None:
    """An allowed client behind a trusted proxy reaches the app with REMOTE_ADDR rewritten."""
    response = wsgi_call(BEHIND_PROXY, headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.7"})
    assert response.status_code == 200
    assert response.json == {"client": "198.51.100.7"}


def test_wsgi_denies_with_problem_and_no_hint(events: list[audit.AuditEvent]) -> None:
    """A refused client gets 403 problem+json naming no network, and an audit event."""
    response = wsgi_call(BEHIND_PROXY, headers={"X-Forwarded-For": "203.0.113.5"})
    assert response.status_code == 403
    assert response.content_type == PROBLEM
    for network_text in ("198.51.100", "10.0.0", "203.0.113"):
        assert network_text not in response.text
    assert [(e.name, e.client) for e in events] == [("ip.denied", "203.0.113.5")]


def test_wsgi_unknown_client_empties_remote_addr() -> None:
    """An unknown client leaves an empty REMOTE_ADDR for the app."""
    response = wsgi_call(
        {"trusted_proxies": ["10.0.0.0/8"]}, headers={"X-Forwarded-For": "unknown"}
    )
    assert response.json == {"client": ""}


def test_wsgi_no_remote_addr_is_not_allowlisted() -> None:
    """An environ without REMOTE_ADDR is refused by an allow list, allowed without one."""
    assert wsgi_call({"allow": ["127.0.0.1"]}, remote=None).status_code == 403
    assert wsgi_call({}, remote=None).status_code == 200


def test_wsgi_per_path_rules_and_disabled() -> None:
    """Rules guard their paths only; enabled=false lets everything through."""
    ip = {"rules": {"/internal/*": {"allow": ["127.0.0.1"]}}}
    assert wsgi_call(ip, "/internal/x", remote="127.0.0.1").status_code == 200
    assert wsgi_call(ip, "/internal/x", remote="192.0.2.1").status_code == 403
    assert wsgi_call(ip, "/public", remote="192.0.2.1").status_code == 200
    assert wsgi_call({**ip, "enabled": False}, "/internal/x", remote="192.0.2.1").status_code == 200


# -- both sides ----------------------------------------------------------------------------

GARBAGE = [
    pytest.param("abc", id="abc"),
    pytest.param("999.1.1.1", id="bad-octet"),
    pytest.param(",,,", id="commas"),
    pytest.param("198.51.100.7,,", id="empty-items"),
    pytest.param(", ".join(["198.51.100.7"] * 10_000), id="10000-entries"),
    pytest.param("9" * 65_536, id="64k"),
    pytest.param("[2001:db8::1]:443, 2001:db8::1, ::ffff:198.51.100.7", id="ipv6-forms"),
    pytest.param("::198.51.100.7", id="compatible"),
    pytest.param('for="[2001:db8::1]:443";proto=https, For=unknown, for=_hidden', id="rfc7239"),
    pytest.param('"\\"', id="quotes"),
]


@pytest.mark.parametrize("value", GARBAGE)
@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_bad_input_never_500(header: str, value: str) -> None:
    """Garbage from trusted and untrusted peers gives 200 or 403 problem+json on both sides."""
    ip = {**BEHIND_PROXY, "proxy_header": header}
    for peer in ("10.0.0.2", "203.0.113.5"):
        recorder, _ = asgi_call(ip, client=(peer, 1), headers=[(header, value)])
        response = wsgi_call(ip, remote=peer, headers={header: value})
        assert recorder.status == response.status_code
        assert recorder.status in (200, 403)
        if recorder.status == 403:
            assert recorder.header_values("content-type") == [PROBLEM]
            assert response.content_type == PROBLEM


@pytest.mark.parametrize("side", [ASGIIPFilter, WSGIIPFilter], ids=["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("ip", "variable"),
    [
        pytest.param({"allow": ["10.0.0.1/8"]}, "SECMW_IP__ALLOW", id="host-bits"),
        pytest.param({"trusted_proxies": "nginx"}, "SECMW_IP__TRUSTED_PROXIES", id="proxy"),
        pytest.param({"rules": '{"/a": {"deny": ["x"]}}'}, "SECMW_IP__RULES", id="rules"),
    ],
)
def test_bad_configuration_fails_at_construction(
    side: Any, ip: dict[str, Any], variable: str
) -> None:
    """A malformed setting raises ConfigurationError naming the variable, before any request."""
    with pytest.raises(ConfigurationError, match=variable):
        side(echo_client, ip=ip)
