"""Header fields and cookies as secmw reads them: case-insensitive, multi-valued, read-only.

Header names are lower-cased; values are decoded as latin-1 (RFC 9110 §5.5: field values are
octets, and latin-1 maps each byte to one character, so nothing is lost or rejected here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MAX_COOKIE_BYTES = 65536
"""The most ``Cookie`` field characters read; above it a request's cookies are unknown. Above
what common servers accept in one header field (8 KiB in gunicorn and nginx, 16 KiB in h11),
so it only bounds the work of servers that set no limit of their own."""


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-valued, read-only headers.

    ``headers[name]`` and ``get`` return the values of repeated fields joined with ``", "`` (the
    RFC 9110 §5.3 combination); ``getlist`` returns each field line separately.
    """

    __slots__ = ("_fields",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        fields: dict[str, list[str]] = {}
        for name, value in pairs:
            fields.setdefault(name.lower(), []).append(value)
        self._fields = fields

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Headers from ASGI's raw ``(name, value)`` byte pairs (the per-request fast path)."""
        fields: dict[str, list[str]] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            found = fields.get(key)
            if found is None:
                fields[key] = [value.decode("latin-1")]
            else:
                found.append(value.decode("latin-1"))
        headers = cls()
        headers._fields = fields
        return headers

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._fields[name.lower()])

    def __iter__(self) -> Any:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def getlist(self, name: str) -> list[str]:
        """Every field line with this name, in order (empty list when absent)."""
        return list(self._fields.get(name.lower(), ()))


class Cookies(Mapping[str, str]):
    """A request's cookies: name to value (the first value of a repeated name), read-only.

    Attributes:
        repeated: Names sent more than once: a server and an app may each pick a different
            one of the values, so a credential cookie among them must not be trusted.
        complete: False when the ``Cookie`` fields were too large to read (the jar is then
            empty): such a request is not cookie-less, it is unknown.
    """

    __slots__ = ("_jar", "complete", "repeated")

    def __init__(
        self,
        jar: dict[str, str] | None = None,
        repeated: frozenset[str] = frozenset(),
        complete: bool = True,
    ) -> None:
        self._jar = jar or {}
        self.repeated = repeated
        self.complete = complete

    def __getitem__(self, name: str) -> str:
        return self._jar[name]

    def __iter__(self) -> Any:
        return iter(self._jar)

    def __len__(self) -> int:
        return len(self._jar)


def parse_cookies(lines: Iterable[str], limit: int = MAX_COOKIE_BYTES) -> Cookies:
    """Cookies from ``Cookie`` field lines, in linear time (RFC 6265 §5.4).

    Pairs split on ``;`` then on the first ``=``; one pair of surrounding double quotes is removed
    and nothing is unescaped (the standard library's ``SimpleCookie`` unquoting is quadratic,
    CVE-2024-7592). Every pair is read, so the app's parser and secmw see the same cookies: a
    prefix would let cookies planted ahead of a credential hide it from secmw alone. Fields
    longer than ``limit`` characters in all are not read: the jar is empty and marked
    incomplete. The first value of a repeated name is kept and the name listed in
    ``repeated``; pairs without ``=`` or with an empty name are skipped.
    """
    text = "; ".join(lines)
    if len(text) > limit:
        return Cookies(complete=False)
    jar: dict[str, str] = {}
    repeated: set[str] = set()
    hidden: list[str] = []
    for pair in text.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name in jar:
            repeated.add(name)
        else:
            jar[name] = value
        if "," in value:
            hidden += _names_after_commas(value)
    if hidden:
        # WSGI servers join repeated Cookie fields with "," (PEP 3333 leaves it to them), so in
        # "sid=a,sid=b" the name is sent twice although no parser sees the second pair.
        seen: set[str] = set()
        for name in hidden:
            if name in jar or name in seen:
                repeated.add(name)
            seen.add(name)
    return Cookies(jar, frozenset(repeated))


def _names_after_commas(value: str) -> list[str]:
    pairs = (piece.partition("=") for piece in value.split(",")[1:])
    return [name.strip() for name, eq, _ in pairs if eq and name.strip()]
