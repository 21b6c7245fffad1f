"""secmw.route: decorators that contradict, route templates as path patterns, the rules compiled
from the route table, conflicts with the environment refused at startup, and sub-apps whose
routes cannot be read reported, never passed over in silence."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from secmw import route
from secmw.asgi import SecurityStack
from secmw.config.settings import SecuritySettings
from secmw.errors import ConfigurationError
from secmw.flask import SecMW
from secmw.route.compile import apply_routes
from secmw.route.table import read_routes
from secmw.wsgi import SecurityStack as WSGIStack
from tests.redis_support import clients_after_closing, connected_clients
from tests.support import SECRET, Recorder, http_scope, make_token, run_asgi


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def view() -> Any:
    """A fresh view function (marks live on the function)."""

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return endpoint


# -- decorators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (route.public, route.requires("a")),
        (route.public, route.requires_auth),
        (route.limit("1/minute"), route.limit("2/minute")),
        (route.limit("1/minute"), route.exempt("rate_limit")),
        (route.requires("a"), route.requires("b")),
        (route.headers(frame_options="DENY"), route.headers(frame_options="SAMEORIGIN")),
    ],
    ids=[
        "public+requires",
        "public+requires_auth",
        "two-limits",
        "limit+exempt",
        "two-requires",
        "two-headers",
    ],
)
def test_contradicting_decorators_fail_where_written(first: Any, second: Any) -> None:
    """Two decorators that contradict raise at import, naming the view."""
    with pytest.raises(ConfigurationError, match="contradicts"):
        second(first(view()))


def test_agreeing_decorators_combine() -> None:
    """requires_auth with requires, limit with headers: one mark holding both."""
    marked = route.requires_auth(route.requires("items:read")(route.limit("1/minute")(view())))
    marks = route.marks_of(marked)
    assert marks is not None
    assert (marks.access, marks.scopes, marks.limit and marks.limit.limit) == (
        "authenticated",
        ("items:read",),
        "1/minute",
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: route.limit("often"),
        lambda: route.limit("1/minute", key="cookie"),  # type: ignore[arg-type]
        lambda: route.limit("1/minute", cost=0),
        lambda: route.requires("items read"),
        lambda: route.requires("items\x00"),
        lambda: route.requires(),
        lambda: route.exempt("auth"),
        lambda: route.exempt(),
        lambda: route.headers(coop="nonsense"),
        lambda: route.headers(unknown=1),
    ],
    ids=[
        "limit",
        "key",
        "cost",
        "scope-space",
        "scope-control",
        "no-scope",
        "exempt-auth",
        "exempt-nothing",
        "header-value",
        "header-field",
    ],
)
def test_bad_decorator_arguments_fail_where_written(make: Any) -> None:
    """A bad limit, key, cost, scope (spaces, control characters), layer or header field."""
    with pytest.raises(ConfigurationError):
        make()


# -- route tables ----------------------------------------------------------------------------


def test_starlette_table_with_mounts_and_templates() -> None:
    """Templates become path patterns; a mount's prefix is joined; path parameters end in **."""
    marked = route.requires_auth(view())
    files = route.requires_auth(view())
    inner = Starlette(routes=[Route("/items/{id:int}", marked), Route("/files/{p:path}", files)])
    app = Starlette(routes=[Route("/", ok), Mount("/api/v1", app=inner)])
    table = read_routes(SecurityStack(app, jwt={"secret": SECRET}).app)
    assert [(e.pattern, e.methods) for e in table.routes] == [
        ("/", ("GET", "HEAD")),
        ("/api/v1/items/{id}", ("GET", "HEAD")),
        ("/api/v1/files/**", ("GET", "HEAD")),
    ]
    assert table.opaque == []


def test_flask_table() -> None:
    """Flask converters (``<int:id>``, ``<path:p>``) and methods; OPTIONS left to CORS."""
    app = Flask("t")
    app.add_url_rule(
        "/items/<int:id>", "item", route.requires_auth(lambda id: "x"), methods=["GET", "POST"]
    )
    app.add_url_rule("/files/<path:p>", "files", lambda p: "x")
    table = read_routes(app.wsgi_app)
    found = {e.pattern: e.methods for e in table.routes}
    assert found["/items/{id}"] == ("GET", "HEAD", "POST")
    assert found["/files/**"] == ("GET", "HEAD")


def test_decorated_route_that_cannot_be_a_rule_fails() -> None:
    """``/items/{id}.json``: a parameter sharing a segment cannot be a path pattern."""
    app = Starlette(routes=[Route("/items/{id}.json", route.public(view()))])
    with pytest.raises(ConfigurationError, match="cannot be written as a rule"):
        read_routes(app)


# -- compiling, conflicts --------------------------------------------------------------------


def _apply(app: Any, **sections: Any) -> SecuritySettings:
    return apply_routes(SecuritySettings(jwt={"secret": SECRET}, **sections), read_routes(app))


def test_marks_compile_into_the_environment_rules() -> None:
    """Each mark becomes the entry of the setting the environment would write."""
    app = Starlette(
        routes=[
            Route("/login", route.limit("5/minute", key="ip", cost=2)(view()), methods=["POST"]),
            Route("/health", route.exempt("rate_limit")(route.public(view()))),
            Route("/items/{id}", route.requires("items:read")(view())),
            Route("/page", route.headers(preset="swagger-ui")(view())),
        ]
    )
    settings = _apply(app, rate_limit={"rules": [{"path": "/other", "limit": "1/second"}]})
    rule = settings.rate_limit.rules[0]
    assert (rule.path, rule.methods, rule.limit, rule.key, rule.cost) == (
        "/login",
        ["POST"],
        "5/minute",
        "ip",
        2,
    )
    assert settings.rate_limit.rules[1].path == "/other"  # the environment's, after
    assert settings.rate_limit.exempt.paths == ["/health"]
    assert settings.auth.public == ["/health"]
    scope_rule = settings.auth.scopes[0]
    assert (scope_rule.path, scope_rule.methods, scope_rule.scopes) == (
        "/items/{id}",
        ["GET", "HEAD"],
        ["items:read"],
    )
    assert settings.headers.paths["/page"].preset == "swagger-ui"


@pytest.mark.parametrize(
    ("mark", "sections", "setting"),
    [
        (
            route.limit("1/minute"),
            {"rate_limit": {"rules": [{"path": "/items/*", "limit": "1/second"}]}},
            "SECMW_RATE_LIMIT__RULES",
        ),
        (
            route.limit("1/minute"),
            {"rate_limit": {"exempt": {"paths": ["/items/**"]}}},
            "SECMW_RATE_LIMIT__EXEMPT",
        ),
        (
            route.exempt("rate_limit"),
            {"rate_limit": {"rules": [{"path": "/items/{x}", "limit": "1/second"}]}},
            "SECMW_RATE_LIMIT__RULES",
        ),
        (route.requires("a"), {"auth": {"public": ["/items/**"]}}, "SECMW_AUTH__PUBLIC"),
        (
            route.requires_auth,
            {"auth": {"scopes": [{"path": "/items/*", "scopes": ["b"]}]}},
            "SECMW_AUTH__SCOPES",
        ),
        (route.public, {"auth": {"scopes": [{"path": "/items/*"}]}}, "SECMW_AUTH__SCOPES"),
        (
            route.headers(csp={}),
            {"headers": {"paths": {"/items/*": "redoc"}}},
            "SECMW_HEADERS__PATHS",
        ),
    ],
    ids=[
        "limit-rule",
        "limit-exempt",
        "exempt-rule",
        "requires-public",
        "auth-scopes",
        "public-scopes",
        "headers",
    ],
)
def test_conflict_with_the_environment_fails_naming_both(
    mark: Any, sections: dict[str, Any], setting: str
) -> None:
    """A decorator and an environment rule covering the same route: refused, both named."""
    app = Starlette(routes=[Route("/items/{id}", mark(view()))])
    with pytest.raises(ConfigurationError) as caught:
        _apply(app, **sections)
    assert setting in str(caught.value)
    assert "/items/{id}" in str(caught.value)
    assert "@route." in str(caught.value)


def test_public_is_not_a_conflict_with_required() -> None:
    """``auth.required`` with ``@route.public`` is the exemption it is meant for."""
    app = Starlette(routes=[Route("/health", route.public(view()))])
    assert _apply(app, auth={"required": ["/**"]}).auth.public == ["/health"]


def test_path_wide_mark_must_not_reach_another_method() -> None:
    """``@route.public`` on GET /items while POST /items is not public: refused, not widened."""
    app = Starlette(
        routes=[
            Route("/items", route.public(view()), methods=["GET"]),
            Route("/items", view(), methods=["POST"]),
        ]
    )
    with pytest.raises(ConfigurationError, match="POST /items, which does not carry it"):
        _apply(app)


def test_mark_must_not_reach_an_earlier_route() -> None:
    """``/items/me`` before ``/items/{id}``: the rule of ``{id}`` would cover it."""
    app = Starlette(
        routes=[Route("/items/me", view()), Route("/items/{id}", route.requires("a")(view()))]
    )
    with pytest.raises(ConfigurationError, match="/items/me"):
        _apply(app)
    decorated = Starlette(
        routes=[
            Route("/items/me", route.requires_auth(view())),
            Route("/items/{id}", route.requires("a")(view())),
        ]
    )
    assert [r.path for r in _apply(decorated).auth.scopes] == ["/items/me", "/items/{id}"]


# -- at startup ------------------------------------------------------------------------------


def _lifespan(app: Any) -> list[dict[str, Any]]:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    recorder = Recorder()

    async def receive() -> dict[str, Any]:
        return next(messages)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, recorder))
    return [dict(m) for m in recorder.messages]


def test_conflict_fails_the_lifespan_startup() -> None:
    """The server hears ``lifespan.startup.failed`` with the reason (uvicorn then exits)."""
    app = Starlette(routes=[Route("/items/{id}", route.public(view()))])
    stack = SecurityStack(app, jwt={"secret": SECRET}, auth={"scopes": [{"path": "/items/*"}]})
    (message,) = _lifespan(stack)
    assert message["type"] == "lifespan.startup.failed"
    assert "SECMW_AUTH__SCOPES" in message["message"]


def test_conflict_without_lifespan_fails_every_request() -> None:
    """No lifespan ran: each request raises (the server answers 500), none is served."""
    app = Starlette(routes=[Route("/items/{id}", route.public(view()))])
    stack = SecurityStack(app, jwt={"secret": SECRET}, auth={"scopes": [{"path": "/items/*"}]})
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            run_asgi(stack, http_scope("/items/1"))


def test_wsgi_conflict_fails_every_request() -> None:
    """The WSGI stack reads the Flask routes at the first request and keeps refusing."""
    app = Flask("t")
    app.add_url_rule("/x", "x", route.public(lambda: "x"))
    app.wsgi_app = WSGIStack(  # type: ignore[method-assign]
        app.wsgi_app, jwt={"secret": SECRET}, auth={"scopes": [{"path": "/x"}]}
    )
    client = app.test_client()
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="SECMW_AUTH__SCOPES"):
            client.get("/x")


def test_unreadable_sub_app_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """A decorated view inside a sub-app without a route table: a warning says NOT enforced."""
    hidden = route.requires("a")(view())

    async def opaque(scope: Any, receive: Any, send: Any) -> None:
        await hidden(Request(scope, receive))  # routes by hand: no table to read

    app = Starlette(routes=[Route("/", ok), Mount("/legacy", app=opaque)])
    with caplog.at_level(logging.WARNING, logger="secmw.route"):
        _lifespan(SecurityStack(app, jwt={"secret": SECRET}))
    (record,) = [r for r in caplog.records if r.name == "secmw.route"]
    assert "NOT enforced" in record.getMessage()
    assert "mount /legacy" in record.getMessage()
    assert hidden.__qualname__ in record.getMessage()


def test_sub_app_with_its_own_stack_keeps_its_marks() -> None:
    """A mount protected by a stack of its own: the outer stack leaves its routes to it."""
    inner = Starlette(routes=[Route("/x", route.limit("1/minute")(view()))])
    app = Starlette(routes=[Mount("/api", app=SecurityStack(inner, jwt={"secret": SECRET}))])
    assert read_routes(app).routes == []


def test_public_route_before_a_protected_pattern_stays_public() -> None:
    """``@route.public`` on ``/items/new`` before ``@route.requires`` on ``/items/{id}``."""
    app = Starlette(
        routes=[
            Route("/items/new", route.public(view())),
            Route("/items/{id}", route.requires("items:read")(view())),
        ]
    )
    stack = SecurityStack(app, jwt={"secret": SECRET})
    assert run_asgi(stack, http_scope("/items/new")).status == 200
    assert run_asgi(stack, http_scope("/items/7")).status == 401


def test_sub_app_with_its_own_middleware_stack_keeps_its_marks() -> None:
    """A mounted app with ``add_middleware(SecurityStack)``: not read by the stack outside."""
    inner = Starlette(routes=[Route("/x", route.limit("1/minute")(view()))])
    inner.add_middleware(SecurityStack, jwt={"secret": SECRET})
    app = Starlette(routes=[Mount("/api", app=inner), Route("/y", route.public(view()))])
    assert [entry.pattern for entry in read_routes(app).routes] == ["/y"]


def test_websocket_route_requires() -> None:
    """``@route.requires`` on a websocket route: an anonymous handshake is refused before
    accept, a token with the scope is let through to the endpoint."""

    @route.requires("feed:read")
    async def feed(websocket: WebSocket) -> None:
        await websocket.close(code=1000)

    stack = SecurityStack(Starlette(routes=[WebSocketRoute("/feed", feed)]), jwt={"secret": SECRET})
    refused = run_asgi(stack, http_scope("/feed", type="websocket"))
    (closed,) = refused.messages
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    token = [("authorization", f"Bearer {make_token(SECRET, scope='feed:read')}")]
    accepted = run_asgi(stack, http_scope("/feed", type="websocket", headers=token))
    assert accepted.messages[-1]["code"] == 1000


def test_rebuilt_stack_closes_every_redis_client_at_shutdown(redis_url: str) -> None:
    """Reading the marks rebuilds the layers; the lifespan shutdown closes the connections of
    the build that served and of the one it replaced."""
    app = Starlette(routes=[Route("/x", route.limit("5/minute")(view()))])
    stack = SecurityStack(
        app, jwt={"secret": SECRET}, rate_limit={"storage_uri": redis_url, "key_prefix": "rebuilt"}
    )

    async def run() -> int:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await queue.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(
            stack({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send)
        )
        while not sent:
            await asyncio.sleep(0.01)
        assert stack.retired  # the build replaced when the routes were read
        status = Recorder()
        await stack(http_scope("/x"), _empty, status)
        await queue.put({"type": "lifespan.shutdown"})
        await lifespan
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        return status.status

    with redis.Redis.from_url(redis_url) as probe:
        before = connected_clients(probe)
        assert asyncio.run(run()) == 200
        assert clients_after_closing(probe, before) == before


async def _empty() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class WSGIBridge:
    """The shape of a WSGI-in-ASGI bridge (a2wsgi's ``WSGIMiddleware``): the app on ``.app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not served here")


def test_mounted_flask_app_with_its_own_stack_keeps_its_marks() -> None:
    """Flask with SecMW under a WSGI bridge: read by the ASGI stack outside until it has its own
    stack, then left to it."""
    flask_app = Flask("inner")
    flask_app.add_url_rule("/x", "x", route.limit("1/minute")(lambda: "x"))
    bare = Starlette(routes=[Mount("/legacy", app=WSGIBridge(flask_app))])
    assert "/legacy/x" in [entry.pattern for entry in read_routes(bare).routes]
    SecMW(flask_app, settings=SecuritySettings(jwt={"secret": SECRET}))
    assert read_routes(bare).routes == []
