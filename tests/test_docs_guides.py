"""docs/starlette.md and docs/flask.md run as written: every Python block builds an app that
behaves as the guide says."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from secmw.errors import ConfigurationError
from tests.redis_support import clients_after_closing, connected_clients
from tests.support import Recorder, http_scope, make_token

DOCS = Path(__file__).resolve().parents[1] / "docs"
STARLETTE = DOCS / "starlette.md"
FLASK = DOCS / "flask.md"
SECRET = "doc-secret-with-at-least-32-bytes!!"
ORIGIN = "https://app.example"

# The text that names each block; every Python block of a guide must be named exactly once.
NEEDLES = {
    STARLETTE: {
        "one-line": "app.add_middleware(SecurityStack)  # every layer",
        "fastapi": "from fastapi import",
        "keywords": "async def status(",
        "separate": "RateLimitMiddleware,",
        "cors-outside": "app.add_middleware(  # added last, so outermost",
        "cors-inside": "app.add_middleware(SecurityStack)  # added last, so outermost",
        "websockets": "WebSocketRoute",
    },
    FLASK: {
        "one-line": "app.wsgi_app = SecurityStack(app.wsgi_app)  # every layer",
        "keywords": "def status(",
        "separate": "RateLimitMiddleware(",
        "flask-cors": "from flask_cors import CORS",
        "close": "atexit.register(app.wsgi_app.close)",
        "extension": "security.init_app(app)",
    },
}


def blocks(doc: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def load(doc: Path, name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """Set the guide's environment (its ``bash`` block), run the named block, return ``app``."""
    for line in blocks(doc, "bash")[0].splitlines():
        variable, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(variable, SECRET if value.startswith('"$(') else value.strip("'"))
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    (code,) = [c for c in blocks(doc, "python") if NEEDLES[doc][name] in c]
    namespace: dict[str, Any] = {"__name__": f"guide_{name.replace('-', '_')}"}
    exec(compile(code, str(doc), "exec", dont_inherit=True), namespace)
    return namespace["app"]


def bearer(scope: str = "items:read", sub: str = "alice", secret: str = SECRET) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(secret, sub=sub, scope=scope)}"}


def asgi_get(
    app: Any, *requests: tuple[str, str, dict[str, str]], client: str = "127.0.0.1"
) -> list[httpx.Response]:
    """Send ``(method, path, headers)`` requests to an ASGI app from ``client``."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=(client, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as c:
            return [await c.request(m, p, headers=h) for m, p, h in requests]

    return asyncio.run(run())


def wsgi_get(
    app: Any, *requests: tuple[str, str, dict[str, str]], client: str = "127.0.0.1"
) -> list[httpx.Response]:
    """Send ``(method, path, headers)`` requests to a WSGI app from ``client``."""
    transport = httpx.WSGITransport(app=app, remote_addr=client)
    with httpx.Client(transport=transport, base_url="http://api.example") as c:
        return [c.request(m, p, headers=h) for m, p, h in requests]


PREFLIGHT = {
    "origin": ORIGIN,
    "access-control-request-method": "GET",
    "access-control-request-headers": "authorization",
}


@pytest.mark.parametrize("doc", [STARLETTE, FLASK], ids=["starlette", "flask"])
def test_every_block_is_exercised(doc: Path) -> None:
    """Each Python block of the guide is named by exactly one needle, so a test runs it."""
    found = [
        [n for n, needle in NEEDLES[doc].items() if needle in c] for c in blocks(doc, "python")
    ]
    assert [len(names) for names in found] == [1] * len(found)
    assert sorted(n for names in found for n in names) == sorted(NEEDLES[doc])


# -- docs/starlette.md -------------------------------------------------------------------


def test_starlette_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``add_middleware(SecurityStack)``: 200 with the scope, 401 anonymous, 403 without it."""
    app = load(STARLETTE, "one-line", monkeypatch)
    ok, anonymous, other, forged = asgi_get(
        app,
        ("GET", "/items", bearer()),
        ("GET", "/items", {}),
        ("GET", "/items", bearer("other")),
        ("GET", "/items", bearer(secret="x" * 40)),
    )
    assert (ok.status_code, ok.json()) == (200, {"id": "alice", "scopes": ["items:read"]})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert other.status_code == 403
    assert forged.status_code == 401
    for response in (ok, anonymous, other, forged):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_starlette_bad_setting_fails_at_lifespan_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad ``SECMW_*`` value raises on the first ASGI call (the lifespan startup)."""
    app = load(STARLETTE, "one-line", monkeypatch, SECMW_JWT__SECRET="short")
    recorder = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    with pytest.raises(ConfigurationError, match="SECMW_JWT__SECRET"):
        asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, recorder))
    assert recorder.messages == []


def test_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FastAPI block: ``request.state.principal`` and ``Security(secmw.fastapi.principal)``
    answering 401/403 problem+json, the 403 with the ``insufficient_scope`` challenge."""
    app = load(STARLETTE, "fastapi", monkeypatch)
    me, items, missing, anonymous = asgi_get(
        app,
        ("GET", "/me", bearer("items:read other")),
        ("GET", "/items", bearer()),
        ("GET", "/items", bearer("other")),
        ("GET", "/me", {}),
    )
    assert me.json() == {"id": "alice", "scheme": "bearer", "scopes": ["items:read", "other"]}
    assert items.json() == {"items": [], "for": "alice"}
    assert (missing.status_code, anonymous.status_code) == (403, 401)
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="items:read"'
    )


def test_starlette_keyword_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword sections: the IP rule admits loopback only, the rule allows ten a minute."""
    app = load(STARLETTE, "keywords", monkeypatch)
    (outsider,) = asgi_get(app, ("GET", "/internal/status", {}), client="192.0.2.7")
    assert (outsider.status_code, outsider.json()["code"]) == (403, "ip_not_allowed")
    statuses = [r.status_code for r in asgi_get(app, *[("GET", "/internal/status", {})] * 11)]
    assert statuses == [200] * 10 + [429]


def test_starlette_separate_middlewares(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-assembled layers: principal via ``request.user``, IP allow list, headers."""
    app = load(STARLETTE, "separate", monkeypatch)
    ok, missing = asgi_get(app, ("GET", "/items", bearer()), ("GET", "/items", bearer("x")))
    (outsider,) = asgi_get(app, ("GET", "/items", bearer()), client="192.0.2.7")
    assert (ok.status_code, ok.json()) == (200, {"id": "alice"})
    assert ok.headers["ratelimit-policy"] == '"default";q=100;w=60'
    assert (missing.status_code, outsider.status_code) == (403, 403)
    assert outsider.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(("name", "readable"), [("cors-outside", True), ("cors-inside", False)])
def test_starlette_cors(monkeypatch: pytest.MonkeyPatch, name: str, readable: bool) -> None:
    """Preflight answered anonymously; token request has both header sets; 401 as described."""
    app = load(STARLETTE, name, monkeypatch)
    preflight, actual, refused = asgi_get(
        app,
        ("OPTIONS", "/items", PREFLIGHT),
        ("GET", "/items", {"origin": ORIGIN, **bearer()}),
        ("GET", "/items", {"origin": ORIGIN}),
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert ("x-content-type-options" in preflight.headers) is not readable
    assert (actual.status_code, actual.json()) == (200, {"id": "alice"})
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert actual.headers["x-content-type-options"] == "nosniff"
    assert refused.status_code == 401
    assert ("access-control-allow-origin" in refused.headers) is readable


def handshake(app: Any, headers: list[tuple[str, str]], *, extension: bool) -> Recorder:
    """Open ``/feed`` on the ASGI app with hand-built messages; record what it sends."""
    extensions: dict[str, Any] = {"websocket.http.response": {}} if extension else {}
    scope = http_scope("/feed", type="websocket", headers=headers, extensions=extensions)
    scope.update(scheme="ws", subprotocols=[])
    scope.pop("method")
    messages = iter([{"type": "websocket.connect"}])
    recorder = Recorder()

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "websocket.disconnect", "code": 1000})

    asyncio.run(app(scope, receive, recorder))
    return recorder


def test_starlette_websockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authenticated handshake reaches the endpoint; an anonymous one is refused before accept."""
    app = load(STARLETTE, "websockets", monkeypatch)
    token = bearer()["authorization"]
    accepted = handshake(app, [("authorization", token)], extension=False)
    assert [m["type"] for m in accepted.messages] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert accepted.messages[1]["text"] == '{"hello":"alice"}'
    closed = handshake(app, [], extension=False)
    assert [(m["type"], m.get("code")) for m in closed.messages] == [("websocket.close", 1008)]
    answered = handshake(app, [], extension=True)
    assert answered.messages[0]["type"] == "websocket.http.response.start"
    assert answered.messages[0]["status"] == 401


# -- docs/flask.md -----------------------------------------------------------------------


def test_flask_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.wsgi_app = SecurityStack(app.wsgi_app)`` with ``require_scopes``/``get_principal``."""
    app = load(FLASK, "one-line", monkeypatch)
    ok, anonymous, other, forged = wsgi_get(
        app,
        ("GET", "/items", bearer()),
        ("GET", "/items", {}),
        ("GET", "/items", bearer("other")),
        ("GET", "/items", bearer(secret="x" * 40)),
    )
    assert (ok.status_code, ok.json()) == (200, {"id": "alice", "scopes": ["items:read"]})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert (other.status_code, other.json()["code"]) == (403, "insufficient_scope")
    assert forged.status_code == 401
    for response in (ok, anonymous, other, forged):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_flask_bad_setting_fails_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack is built at import, so a bad ``SECMW_*`` value stops the module there."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__SECRET"):
        load(FLASK, "one-line", monkeypatch, SECMW_JWT__SECRET="short")


def test_flask_keyword_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword sections: the IP rule admits loopback only, the rule allows ten a minute."""
    app = load(FLASK, "keywords", monkeypatch)
    (outsider,) = wsgi_get(app, ("GET", "/internal/status", {}), client="192.0.2.7")
    assert (outsider.status_code, outsider.json()["code"]) == (403, "ip_not_allowed")
    statuses = [r.status_code for r in wsgi_get(app, *[("GET", "/internal/status", {})] * 11)]
    assert statuses == [200] * 10 + [429]


def test_flask_separate_middlewares(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-assembled layers: ``current_principal()``, anonymous callers, IP allow list."""
    app = load(FLASK, "separate", monkeypatch)
    me, anonymous = wsgi_get(app, ("GET", "/me", bearer()), ("GET", "/me", {}))
    (outsider,) = wsgi_get(app, ("GET", "/me", bearer()), client="192.0.2.7")
    assert me.json() == {"id": "alice", "authenticated": True}
    assert anonymous.json() == {"id": "", "authenticated": False}
    assert me.headers["ratelimit-policy"] == '"default";q=100;w=60'
    assert (outsider.status_code, outsider.headers["x-frame-options"]) == (403, "DENY")


@pytest.mark.redis
def test_flask_close_at_exit(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    """The stack on Redis: requests open its connections, ``close()`` (registered with atexit)
    closes them, and the next request connects afresh."""
    import atexit

    import redis

    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    app = load(FLASK, "close", monkeypatch, SECMW_RATE_LIMIT__STORAGE_URI=redis_url)
    assert registered == [app.wsgi_app.close]
    with redis.Redis.from_url(redis_url) as probe:
        before = connected_clients(probe)
        ok, refused = wsgi_get(
            app, ("GET", "/health", {}), ("GET", "/health", bearer(secret="x" * 40))
        )
        assert (ok.status_code, refused.status_code) == (200, 401)
        assert connected_clients(probe) >= before + 2  # the rate limiter's and the throttle's
        registered[0]()
        assert clients_after_closing(probe, before) == before
        (again,) = wsgi_get(app, ("GET", "/health", {}))
        assert again.status_code == 200
        app.wsgi_app.close()


def test_flask_cors(monkeypatch: pytest.MonkeyPatch) -> None:
    """flask-cors inside the stack: preflight and token request carry both header sets; the
    stack's own 401 carries no CORS header."""
    app = load(FLASK, "flask-cors", monkeypatch)
    preflight, actual, refused = wsgi_get(
        app,
        ("OPTIONS", "/items", PREFLIGHT),
        ("GET", "/items", {"origin": ORIGIN, **bearer()}),
        ("GET", "/items", {"origin": ORIGIN, "authorization": "Bearer nope"}),
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["x-content-type-options"] == "nosniff"
    assert (actual.status_code, actual.json()) == (200, {"id": "alice"})
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert actual.headers["x-content-type-options"] == "nosniff"
    assert refused.status_code == 401
    assert "access-control-allow-origin" not in refused.headers


def test_flask_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension block: app.config settings, public health, problem+json for the stack's,
    require_scopes', route.requires' and abort's refusals, the route limit."""
    app = load(FLASK, "extension", monkeypatch)
    health, anonymous, missing, listed, aborted, mine = wsgi_get(
        app,
        ("GET", "/health", {}),
        ("GET", "/items", {}),
        ("GET", "/items", bearer("other")),
        ("GET", "/items", bearer()),
        ("DELETE", "/items/0", bearer("items:write")),
        ("DELETE", "/items/5", bearer("items:read")),
    )
    assert health.status_code == 200
    assert anonymous.status_code == 401  # SECMW_AUTH__REQUIRED from app.config
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["code"] == "insufficient_scope"
    assert 'scope="items:read"' in missing.headers["www-authenticate"]
    assert listed.json() == {"items": [], "for": "alice"}
    assert (aborted.status_code, aborted.json()["code"]) == (403, "forbidden")
    assert (mine.status_code, mine.json()["code"]) == (403, "insufficient_scope")
    for response in (anonymous, missing, aborted, mine):
        assert response.headers["content-type"] == "application/problem+json"
    # Ten a minute: the aborted DELETE was charged; the refused one never reached the limit.
    deletes = wsgi_get(app, *[("DELETE", "/items/5", bearer("items:write"))] * 10)
    assert [r.status_code for r in deletes] == [200] * 9 + [429]
