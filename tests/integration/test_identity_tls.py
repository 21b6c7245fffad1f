"""TLS to identity providers against loopback servers: a private CA, a client certificate
(mutual TLS, RFC 8705) for fetches and for introspection's tls_client_auth, and the settings
that name them."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secmw.auth._http import (
    Endpoint,
    FetchError,
    ProviderClient,
    ProviderHTTPSettings,
    parse_endpoint,
)
from secmw.auth.base import Credential
from secmw.auth.build import build_chain
from secmw.auth.introspection import IntrospectionAuthenticator
from secmw.config.settings import SecuritySettings
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError

pytestmark = pytest.mark.server

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
