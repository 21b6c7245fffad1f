"""Fuzz the ``Authorization`` header (every scheme, repeated fields, any byte) and ``X-API-Key``.

Each input becomes up to three header fields decoded as latin-1 (how the adapters decode them),
sent through the authenticator chain and the WSGI adapter; both must decide.

    python tests/fuzz/fuzz_authorization.py -runs=100000 -seed=1
"""

from __future__ import annotations

import base64

import atheris

with atheris.instrument_imports(
    include=[
        "secmw.auth.base",
        "secmw.auth.basic",
        "secmw.auth.apikey",
        "secmw.auth.jwt",
        "secmw.auth.claims",
        "secmw.core.request",
        "secmw.core.fields",
        "secmw.core.deny",
        "secmw.wsgi.auth",
    ]
):
    import _common

    from secmw.wsgi import AuthenticationMiddleware

CHAIN = _common.make_chain()
WSGI_APP = AuthenticationMiddleware(_common.principal_app_wsgi, chain=CHAIN)
SCHEMES = ("", "Bearer ", "bearer ", "Basic ", "BASIC ", "Digest ", "Bearer  ", " Bearer ")


def authorization(fdp: atheris.FuzzedDataProvider) -> str:
    """One header value: a scheme (or none) and a parameter shaped by the input."""
    scheme = SCHEMES[fdp.ConsumeIntInRange(0, len(SCHEMES) - 1)]
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    shape = fdp.ConsumeIntInRange(0, 3)
    if shape == 1:  # a Basic user-pass for the known user, password from the input
        text = (_common.USER + ":").encode() + raw + _common.CANARY.encode()
        return "Basic " + base64.b64encode(text).decode()
    if shape == 2:  # a three-segment token-looking value
        return scheme + ".".join(_common.b64url(part) for part in raw.split(b"\x00", 2))
    suffix = _common.CANARY if shape == 3 else ""
    return scheme + raw.decode("latin-1") + suffix


def test_one_input(data: bytes) -> None:
    """Any header set gets a decision from the chain and a sane answer from the adapter."""
    fdp = atheris.FuzzedDataProvider(data)
    headers = [("authorization", authorization(fdp)) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if fdp.ConsumeBool():
        key = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)).decode("latin-1")
        headers.append(("x-api-key", key + _common.CANARY))
    path = "/private/x" if fdp.ConsumeBool() else "/"
    result = _common.decide(CHAIN, _common.request(headers, path=path))
    _common.check_decision(result)
    if result is not None:  # skip the adapter for unknown Basic users (argon2, ~0.3 s each)
        _common.call_wsgi(WSGI_APP, headers, path, "")


if __name__ == "__main__":
    _common.fuzz(test_one_input)
