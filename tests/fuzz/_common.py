"""What the fuzz harnesses and the property tests share: one authenticator stack, one invariant.

The invariant: whatever bytes a client sends, the layers answer with a decision (a principal, the
anonymous one included, or a :class:`~secmw.core.deny.Deny` with a 4xx or 503 status and a problem
body), no exception escapes, and no credential is echoed. Harnesses run as scripts
(``python tests/fuzz/fuzz_jwt.py -runs=1000 -seed=1``), so this module imports only the standard
library, PyJWT, pwdlib and secmw.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pwdlib.hashers.bcrypt import BcryptHasher

from secmw.auth import (
    APIKeyAuthenticator,
    APIKeyRecord,
    AuthChain,
    BasicAuthenticator,
    BasicUser,
    Found,
    JWTAuthenticator,
    hash_api_key,
)
from secmw.core.deny import PROBLEM_CONTENT_TYPE, Deny
from secmw.core.fields import Headers
from secmw.core.paths import PathSet
from secmw.core.principal import Principal
from secmw.core.request import RequestView

SECRET = "fuzz-secret-0123456789-abcdefghij"  # 33 bytes: a valid HS256 key
API_KEY = "fk-3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e"
USER = "alice"
PASSWORD = "alice-password"
CANARY = "Zq7canaryXw"
"""Planted inside fuzzed credentials: it must never appear in a response."""
# bcrypt at its lowest cost keeps a known user's check at ~1 ms; an unknown user costs a full
# argon2id check against the dummy hash (~0.3 s), which is input-independent and timed in
# tests/test_attacks.py, so fuzzing stops at ``extract`` for unknown Basic users.
_USER_HASH = BcryptHasher(rounds=4).hash(PASSWORD)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_hs256(header: bytes, payload: bytes, secret: str | bytes = SECRET) -> str:
    """A compact JWS over raw header and payload bytes, HMAC-SHA256 with ``secret``.

    Built by hand so that any bytes (duplicate keys, odd types, non-JSON) can be signed.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{b64url(header)}.{b64url(payload)}".encode("ascii")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def segment(token: str, index: int) -> bytes:
    """The decoded ``index``-th segment of a compact JWS."""
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def is_authentic(token: str, secret: str = SECRET) -> bool:
    """Whether the third segment is the right HMAC-SHA256 of the first two (padding-insensitive)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    expected = hmac.new(
        secret.encode(), f"{parts[0]}.{parts[1]}".encode("latin-1"), hashlib.sha256
    ).digest()
    return b64url(expected) == parts[2].rstrip("=")


def make_chain(*, required: Iterable[str] = ("/private/*",)) -> AuthChain:
    """Bearer (HS256), API key (header and query) and Basic, in the default order."""
    return AuthChain(
        [
            JWTAuthenticator(SECRET, leeway=5),
            APIKeyAuthenticator([APIKeyRecord(hash_api_key(API_KEY), "svc", frozenset({"r"}))]),
            BasicAuthenticator([BasicUser(USER, _USER_HASH, frozenset({"items:read"}))]),
        ],
        required=PathSet(required),
    )


def request(
    headers: Iterable[tuple[str, str]] = (),
    *,
    path: str = "/",
    query: bytes = b"",
    method: str = "GET",
    peer: str | None = "127.0.0.1",
) -> RequestView:
    """A request view as an adapter would build it."""
    return RequestView(method, path, query_string=query, headers=Headers(headers), peer=peer)


def decide(chain: AuthChain, view: RequestView) -> Principal | Deny | None:
    """``chain.authenticate`` (None when it stops before an unknown Basic user's costly check)."""
    found = chain.find(view)
    if not isinstance(found, Found):
        return found
    credential = found.credential
    if isinstance(found.authenticator, BasicAuthenticator) and credential.username != USER:
        return None
    return found.authenticator.verify(credential)


def check_decision(result: object) -> None:
    """Raise AssertionError unless ``result`` is a principal or a well-formed 4xx/503 Deny."""
    if result is None or isinstance(result, Principal):
        return
    if not isinstance(result, Deny):
        raise AssertionError(f"not a decision: {result!r}")
    if not (400 <= result.status < 500 or result.status == 503):
        raise AssertionError(f"denial with status {result.status}")
    check_problem(result.status, result.response_headers(0), result.body())
    if result.status == 401 and not any(n == "www-authenticate" for n, _ in result.headers):
        raise AssertionError("401 without a challenge")


def check_problem(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
    """Raise AssertionError unless this is an RFC 9457 problem response without the canary."""
    pairs = [(name.lower(), value) for name, value in headers]
    if ("content-type", PROBLEM_CONTENT_TYPE) not in pairs:
        raise AssertionError(f"problem without {PROBLEM_CONTENT_TYPE}: {pairs!r}")
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("status") != status:
        raise AssertionError(f"problem body does not match status {status}: {body!r}")
    if not isinstance(document.get("detail"), str) or not document.get("title"):
        raise AssertionError(f"problem body lacks title or detail: {body!r}")
    text = body.decode("utf-8") + "".join(value for _, value in pairs)
    if CANARY in text:
        raise AssertionError("a credential was echoed in the response")


def check_response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
    """A middleware answer: 200 from the app behind it, or a problem document."""
    if status == 200:
        return
    if not (400 <= status < 500 or status == 503):
        raise AssertionError(f"middleware answered {status}")
    check_problem(status, headers, body)


def principal_app_wsgi(environ: Mapping[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that checks it was handed a principal, then answers 200."""
    if not isinstance(environ.get("secmw.principal"), Principal):
        raise AssertionError("the app was reached without a principal")
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def call_wsgi(app: Any, view_headers: list[tuple[str, str]], path: str, query: str) -> None:
    """Run a WSGI middleware on one request and check its answer."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }
    for name, value in view_headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]}, {value}" if key in environ else value  # PEP 3333 joins
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        answer["status"], answer["headers"] = int(status.split()[0]), headers
        return lambda data: None

    body = b"".join(app(environ, start_response))
    check_response(answer["status"], answer["headers"], body)


def now() -> int:
    """Current UNIX time (the clock PyJWT checks ``exp`` against)."""
    return int(time.time())


def fuzz(test_one_input: Any) -> None:
    """Hand ``test_one_input`` to atheris with the command line's libFuzzer flags."""
    import logging
    import sys

    import atheris

    # Every denial is an audit event; millions of them on stderr would only slow the fuzzer.
    logging.getLogger("secmw").setLevel(logging.CRITICAL)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
