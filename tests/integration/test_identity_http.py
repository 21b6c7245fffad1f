"""The identity-provider HTTP client against loopback servers: a forward proxy from the
environment, connection reuse, the total deadline against a dribbling server, the size cap, a
private CA and a client certificate (mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth._http import (
    Endpoint,
    FetchError,
    ProviderClient,
    ProviderHTTPSettings,
    Response,
    parse_endpoint,
)
from secmw.auth.base import Credential
from secmw.auth.build import build_chain
from secmw.auth.introspection import IntrospectionAuthenticator
from secmw.auth.jwks import JWKSKeySource
from secmw.errors import ConfigurationError
from secmw.principal import Principal
from secmw.settings import SecuritySettings
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
    (auth,) = stack._auth.chain.authenticators  # type: ignore[union-attr]
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


# -- private CA and client certificates ----------------------------------------------------------


def _certificate(
    subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool = False
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, certificate: x509.Certificate, key: Any) -> Path:
    path.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("secmw test CA", ca_key, None, ca=True)
    files = {"ca": tmp_path / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"secmw {role}", key, (ca.subject, ca_key))
        files[role] = _write(tmp_path / f"{role}.pem", cert, key)
    return files


ACTIVE = b'{"active": true, "sub": "cert-client"}'
REQUESTS: list[bytes] = []  # what the TLS server received, in order


@pytest.fixture
def tls_server(pki: dict[str, Path]) -> Iterator[tuple[Endpoint, list[str]]]:
    """An https server on loopback that requires a client certificate from the private CA,
    records the client's common name and the request, and answers an active introspection."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.load_cert_chain(pki["server"])
    context.verify_mode = ssl.CERT_REQUIRED
    clients: list[str] = []
    REQUESTS.clear()

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(ACTIVE)}\r\n\r\n".encode()
        conn.sendall(head + ACTIVE)

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    peer = conn.getpeercert() or {}
                    subject = dict(item[0] for item in peer.get("subject", ()))
                    clients.append(str(subject.get("commonName")))
                    REQUESTS.append(_read_request(conn))
                    answer(conn)
            except (OSError, ssl.SSLError):
                raw.close()

    threading.Thread(target=serve, daemon=True).start()
    yield parse_endpoint(f"https://127.0.0.1:{port}/introspect", setting="test"), clients
    listener.close()


def _read_request(conn: socket.socket) -> bytes:
    """The request head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while found and len(body) < int(found.group(1)) and (chunk := conn.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_private_ca_and_client_certificate(
    pki: dict[str, Path], tls_server: tuple[Endpoint, list[str]]
) -> None:
    """With the CA bundle and the client certificate the call succeeds and the server sees the
    certificate; without the CA bundle, or without the certificate, it is a TLS failure."""
    endpoint, clients = tls_server
    full = ProviderHTTPSettings(ca_bundle=pki["ca"], client_cert=pki["client"])
    response = ProviderClient(full, setting="test").fetch(endpoint, timeout=5, max_bytes=100)
    assert (response.status, response.body, clients) == (200, ACTIVE, ["secmw client"])
    for partial in (ProviderHTTPSettings(client_cert=pki["client"]), ProviderHTTPSettings()):
        with pytest.raises(FetchError, match=r"TLS failure|connection failed"):
            ProviderClient(partial, setting="test").fetch(endpoint, timeout=5, max_bytes=100)
    no_cert = ProviderClient(ProviderHTTPSettings(ca_bundle=pki["ca"]), setting="test")
    with pytest.raises(FetchError):
        no_cert.fetch(endpoint, timeout=5, max_bytes=100)
    assert clients == ["secmw client"]


def test_introspection_with_tls_client_auth(
    pki: dict[str, Path], tls_server: tuple[Endpoint, list[str]]
) -> None:
    """RFC 8705 tls_client_auth: the certificate authenticates, the form names the client id,
    no secret travels."""
    endpoint, clients = tls_server
    http = ProviderHTTPSettings(ca_bundle=pki["ca"], client_cert=pki["client"])
    settings = SecuritySettings(
        introspection={
            "url": endpoint.url,
            "client_id": "rs",
            "auth_method": "tls_client_auth",
            "http": http.model_dump(),
        },
        auth={"order": ["introspection"]},
    )
    (auth,) = build_chain(settings).authenticators
    assert isinstance(auth, IntrospectionAuthenticator)
    result = auth.verify(Credential("introspection", "opaque-token"))
    assert isinstance(result, Principal)
    assert (result.id, clients) == ("cert-client", ["secmw client"])
    auth.close()
    head, _, body = b"".join(REQUESTS).partition(b"\r\n\r\n")
    assert b"client_id=rs" in body
    assert b"client_secret" not in body
    assert b"authorization:" not in head.lower()


@pytest.mark.parametrize(
    ("introspection", "variable"),
    [
        ({"client_id": "rs", "auth_method": "tls_client_auth"}, "HTTP__CLIENT_CERT"),
        (
            {"client_id": "rs", "client_secret": "pw", "auth_method": "tls_client_auth"},
            "CLIENT_SECRET",
        ),
    ],
    ids=["no-certificate", "secret-too"],
)
def test_tls_client_auth_configuration_mistakes(
    introspection: dict[str, Any], variable: str
) -> None:
    """tls_client_auth without a client certificate, or with a secret beside it: a startup
    error naming the variable."""
    settings = SecuritySettings(
        introspection={"url": "https://as.example/introspect", **introspection},
        auth={"order": ["introspection"]},
    )
    with pytest.raises(ConfigurationError, match=f"SECMW_INTROSPECTION__{variable}"):
        build_chain(settings)


def test_unreadable_tls_files_fail_at_startup_naming_the_variable(tmp_path: Path) -> None:
    """A missing CA bundle or a bad client certificate is a ConfigurationError when the chain is
    built, naming the SECMW_ variable; the file's content is never quoted."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    cases = [
        ({"ca_bundle": str(tmp_path / "missing.pem")}, "HTTP__CA_BUNDLE"),
        ({"client_cert": str(junk)}, "HTTP__CLIENT_CERT"),
        ({"client_key": str(junk)}, "HTTP__CLIENT_KEY"),
    ]
    for http, variable in cases:
        settings = SecuritySettings(
            introspection={
                "url": "https://as.example/introspect",
                "client_id": "rs",
                "client_secret": "pw",
                "http": http,
            },
            auth={"order": ["introspection"]},
        )
        with pytest.raises(ConfigurationError, match=f"SECMW_INTROSPECTION__{variable}") as e:
            build_chain(settings)
        assert "not a certificate" not in str(e.value)


def test_tls_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    """The nested variables reach the settings (SECMW_JWT__JWKS_HTTP__CA_BUNDLE...)."""
    monkeypatch.setenv("SECMW_JWT__JWKS_HTTP__CA_BUNDLE", str(pki["ca"]))
    monkeypatch.setenv("SECMW_INTROSPECTION__HTTP__CLIENT_CERT", str(pki["client"]))
    monkeypatch.setenv("SECMW_INTROSPECTION__HTTP__TRUST_ENV", "false")
    settings = SecuritySettings()
    assert settings.jwt.jwks_http.ca_bundle == pki["ca"]
    assert settings.introspection.http.client_cert == pki["client"]
    assert settings.introspection.http.trust_env is False
