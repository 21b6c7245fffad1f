"""RateLimitMiddleware on ASGI and WSGI, and the failed-authentication throttle, in process."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from secmw import Principal
from secmw.asgi.auth import AuthenticationMiddleware as ASGIAuth
from secmw.asgi.ratelimit import RateLimitMiddleware as ASGIRateLimit
from secmw.auth.base import AuthChain, Credential
from secmw.auth.throttle import AsyncFailedAuthThrottle, FailedAuthThrottle
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.wsgi.auth import AuthenticationMiddleware as WSGIAuth
from secmw.wsgi.ratelimit import RateLimitMiddleware as WSGIRateLimit
from tests.redis_support import free_port
from tests.support import Recorder, empty_receive, http_scope, run_asgi

LIMITED: dict[str, Any] = {"rate_limit": {"default": "2/minute", "strategy": "fixed-window"}}


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers in two body chunks, so buffering would show."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"he", "more_body": True})
    await send({"type": "http.response.body", "body": b"llo"})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A plain WSGI app."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
    return [b"hello"]


def wsgi_call(app: Any, path: str = "/", client: str | None = "198.51.100.7") -> tuple[str, Any]:
    """Call a WSGI app (under wsgiref's validator); return status and headers."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, headers
        return lambda data: None

    environ: dict[str, Any] = {"PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    if client:
        environ["REMOTE_ADDR"] = client
    body = validator(app)(environ, start_response)
    seen["body"] = b"".join(body)
    body.close()  # type: ignore[attr-defined]
    return seen["status"], seen


# -- ASGI --------------------------------------------------------------------------------------


def test_asgi_adds_fields_on_start_without_buffering() -> None:
    """Fields join the app's headers on http.response.start; body chunks pass unchanged."""
    app = ASGIRateLimit(streaming_app, **LIMITED)
    recorder = run_asgi(app, http_scope("/"))
    assert [m["type"] for m in recorder.messages] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    assert recorder.messages[1]["more_body"] is True
    assert recorder.header_values("x-app") == ["1"]
    assert recorder.header_values("ratelimit") == ['"default";r=1;t=60']
    assert recorder.header_values("ratelimit-policy") == ['"default";q=2;w=60']


def test_asgi_refuses_with_429_problem_and_retry_after() -> None:
    """Over the limit: 429 problem+json, Retry-After, the fields; the app is not called."""
    app = ASGIRateLimit(streaming_app, **LIMITED)
    for _ in range(2):
        assert run_asgi(app, http_scope("/")).status == 200
    refused = run_asgi(app, http_scope("/"))
    assert refused.status == 429
    assert refused.header_values("content-type") == ["application/problem+json"]
    assert int(refused.header_values("retry-after")[0]) >= 59
    assert refused.header_values("x-app") == []
    assert json.loads(refused.body)["code"] == "rate_limited"


def websocket_scope(extensions: dict[str, Any] | None) -> dict[str, Any]:
    """A websocket handshake scope."""
    return http_scope("/ws", type="websocket", extensions=extensions)


@pytest.mark.parametrize(
    ("extensions", "first"),
    [
        pytest.param({"websocket.http.response": {}}, "websocket.http.response.start", id="http"),
        pytest.param(None, "websocket.close", id="close"),
    ],
)
def test_asgi_websocket_is_limited_at_connect(
    extensions: dict[str, Any] | None, first: str
) -> None:
    """A handshake over the limit is refused before accept (HTTP 429 or close 1008)."""
    called: list[str] = []

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])
        await send({"type": "websocket.accept"})

    app = ASGIRateLimit(ws_app, rate_limit={"default": "1/minute"})
    assert run_asgi(app, websocket_scope(extensions)).messages[0]["type"] == "websocket.accept"
    refused = run_asgi(app, websocket_scope(extensions))
    assert refused.messages[0]["type"] == first
    assert called == ["websocket"]
    if first == "websocket.close":
        assert refused.messages[0]["code"] == 1008
    else:
        assert refused.messages[0]["status"] == 429


def test_asgi_lifespan_passes_through_untouched() -> None:
    """Lifespan scopes reach the app with the very same callables (memory storage: nothing to
    close at shutdown)."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([scope["type"], receive, send])

    recorder = Recorder()
    asyncio.run(ASGIRateLimit(app, **LIMITED)({"type": "lifespan"}, empty_receive, recorder))
    assert seen == ["lifespan", empty_receive, recorder]


@pytest.mark.parametrize(
    ("settings", "path", "client", "status", "fields"),
    [
        pytest.param({"enabled": False}, "/", "198.51.100.7", 200, False, id="disabled"),
        pytest.param({"exempt": {"paths": ["/health"]}}, "/health", "198.51.100.7", 200, False),
        pytest.param({"headers": "none"}, "/", "198.51.100.7", 200, False, id="headers-none"),
        pytest.param({}, "/", None, 403, False, id="unidentified"),
        pytest.param({"default": ""}, "/", None, 200, False, id="no-limits"),
    ],
)
def test_asgi_cases(
    settings: dict[str, Any], path: str, client: str | None, status: int, fields: bool
) -> None:
    """Disabled, exempt, no fields, unidentified client, nothing to limit."""
    app = ASGIRateLimit(streaming_app, rate_limit=settings)
    scope = http_scope(path, client=(client, 1) if client else None)
    recorder = run_asgi(app, scope)
    assert recorder.status == status
    assert bool(recorder.header_values("ratelimit")) is fields


@pytest.mark.parametrize(
    ("policy", "status", "fields"),
    [
        pytest.param("memory", 200, True, id="memory"),
        pytest.param("allow", 200, False, id="allow"),
        pytest.param("deny", 503, False, id="deny"),
    ],
)
def test_storage_down_policies_on_both_adapters(policy: str, status: int, fields: bool) -> None:
    """A Redis refusing connections: memory limits, pass without fields, or 503; never 500."""
    settings = {
        "storage_uri": f"redis://127.0.0.1:{free_port()}/0",
        "on_storage_error": policy,
    }
    asgi = run_asgi(ASGIRateLimit(streaming_app, rate_limit=settings), http_scope("/"))
    assert asgi.status == status
    assert bool(asgi.header_values("ratelimit")) is fields
    wsgi_status, seen = wsgi_call(WSGIRateLimit(wsgi_app, rate_limit=settings))
    assert wsgi_status.startswith(str(status))
    assert any(name == "ratelimit" for name, _ in seen["headers"]) is fields


# -- WSGI --------------------------------------------------------------------------------------


def test_wsgi_adds_fields_and_refuses_with_429() -> None:
    """Fields at start_response; over the limit 429 problem+json with Retry-After."""
    app = WSGIRateLimit(wsgi_app, rate_limit={"default": "1/minute", "headers": "both"})
    status, seen = wsgi_call(app)
    names = [name for name, _ in seen["headers"]]
    assert status == "200 OK"
    assert names[:2] == ["Content-Type", "X-App"]
    assert {"ratelimit", "ratelimit-policy", "x-ratelimit-limit"} <= set(names)
    status, seen = wsgi_call(app)
    assert status == "429 Too Many Requests"
    assert dict(seen["headers"])["retry-after"] == "60"
    assert json.loads(seen["body"])["status"] == 429


def test_wsgi_paths_are_normalized_before_matching() -> None:
    """``//LOGIN/`` and ``/login`` draw on one budget (the rule's pattern); a dot segment is
    refused before any rule is matched."""
    settings = {"default": "", "rules": [{"path": "/login", "limit": "2/minute"}]}
    app = WSGIRateLimit(wsgi_app, rate_limit=settings)
    paths = ("/login", "//LOGIN/", "/login//", "/./login")
    statuses = [wsgi_call(app, path)[0][:3] for path in paths]
    assert statuses == ["200", "200", "429", "400"]


# -- failed-authentication throttle ------------------------------------------------------------


class CountingBasic:
    """A Basic-like authenticator counting its (expensive) verifications."""

    scheme = "basic"
    authorization_scheme = "basic"
    blocking = False

    def __init__(self) -> None:
        self.verified = 0

    def extract(self, request: RequestView, authorization: str | None) -> Credential | None:
        if authorization is None:
            return None
        user, _, password = base64.b64decode(authorization).decode().partition(":")
        return Credential("basic", password, user)

    def verify(self, credential: Credential) -> Principal | Deny:
        self.verified += 1
        if credential.secret == "right":
            return Principal.create(credential.username or "", "basic")
        return Deny(401, "invalid credentials", "invalid_credentials")

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        return 'Basic realm="api"'


def basic(user: str, password: str) -> list[tuple[str, str]]:
    """An Authorization header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Authorization", f"Basic {token}")]


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    """200, empty."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


THROTTLE: dict[str, Any] = {"rate_limit": {"auth_failures": "3/minute"}}


def test_asgi_throttle_blocks_before_verification() -> None:
    """After 3 failures from one address, attempts get 429 before any verification."""
    authenticator = CountingBasic()
    throttle = AsyncFailedAuthThrottle(**THROTTLE)
    app = ASGIAuth(ok_app, chain=AuthChain([authenticator]), throttle=throttle)
    statuses = [
        run_asgi(app, http_scope(headers=basic(f"user{n}", "wrong"))).status for n in range(3)
    ]
    blocked = run_asgi(app, http_scope(headers=basic("user9", "right")))
    assert statuses == [401, 401, 401]
    assert blocked.status == 429
    assert int(blocked.header_values("retry-after")[0]) >= 1
    assert json.loads(blocked.body)["code"] == "too_many_failures"
    assert authenticator.verified == 3
    other = run_asgi(app, http_scope(headers=basic("user9", "right"), client=("10.0.0.2", 1)))
    assert other.status == 200


def test_wsgi_throttle_strangers_do_not_lock_out_a_user_below_the_ceiling() -> None:
    """Failures on one user name from many addresses leave its owner in until the per-user
    ceiling; past it that name (only it) is refused everywhere."""
    authenticator = CountingBasic()
    settings = {"rate_limit": {**THROTTLE["rate_limit"], "auth_failures_per_user": "5/minute"}}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    throttle = FailedAuthThrottle(**settings)
    stack = WSGIAuth(app, chain=AuthChain([authenticator]), throttle=throttle)

    def attempt(user: str, password: str, client: str) -> str:
        header = basic(user, password)[0][1]
        seen: dict[str, Any] = {}

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen["status"] = status
            return lambda data: None

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": client}
        environ["HTTP_AUTHORIZATION"] = header
        list(stack(environ, start_response))
        return str(seen["status"])[:3]

    assert [attempt("alice", "guess", f"10.0.0.{n}") for n in range(3)] == ["401"] * 3
    assert attempt("ALICE", "right", "10.0.0.99") == "200"  # and refunded
    assert [attempt("alice", "guess", f"10.0.0.{n}") for n in range(3, 5)] == ["401"] * 2
    assert attempt("alice", "right", "10.0.0.99") == "429"
    assert attempt("bob", "right", "10.0.0.99") == "200"
    assert authenticator.verified == 7
