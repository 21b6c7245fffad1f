"""Fuzz the Basic credential decoder (RFC 7617) and the password check for the known user.

python tests/fuzz/fuzz_basic.py -runs=100000 -seed=1
"""

from __future__ import annotations

import base64

import atheris

with atheris.instrument_imports(include=["secmw.auth.basic", "secmw.auth.base"]):
    import _common

    from secmw.auth import BasicAuthenticator, Credential, Found
    from secmw.core.principal import Principal

CHAIN = _common.make_chain()
BASIC = next(a for a in CHAIN.authenticators if isinstance(a, BasicAuthenticator))


def parameter(fdp: atheris.FuzzedDataProvider) -> str:
    """A Basic parameter: raw text, or base64 of fuzzed bytes (often ``alice:...``)."""
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        return raw.decode("latin-1")
    if mode == 1:
        raw = _common.USER.encode() + b":" + raw
    elif mode == 2:
        raw = _common.USER.encode() + b":" + _common.PASSWORD.encode() + raw
    text = base64.b64encode(raw).decode()
    return text.rstrip("=") if fdp.ConsumeBool() else text


def test_one_input(data: bytes) -> None:
    """Decoding decides (400 on garbage); only the exact password admits the known user."""
    fdp = atheris.FuzzedDataProvider(data)
    param = parameter(fdp)
    extracted = BASIC.extract(_common.request(), param)
    _common.check_decision(extracted if not isinstance(extracted, Credential) else None)
    if isinstance(extracted, Credential) and extracted.username == _common.USER:
        result = BASIC.verify(extracted)
        _common.check_decision(result)
        if isinstance(result, Principal) != (extracted.secret == _common.PASSWORD):
            raise AssertionError(f"password check wrong for {extracted.secret!r}")
    found = CHAIN.find(_common.request([("authorization", "Basic " + param)]))
    if not isinstance(found, Found):
        _common.check_decision(found)


if __name__ == "__main__":
    _common.fuzz(test_one_input)
