"""Fuzz path normalization and path-pattern matching.

Properties: the normal form starts with ``/``, holds no ``//`` and no ``.`` or ``..`` segment,
and normalizing it again changes nothing; matching a normalized path never raises.

    python tests/fuzz/fuzz_paths.py -runs=100000 -seed=1
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["secmw.core.request", "secmw.core.paths"]):
    import _common

    from secmw.core.paths import PathSet
    from secmw.core.request import normalize_path

PATTERNS = PathSet(["/admin/*", "/items/{id}", "/health", "/a/*/c"])
ALPHABET = ("/", ".", "..", "a", "admin", "%2e", "%2f", "\\", "\x00", "//", "/./", "/../", "é")


def path(fdp: atheris.FuzzedDataProvider) -> str:
    """Either raw text or a path assembled from separators and dot segments."""
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    count = fdp.ConsumeIntInRange(0, 30)
    return "".join(ALPHABET[fdp.ConsumeIntInRange(0, len(ALPHABET) - 1)] for _ in range(count))


def test_one_input(data: bytes) -> None:
    """normalize_path is idempotent and yields a clean absolute path."""
    fdp = atheris.FuzzedDataProvider(data)
    raw = path(fdp)
    normal = normalize_path(raw)
    if not normal.startswith("/") or "//" in normal:
        raise AssertionError(f"{raw!r} -> {normal!r}")
    if any(segment in (".", "..") for segment in normal.split("/")):
        raise AssertionError(f"dot segment left in {normal!r}")
    if normalize_path(normal) != normal:
        raise AssertionError(f"not idempotent: {raw!r} -> {normal!r}")
    PATTERNS.match(normal)


if __name__ == "__main__":
    _common.fuzz(test_one_input)
