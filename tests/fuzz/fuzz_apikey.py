"""Fuzz API-key extraction and lookup, from the header (repeated too) and the query string.

python tests/fuzz/fuzz_apikey.py -runs=100000 -seed=1
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(
    include=["secmw.auth.apikey", "secmw.auth.base", "secmw.core.request", "secmw.core.fields"]
):
    import _common

    from secmw.auth import APIKeyAuthenticator, Credential
    from secmw.core.principal import Principal

CHAIN = _common.make_chain()
APIKEY = next(a for a in CHAIN.authenticators if isinstance(a, APIKeyAuthenticator))


def test_one_input(data: bytes) -> None:
    """Any key decides; only the configured key admits."""
    fdp = atheris.FuzzedDataProvider(data)
    headers = []
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 120)).decode("latin-1")
        if fdp.ConsumeBool():
            value = _common.API_KEY + value
        name = "X-API-Key" if fdp.ConsumeBool() else "x-api-key"
        headers.append((name, value))
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    if fdp.ConsumeBool():
        query = b"api_key=" + query
    view = _common.request(headers, query=query)
    extracted = APIKEY.extract(view, None)
    if isinstance(extracted, Credential):
        result = APIKEY.verify(extracted)
        _common.check_decision(result)
        if isinstance(result, Principal) != (extracted.secret == _common.API_KEY):
            raise AssertionError(f"key check wrong for {extracted.secret!r}")
    else:
        _common.check_decision(extracted)
    _common.check_decision(_common.decide(CHAIN, view))


if __name__ == "__main__":
    _common.fuzz(test_one_input)
