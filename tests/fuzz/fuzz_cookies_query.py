"""Fuzz the request view's Cookie and query-string parsers and its header container.

python tests/fuzz/fuzz_cookies_query.py -runs=100000 -seed=1
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(
    include=["secmw.core.request", "secmw.core.fields", "http.cookies"]
):
    import _common


def test_one_input(data: bytes) -> None:
    """Cookies and query parameters always parse to text, whatever the bytes."""
    fdp = atheris.FuzzedDataProvider(data)
    lines = [
        ("cookie", fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)).decode("latin-1"))
        for _ in range(fdp.ConsumeIntInRange(0, 3))
    ]
    query = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    name = fdp.ConsumeBytes(8).decode("latin-1")
    view = _common.request(lines, query=query)
    cookies = view.cookies
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items()):
        raise AssertionError(f"cookie jar holds non-text: {cookies!r}")
    if view.cookies is not cookies:
        raise AssertionError("cookies parsed twice")
    for parameter in (name, "api_key", ""):
        values = view.query_params(parameter)
        if not all(isinstance(v, str) for v in values):
            raise AssertionError(f"query values are not text: {values!r}")
    if view.headers.getlist("cookie") != [value for _, value in lines]:
        raise AssertionError("repeated Cookie fields were not kept in order")


if __name__ == "__main__":
    _common.fuzz(test_one_input)
