"""A tiny identity provider on loopback for the JWKS, discovery and introspection tests.

One threaded HTTP server on 127.0.0.1 answers:

- ``GET /jwks``: ``state.jwks`` (or ``state.raw`` bytes, to serve garbage) with ``state.status``
  and ``state.cache_control``, after ``state.delay`` seconds;
- ``GET /.well-known/openid-configuration``: a discovery document naming ``/jwks``;
- ``POST /introspect``: ``state.answers[token]`` (or ``{"active": false}``) when the client
  authenticated as ``state.client`` (else 401).

It counts hits per path and connections (``state.keep_alive`` turns on HTTP/1.1 persistent
connections), can stop (connection refused) and start again on the same port, and never
talks to anything but loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@dataclass
class IdPState:
    """What the server answers; tests change it between requests."""

    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    raw: bytes | None = None
    status: int = 200
    cache_control: str | None = None
    delay: float = 0.0
    issuer: str = ""
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    client: tuple[str, str] = ("resource-server", "rs-secret")
    introspect_status: int = 200
    introspect_raw: bytes | None = None
    keep_alive: bool = False
    connections: int = 0
    disconnects: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    forms: list[dict[str, list[str]]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def setup(self) -> None:
        """One handler per connection: count it, and keep it open when asked to."""
        state = self.server.state
        state.connections += 1
        if state.keep_alive:
            self.protocol_version = "HTTP/1.1"
        super().setup()

    def finish(self) -> None:
        """The connection ended (with keep-alive: the client hung up)."""
        super().finish()
        self.server.state.disconnects += 1

    def do_GET(self) -> None:
        state = self.server.state
        state.hits[self.path] += 1
        self._wait(state.delay)
        if self.path == "/.well-known/openid-configuration":
            doc = {"issuer": state.issuer, "jwks_uri": f"{state.issuer}/jwks"}
            self._send(200, json.dumps(doc).encode())
        elif self.path == "/jwks":
            body = state.raw if state.raw is not None else json.dumps(state.jwks).encode()
            self._send(state.status, body, state.cache_control)
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        state = self.server.state
        state.hits[self.path] += 1
        length = int(self.headers.get("content-length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        state.forms.append(form)
        self._wait(state.delay)
        if self.path != "/introspect":
            self._send(404, b"{}")
            return
        if self._client(form) != state.client:
            self._send(401, b'{"error":"invalid_client"}')
            return
        if state.introspect_raw is not None:
            self._send(state.introspect_status, state.introspect_raw)
            return
        token = form.get("token", [""])[0]
        answer = state.answers.get(token, {"active": False})
        self._send(state.introspect_status, json.dumps(answer).encode())

    def _client(self, form: dict[str, list[str]]) -> tuple[str, str] | None:
        header = self.headers.get("authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote(user), unquote(password)
        if "client_id" in form:
            return form["client_id"][0], form.get("client_secret", [""])[0]
        return None

    def _wait(self, delay: float) -> None:
        if delay:
            self.server.stopping.wait(delay)

    def _send(self, status: int, body: bytes, cache_control: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        # A client that timed out on a slow answer (what the slow-server tests do) has gone.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, port: int, state: IdPState) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        self.stopping = threading.Event()


class IdentityProvider:
    """The server, with start/stop on a fixed port and the mutable ``state``."""

    def __init__(self) -> None:
        self.state = IdPState()
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> IdentityProvider:
        server = _Server(self.port, self.state)
        self.port = server.server_address[1]
        self.state.issuer = self.url
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stopping.set()
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> IdentityProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- keys and tokens ----------------------------------------------------------------------------


def new_key(kind: str) -> Any:
    """A fresh private key: ``rsa``, ``p256``, ``p384``, ``p521`` or ``ed25519``."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
    return ec.generate_private_key(curves[kind])


def public_jwk(private: Any, kid: str, **members: Any) -> dict[str, Any]:
    """The public JWK of a private key, with ``kid`` and extra members (``use``, ``alg``...)."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        text = jwt.algorithms.RSAAlgorithm.to_jwk(public)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        text = jwt.algorithms.ECAlgorithm.to_jwk(public)
    else:
        text = jwt.algorithms.OKPAlgorithm.to_jwk(public)
    return {**json.loads(text), "kid": kid, **members}


def sign(private: Any, alg: str, kid: str | None, **claims: Any) -> str:
    """A JWT signed by ``private``; ``sub`` user-1 and ``exp`` one minute ahead by default."""
    payload: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 3600, **claims}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, private, algorithm=alg, headers=headers)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
