"""The stacks and the rate-limit layer close their Redis clients: on ``aclose`` / ``close``, and
by themselves when the ASGI app's lifespan shutdown completes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from secmw.asgi import SecurityStack
from secmw.asgi._util import closing_on_shutdown
from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.wsgi import SecurityStack as WSGIStack
from tests.redis_support import clients_after_closing, connected_clients
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "rate_limit": {"default": "100/minute"},
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def run(stack: Any, scope: dict[str, Any], loop: asyncio.AbstractEventLoop) -> int:
    recorder = Recorder()
    loop.run_until_complete(stack(scope, empty_receive, recorder))
    return recorder.status


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def wsgi_run(stack: Any, scope: dict[str, Any]) -> int:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": scope["path"]}
    setup_testing_defaults(environ)
    environ["REMOTE_ADDR"] = scope["client"][0]
    for name, value in scope["headers"]:
        environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode()
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda data: None

    b"".join(stack(environ, start_response))
    return int(seen[0][:3])


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
            lambda scope: run(stack, scope, loop),
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
            lambda scope: run(stack, scope, loop),
            lambda: shutdown.extend(loop.run_until_complete(lifespan_cycle(stack))),
        )
    finally:
        loop.close()
    assert shutdown == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.redis
def test_the_rate_limit_layer_closes_its_client_when_the_app_shuts_down(redis_url: str) -> None:
    limits = redis_sections(redis_url)["rate_limit"]
    limited = RateLimitMiddleware(with_lifespan(app), rate_limit=limits)
    loop = asyncio.new_event_loop()
    try:
        closes_its_clients(
            redis_url,
            lambda scope: run(limited, scope, loop),
            lambda: loop.run_until_complete(lifespan_cycle(limited)),
            answers=(200, 200),
            opened=1,
        )
    finally:
        loop.close()


@pytest.mark.redis
def test_a_rate_limit_layer_wrapped_in_another_closes_its_client_at_shutdown(
    redis_url: str,
) -> None:
    """Composed middlewares run as one driver: the outer one closes the inner one's client."""
    limits = redis_sections(redis_url)["rate_limit"]
    limited = RateLimitMiddleware(with_lifespan(app), rate_limit=limits)
    outer = SecurityHeadersMiddleware(limited)
    loop = asyncio.new_event_loop()
    try:
        closes_its_clients(
            redis_url,
            lambda scope: run(outer, scope, loop),
            lambda: loop.run_until_complete(lifespan_cycle(outer)),
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


@pytest.mark.redis
def test_the_wsgi_stack_closes_its_redis_clients(redis_url: str) -> None:
    """``close`` closes the connections of the rate-limit layer and of the throttle."""
    stack = WSGIStack(wsgi_app, **redis_sections(redis_url))
    closes_its_clients(redis_url, lambda scope: wsgi_run(stack, scope), stack.close)
