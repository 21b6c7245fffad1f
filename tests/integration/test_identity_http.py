"""The identity-provider HTTP client against loopback servers: a forward proxy from the
environment, connection reuse and its closing at shutdown, the total deadline against a
dribbling server, the size cap, no redirects (TLS: test_identity_tls.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth._http import (
    FetchError,
    ProviderClient,
    ProviderHTTPSettings,
    Response,
    parse_endpoint,
)
from secmw.auth.base import Credential
from secmw.auth.introspection import IntrospectionAuthenticator
from secmw.auth.jwks import JWKSKeySource
from secmw.core.principal import Principal
from secmw.wsgi import SecurityStack as WSGIStack
from tests.identity_support import IdentityProvider, new_key, public_jwk

pytestmark = pytest.mark.server

TOKENS = {t: {"active": True, "sub": t} for t in ("token-one", "token-two")}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        provider.state.answers.update(TOKENS)
        provider.state.keep_alive = True
        yield provider


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own proxy variables play no part unless a test sets them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def introspector(idp: IdentityProvider, **options: Any) -> IntrospectionAuthenticator:
    client_id, secret = idp.state.client
    return IntrospectionAuthenticator(
        f"{idp.url}/introspect", client_id=client_id, client_secret=secret, **options
    )


# -- a forward proxy ---------------------------------------------------------------------------


class ForwardProxy:
    """A plain-http forward proxy on loopback: takes absolute-form requests, relays them to the
    origin (one request per connection) and records each request line."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            method, url, _ = reader.readline().decode("latin-1").split(" ", 2)
            self.seen.append(f"{method} {url}")
            headers, length = [], 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name = line.split(b":", 1)[0].strip().lower()
                if name == b"content-length":
                    length = int(line.split(b":", 1)[1])
                if name not in (b"connection", b"proxy-connection"):
                    headers.append(line)
            body = reader.read(length)
            host, _, rest = url.removeprefix("http://").partition("/")
            name, _, port = host.partition(":")
            with socket.create_connection((name, int(port or 80))) as upstream:
                head = f"{method} /{rest} HTTP/1.1\r\n".encode() + b"".join(headers)
                upstream.sendall(head + b"Connection: close\r\n\r\n" + body)
                while data := upstream.recv(65536):
                    conn.sendall(data)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    yield server
    server.close()


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_introspection_goes_through_the_proxy_from_the_environment(
    idp: IdentityProvider, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """HTTP_PROXY is honoured, loopback endpoints included (httpx makes no exception for them
    without NO_PROXY)."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    auth = introspector(idp)
    credential = Credential("introspection", "token-one")
    result = auth.verify(credential) if sync else asyncio.run(auth.averify(credential))
    assert isinstance(result, Principal)
    assert proxy.seen == [f"POST {idp.url}/introspect"]


def test_no_proxy_and_trust_env_false_go_direct(
    idp: IdentityProvider, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY naming the host, or trust_env off, bypasses the proxy."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    untrusting = introspector(idp, http=ProviderHTTPSettings(trust_env=False))
    assert isinstance(untrusting.verify(Credential("introspection", "token-one")), Principal)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    exempt = introspector(idp)
    assert isinstance(exempt.verify(Credential("introspection", "token-two")), Principal)
    assert proxy.seen == []
    assert idp.state.hits["/introspect"] == 2


def test_jwks_goes_through_the_proxy(
    idp: IdentityProvider, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key source's fetches (background thread) use the proxy too."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    idp.state.jwks = {"keys": [public_jwk(new_key("p256"), "a", use="sig", alg="ES256")]}
    source = JWKSKeySource(f"{idp.url}/jwks")
    assert source.refresh() is True
    assert proxy.seen == [f"GET {idp.url}/jwks"]


# -- connection reuse ----------------------------------------------------------------------------


def test_sync_introspections_share_one_connection(idp: IdentityProvider) -> None:
    """Two cache misses, one TCP connection (HTTP/1.1 keep-alive)."""
    auth = introspector(idp)
    for token in TOKENS:
        assert isinstance(auth.verify(Credential("introspection", token)), Principal)
    assert (idp.state.hits["/introspect"], idp.state.connections) == (2, 1)


def test_async_introspections_share_one_connection_and_aclose_ends_it(
    idp: IdentityProvider,
) -> None:
    """The same on one event loop; aclose() closes the pool (the server sees the end)."""
    auth = introspector(idp)

    async def run() -> list[Principal | object]:
        found = [await auth.averify(Credential("introspection", t)) for t in TOKENS]
        await auth.aclose()
        found.append(await auth.averify(Credential("introspection", "token-three")))
        return found

    results = asyncio.run(run())
    assert all(isinstance(r, Principal) for r in results[:2])
    assert (idp.state.hits["/introspect"], idp.state.connections) == (3, 2)


def _settled(read: Callable[[], int], expected: int) -> int:
    """``read()`` once it equals ``expected``, or its last value after a bounded wait."""
    done = threading.Event()
    for _ in range(200):
        if read() == expected or done.wait(0.01):
            break
    return read()


def _sections(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "introspection": {
            "url": f"{idp.url}/introspect",
            "client_id": idp.state.client[0],
            "client_secret": idp.state.client[1],
        },
        "auth": {"order": ["introspection"]},
    }


def test_asgi_lifespan_shutdown_closes_the_pools(idp: IdentityProvider) -> None:
    """The kept-alive connection to the endpoint stays open across requests and is closed once
    the app's lifespan shutdown completes."""
    middleware = ASGIAuth(_lifespan_app, **_sections(idp))
    (auth,) = middleware.chain.authenticators
    sent: list[str] = []

    async def run() -> None:
        await auth.averify(Credential("introspection", "token-one"))
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        assert idp.state.disconnects == 0
        await middleware({"type": "lifespan"}, receive, send)

    asyncio.run(run())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert _settled(lambda: idp.state.disconnects, 1) == 1


def test_wsgi_stack_close_closes_the_pools(idp: IdentityProvider) -> None:
    """The WSGI stack's close() ends the kept-alive connection too."""
    stack = WSGIStack(lambda environ, start: [], **_sections(idp))
    (auth,) = stack.layers["auth"].chain.authenticators
    assert isinstance(auth.verify(Credential("introspection", "token-one")), Principal)
    assert idp.state.disconnects == 0
    stack.close()
    assert _settled(lambda: idp.state.disconnects, 1) == 1


async def _lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- deadline and size cap -----------------------------------------------------------------------


class RawServer:
    """Answers every connection with ``answer(conn)`` after reading the request head."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = parse_endpoint(
            f"http://127.0.0.1:{self._listener.getsockname()[1]}/x", setting="test"
        )
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                data += chunk
            with contextlib.suppress(OSError):  # the client hung up: what deadline and cap do
                self._answer(conn)

    def close(self) -> None:
        self.stop.set()
        self._listener.close()


def fetch_both(server: RawServer, **limits: Any) -> list[str]:
    """The FetchError reasons of the sync and the async fetch."""
    client = ProviderClient(setting="test")
    reasons = []
    for run in (
        lambda: client.fetch(server.endpoint, **limits),
        lambda: asyncio.run(client.afetch(server.endpoint, **limits)),
    ):
        with pytest.raises(FetchError) as caught:
            run()
        reasons.append(str(caught.value))
    return reasons


STOP = threading.Event()


def dribble(prefix: bytes, byte: bytes) -> Callable[[socket.socket], None]:
    """An answer that starts with ``prefix`` and then sends ``byte`` every 50 ms."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(prefix)
        for _ in range(600):  # bounded: a broken client fails the test instead of hanging
            conn.sendall(byte)
            if STOP.wait(0.05):
                return

    return answer


@pytest.mark.parametrize(
    "prefix",
    [b"HTTP/1.1 200 OK\r\nX-Slow: ", b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"],
    ids=["headers", "body"],
)
def test_a_dribbling_server_hits_the_total_deadline(prefix: bytes) -> None:
    """Each byte arrives well within any per-read timeout; the whole answer does not arrive
    within the call's deadline, in the status line or in the body."""
    STOP.clear()
    server = RawServer(dribble(prefix, b"x"))
    try:
        assert fetch_both(server, timeout=0.4, max_bytes=1 << 20) == ["timed out", "timed out"]
    finally:
        STOP.set()
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 9999999\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b" " * 300_000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"10000\r\n"
        + b" " * 0x10000
        + b"\r\n" * 5,
    ],
    ids=["declared", "until-close", "chunked"],
)
def test_answers_past_the_cap_are_refused(answer: bytes) -> None:
    """A Content-Length over the cap is refused unread; an undeclared body stops being read
    past the cap."""
    server = RawServer(lambda conn: conn.sendall(answer))
    try:
        assert fetch_both(server, timeout=5, max_bytes=1000) == ["answer too large"] * 2
    finally:
        server.close()


def test_redirects_are_not_followed() -> None:
    """A 302 is the answer, not a hop to the Location."""
    server = RawServer(
        lambda conn: conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n"
        )
    )
    try:
        client = ProviderClient(setting="test")
        response: Response = client.fetch(server.endpoint, timeout=5, max_bytes=1000)
        assert response.status == 302
    finally:
        server.close()
