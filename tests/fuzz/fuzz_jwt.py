"""Fuzz JWT verification: junk segments, and arbitrary headers and claims signed with the right key.

Signing fuzzed JSON with the configured secret reaches the claim checks (``exp`` as a string,
``NaN``, ``1e999``, a 4,000-digit integer, nested arrays...) that junk never gets past the
signature to see. Besides the decision invariant: a principal is only ever returned for a token
whose signature is the right HMAC, whose ``alg`` is HS256 and whose ``exp`` lies ahead.

    python tests/fuzz/fuzz_jwt.py -runs=100000 -seed=1
"""

from __future__ import annotations

import json
import math

import atheris

with atheris.instrument_imports(
    include=[
        "secmw.auth.jwt",
        "secmw.auth.claims",
        "secmw.auth.cache",
        "jwt.api_jws",
        "jwt.api_jwt",
    ]
):
    import _common

    from secmw.auth import Credential, JWTAuthenticator
    from secmw.core.principal import Principal

AUTH = JWTAuthenticator(_common.SECRET, leeway=5, cache_size=0)
CLAIMS = ("exp", "nbf", "iat", "sub", "aud", "iss", "jti", "scope", "scp", "roles", "name", "x")
HEADERS = ("alg", "typ", "kid", "crit", "b64", "jwk", "jku", "x5c", "cty", "zip")
ALGS = ("HS256", "hs256", "none", "None", "RS256", "ES256", "HS512", "")
NUMBERS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e308",
    "0",
    "-0",
    "1.5",
    "9" * 300,
    "9" * 4000,
)
# "9" * 4000 (past the float range) belongs here too once jwt.py stops overflowing on it; see
# test_jwt_signed_exp_beyond_float_range_gets_a_decision.


def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> str:
    """JSON text for one value, including what ``json.dumps`` would never write."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 6)
    if kind == 0:
        return str(fdp.ConsumeInt(8))
    if kind == 1:
        return str(_common.now() + fdp.ConsumeIntInRange(-100, 100))
    if kind == 2:
        return NUMBERS[fdp.ConsumeIntInRange(0, len(NUMBERS) - 1)]
    if kind == 3:
        value = fdp.ConsumeFloat()
        return repr(value) if math.isfinite(value) else "1e999"
    if kind == 4:
        return json.dumps(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40)))
    if kind == 5:
        return ("true", "false", "null")[fdp.ConsumeIntInRange(0, 2)]
    if kind == 6:
        return "[" * 600 + "]" * 600  # deep nesting
    if kind in (7, 8):
        count = fdp.ConsumeIntInRange(0, 4)
        return "[" + ",".join(json_value(fdp, depth + 1) for _ in range(count)) + "]"
    return json_object(fdp, CLAIMS, depth + 1)


def json_members(fdp: atheris.FuzzedDataProvider, names: tuple[str, ...], depth: int = 0) -> str:
    """Comma-separated JSON members whose keys come mostly from ``names``; duplicates allowed."""
    members = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if fdp.ConsumeProbability() < 0.8:
            name = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
        else:
            name = fdp.ConsumeUnicode(8)
        if name == "alg" and fdp.ConsumeBool():
            value = json.dumps(ALGS[fdp.ConsumeIntInRange(0, len(ALGS) - 1)])
        else:
            value = json_value(fdp, depth)
        members.append(f"{json.dumps(name)}:{value}")
    return ",".join(members)


def json_object(fdp: atheris.FuzzedDataProvider, names: tuple[str, ...], depth: int = 0) -> str:
    """A JSON object of :func:`json_members`."""
    return "{" + json_members(fdp, names, depth) + "}"


def extend(base: str, more: str) -> str:
    """``base`` (an object's opening members) followed by ``more``, closed."""
    return "{" + base + ("," + more if more else "") + "}"


def token(fdp: atheris.FuzzedDataProvider) -> str:
    """A token-shaped string, shaped by the input."""
    mode = fdp.ConsumeIntInRange(0, 5)
    if mode == 0:  # anything at all
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)).decode("latin-1")
    if mode == 1:  # three segments of base64url junk
        return ".".join(_common.b64url(fdp.ConsumeBytes(40)) for _ in range(3))
    if mode == 2:  # raw header and payload bytes, correctly signed
        raw_header = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 100))
        return _common.sign_hs256(raw_header, fdp.ConsumeBytes(200))
    if mode == 5:  # arbitrary header and claims objects, correctly signed
        header, payload = json_object(fdp, HEADERS), json_object(fdp, CLAIMS)
    else:  # a valid token whose header and claims get members added (later duplicates win)
        extra = json_members(fdp, HEADERS) if fdp.ConsumeProbability() < 0.3 else ""
        header = extend('"alg":"HS256"', extra)
        exp = str(_common.now() + 60) if fdp.ConsumeBool() else json_value(fdp)
        valid = f'"sub":"user-1","exp":{exp}'
        payload = extend(valid, json_members(fdp, CLAIMS))
    signed = _common.sign_hs256(header.encode(), payload.encode())
    if mode == 4:  # flip one character somewhere
        index = fdp.ConsumeIntInRange(0, len(signed) - 1)
        signed = signed[:index] + chr(fdp.ConsumeIntInRange(32, 126)) + signed[index + 1 :]
    return signed


def test_one_input(data: bytes) -> None:
    """Verification decides, and only authentic, unexpired HS256 tokens admit."""
    fdp = atheris.FuzzedDataProvider(data)
    text = token(fdp)
    result = AUTH.verify(Credential("bearer", text))
    _common.check_decision(result)
    if isinstance(result, Principal):
        if not _common.is_authentic(text):
            raise AssertionError(f"admitted a token with a wrong signature: {text!r}")
        header = json.loads(_common.segment(text, 0))
        if header.get("alg") != "HS256":
            raise AssertionError(f"admitted alg {header.get('alg')!r}")
        if not int(result.claims["exp"]) > _common.now() - 10:
            raise AssertionError("admitted an expired token")


if __name__ == "__main__":
    _common.fuzz(test_one_input)
