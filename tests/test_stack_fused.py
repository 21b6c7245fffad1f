"""``SecurityStack`` runs an http request through its layers in one call; the middlewares
composed (``stack._entry``) must answer every request exactly alike: status, headers in order,
body, audit events and what the app saw."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from secmw import current_principal, hash_api_key
from secmw.asgi import SecurityStack
from secmw.asgi._util import closing_on_shutdown
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.core.context import current_csp_nonce
from secmw.wsgi import SecurityStack as WSGIStack
from tests.redis_support import clients_after_closing, connected_clients, free_port
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

KEY = "k" * 32
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc", "scopes": ["r"]}]},
    "auth": {"required": ["/private/*"]},
    "ip": {"allow": ["127.0.0.0/8", "10.0.0.0/8"], "rules": {"/lan/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "100/minute", "rules": [{"path": "/tight", "limit": "3/minute"}]},
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Echo what the app can see, answer 401 on /own-401, raise on /boom."""
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    status = 401 if path == "/own-401" else 200
    nonce = "nonce" if current_csp_nonce() else "-"
    seen = f"{current_principal().id}|{scope['client']}|{scope['user'].identity}|{nonce}"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": seen.encode()})


def run(
    stack: Any, scope: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None
) -> tuple[int, list[tuple[str, str]], bytes, str]:
    recorder = Recorder()
    error = ""
    try:
        call = stack(scope, empty_receive, recorder)
        loop.run_until_complete(call) if loop else asyncio.run(call)
    except RuntimeError as exc:
        error = str(exc)
    if not recorder.messages:  # the app raised and no headers layer answered for it
        return 0, [], b"", error
    return recorder.status, unnonced(recorder.headers), recorder.body, error


def unnonced(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with each request's fresh CSP nonce replaced by one placeholder."""
    return [(name, re.sub(r"'nonce-[^']+'", "'nonce-N'", value)) for name, value in headers]


def requests() -> list[dict[str, Any]]:
    token = make_token(scope="read")
    bearer = [("authorization", f"Bearer {token}")]
    return [
        http_scope("/", headers=bearer),
        http_scope("/private/x"),
        http_scope("/private/x", headers=bearer),
        http_scope("/", headers=[("authorization", "Bearer nope")]),
        http_scope("/", headers=[("authorization", "Bearer a b")]),
        http_scope("/", headers=[("authorization", "Digest x")]),
        http_scope("/", headers=[("x-api-key", KEY)]),
        http_scope("/", headers=[("x-api-key", "wrong")]),
        http_scope("/", client=("203.0.113.9", 1), headers=bearer),
        http_scope("/lan/a", headers=bearer),
        http_scope("/a/../private/x", headers=bearer),
        http_scope("/own-401"),
        http_scope("/own-401", headers=bearer),
        http_scope("/boom", headers=bearer),
        http_scope(
            "/",
            method="OPTIONS",
            headers=[("origin", "https://a.example"), ("access-control-request-method", "GET")],
        ),
        *(http_scope("/tight", client=("10.1.1.1", 1)) for _ in range(5)),
        *(http_scope("/tight", client=("10.2.2.2", 1), headers=bearer) for _ in range(5)),
        http_scope("/", scheme="https", headers=bearer),
    ]


HEADERS = {
    "default": {},
    "off": {"enabled": False},
    "nonce": {"csp": {"default-src": ["'none'"], "script-src": ["'self'", "'nonce'"]}},
}


def compare(
    fused: Any, composed: Any, events: Any, loop: asyncio.AbstractEventLoop | None = None
) -> tuple[list[int], list[tuple[int, list[tuple[str, str]], bytes, str]]]:
    """Every request through both; what they answered alike (statuses, answers)."""
    assert fused._fused
    answers = []
    for scope in requests():
        events.clear()
        one = run(fused, dict(scope), loop)
        fused_events = [event.as_dict() for event in events]
        events.clear()
        other = run(composed._entry, dict(scope), loop)
        assert one == other, scope["path"]
        assert fused_events == [event.as_dict() for event in events], scope["path"]
        answers.append(one)
    return [answer[0] for answer in answers], answers


@pytest.mark.parametrize("headers", HEADERS)
def test_one_call_answers_as_the_layers_composed(headers: str, events: Any) -> None:
    headers_enabled = headers != "off"
    sections = {**SECTIONS, "headers": HEADERS[headers]}
    statuses, answers = compare(
        SecurityStack(app, **sections), SecurityStack(app, **sections), events
    )
    assert any(body.endswith(b"|nonce") for _, _, body, _ in answers) is (headers == "nonce")
    # The matrix covers every kind of answer of the layers.
    expected = {200, 400, 401, 403, 429, 500 if headers_enabled else 0}
    assert expected <= set(statuses)


@pytest.mark.redis
def test_one_call_answers_as_the_layers_composed_on_redis(redis_url: str, events: Any) -> None:
    """With the counters in Redis (each stack its own keys), and with Redis gone (503)."""

    def stack(name: str, uri: str = redis_url) -> SecurityStack:
        limits = {
            "storage_uri": uri,
            "key_prefix": f"{uuid.uuid4().hex[:16]}-{name}",
            "on_storage_error": "deny",
        }
        return SecurityStack(
            app, **{**SECTIONS, "rate_limit": {**SECTIONS["rate_limit"], **limits}}
        )

    loop = asyncio.new_event_loop()
    gone = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: fail closed with 503
    stacks = [stack("f"), stack("c"), stack("f", gone), stack("c", gone)]
    try:
        statuses, answers = compare(*stacks[:2], events, loop)
        assert {200, 401, 403, 429} <= set(statuses)
        assert any(("ratelimit", '"default";r=99;t=60') in headers for _, headers, _, _ in answers)
        statuses, _ = compare(*stacks[2:], events, loop)
        assert 503 in statuses
    finally:
        for each in stacks:
            loop.run_until_complete(each.aclose())
        loop.close()


def closes_its_clients(
    redis_url: str,
    serve: Callable[[dict[str, Any]], int],
    close: Callable[[], object],
    answers: tuple[int, int] = (200, 401),
    opened: int = 2,
) -> None:
    """A valid and a bad token open the rate limiter's and the throttle's Redis connections
    (``opened``); ``close`` closes them (the server counts its clients)."""
    import redis

    probe = redis.Redis.from_url(redis_url)
    try:
        before = connected_clients(probe)
        token = make_token(scope="read")
        ok = serve(http_scope("/", headers=[("authorization", f"Bearer {token}")]))
        bad = serve(http_scope("/", headers=[("authorization", "Bearer nope")]))
        assert (ok, bad) == answers
        assert connected_clients(probe) >= before + opened
        close()
        assert clients_after_closing(probe, before) == before
    finally:
        probe.close()


def with_lifespan(inner: Any) -> Any:
    """``inner``, with the lifespan protocol answered as frameworks answer it."""

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await inner(scope, receive, send)
            return
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    return lifespan_app


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def lifespan_cycle(asgi: Any) -> list[str]:
    """Start up and shut down ``asgi`` as a server does; the message types it sent back."""
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await asgi({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


def redis_sections(redis_url: str) -> dict[str, Any]:
    return {**SECTIONS, "rate_limit": {**SECTIONS["rate_limit"], "storage_uri": redis_url}}


@pytest.mark.redis
def test_the_stack_closes_its_redis_clients(redis_url: str) -> None:
    """``aclose`` closes the connections of the rate-limit layer and of the throttle."""
    stack = SecurityStack(app, **redis_sections(redis_url))
    loop = asyncio.new_event_loop()
    try:
        closes_its_clients(
            redis_url,
            lambda scope: run(stack, scope, loop)[0],
            lambda: loop.run_until_complete(stack.aclose()),
        )
    finally:
        loop.close()


@pytest.mark.redis
def test_the_stack_closes_its_redis_clients_when_the_app_shuts_down(redis_url: str) -> None:
    """No code of the app's: the lifespan shutdown closes them (``add_middleware`` works)."""
    stack = SecurityStack(with_lifespan(app), **redis_sections(redis_url))
    loop = asyncio.new_event_loop()
    shutdown: list[str] = []
    try:
        closes_its_clients(
            redis_url,
            lambda scope: run(stack, scope, loop)[0],
            lambda: shutdown.extend(loop.run_until_complete(lifespan_cycle(stack))),
        )
    finally:
        loop.close()
    assert shutdown == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.redis
def test_the_rate_limit_layer_closes_its_client_when_the_app_shuts_down(redis_url: str) -> None:
    limits = redis_sections(redis_url)["rate_limit"]
    limited = RateLimitMiddleware(with_lifespan(ok_app), rate_limit=limits)
    loop = asyncio.new_event_loop()
    try:
        closes_its_clients(
            redis_url,
            lambda scope: run(limited, scope, loop)[0],
            lambda: loop.run_until_complete(lifespan_cycle(limited)),
            answers=(200, 200),
            opened=1,
        )
    finally:
        loop.close()


def test_a_failed_close_does_not_stop_the_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    """Closing is best effort: the failure is logged by type, the server still hears back."""

    async def close() -> None:
        raise ConnectionError("redis://user:secret@127.0.0.1:1/0 is gone")

    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    closing = closing_on_shutdown(send, close)
    asyncio.run(closing({"type": "lifespan.shutdown.complete"}))
    assert sent == ["lifespan.shutdown.complete"]
    assert "closing the Redis connections failed: ConnectionError" in caplog.text
    assert "secret" not in caplog.text


# -- WSGI ---------------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The WSGI twin of ``app``."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    nonce = "nonce" if environ.get("secmw.csp_nonce") else "-"
    seen = f"{current_principal().id}|{environ.get('REMOTE_ADDR')}|{nonce}"
    start_response("401 Unauthorized" if path == "/own-401" else "200 OK", [])
    return [seen.encode()]


def wsgi_run(stack: Any, scope: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes, str]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "PATH_INFO": scope["path"],
        "QUERY_STRING": "",
        "wsgi.url_scheme": scope["scheme"],
    }
    setup_testing_defaults(environ)
    environ["REMOTE_ADDR"] = scope["client"][0]
    for name, value in scope["headers"]:
        environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode()
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, headers
        return lambda data: None

    try:
        body = b"".join(stack(environ, start_response))
    except RuntimeError as exc:
        return "", [], b"", str(exc)
    return seen["status"], unnonced(seen["headers"]), body, ""


@pytest.mark.parametrize("headers", HEADERS)
def test_wsgi_one_call_answers_as_the_layers_composed(headers: str, events: Any) -> None:
    sections = {**SECTIONS, "headers": HEADERS[headers]}
    fused, composed = WSGIStack(wsgi_app, **sections), WSGIStack(wsgi_app, **sections)
    answers: list[str] = []
    bodies: list[bytes] = []
    for scope in requests():
        events.clear()
        one = wsgi_run(fused, scope)
        fused_events = [event.as_dict() for event in events]
        events.clear()
        other = wsgi_run(composed._entry, scope)
        assert one == other, scope["path"]
        assert fused_events == [event.as_dict() for event in events], scope["path"]
        answers.append(one[0][:3])
        bodies.append(one[2])
    assert any(body.endswith(b"|nonce") for body in bodies) is (headers == "nonce")
    expected = {"200", "400", "401", "403", "429", "500" if headers != "off" else ""}
    assert expected <= set(answers)


@pytest.mark.redis
def test_the_wsgi_stack_closes_its_redis_clients(redis_url: str) -> None:
    """``close`` closes the connections of the rate-limit layer and of the throttle."""
    stack = WSGIStack(wsgi_app, **redis_sections(redis_url))
    closes_its_clients(redis_url, lambda scope: int(wsgi_run(stack, scope)[0][:3]), stack.close)
