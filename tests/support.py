"""Test helpers: ASGI message recording, token minting, real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import httpx
import jwt

SECRET = "s" * 32
"""A valid HS256 secret for tests."""


def make_token(secret: str | bytes = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A signed JWT; ``exp`` defaults to one hour ahead and ``sub`` to ``"user-1"``."""
    payload: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 3600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    query_string: bytes = b"",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    scheme: str = "http",
    type: str = "http",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A hand-built ASGI scope."""
    scope: dict[str, Any] = {
        "type": type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


class Recorder:
    """An ASGI ``send`` that records messages, plus helpers to read the response."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(k.decode(), v.decode()) for k, v in self.messages[0].get("headers", [])]

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def empty_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def run_asgi(app: Any, scope: dict[str, Any]) -> Recorder:
    """Call an ASGI app with a scope; return the recorded messages."""
    recorder = Recorder()
    asyncio.run(app(scope, empty_receive, recorder))
    return recorder


def asgi_request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to an ASGI app through ``httpx.ASGITransport``, from 127.0.0.1."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def _bound_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def uvicorn_server(app: Any, host: str = "127.0.0.1", **config: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yield its base URL."""
    import uvicorn

    sock = _bound_socket(host)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
    options.update(config)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield _url(host, port)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def werkzeug_server(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded server on a free loopback port."""
    from werkzeug.serving import make_server

    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _url(host, server.server_port)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
