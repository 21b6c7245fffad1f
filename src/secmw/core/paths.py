"""Path patterns shared by every layer's per-path rules.

Syntax, matched against the normalized path, case-insensitively (so ``/Admin`` cannot dodge a
rule for ``/admin`` on a router that folds case):

- ``/health``: exactly that path (and ``/health/``).
- ``/items/{id}`` or ``/items/*`` in the middle: one segment, any value.
- a final ``/*`` or ``/**``: the prefix itself and anything below it (``/internal/*`` matches
  ``/internal``, ``/internal/`` and ``/internal/a/b``).

A list of patterns is compiled into one alternation, so matching costs one regex call however many
patterns there are; the first pattern in declaration order wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from secmw.core.memo import remember
from secmw.errors import ConfigurationError

T = TypeVar("T")
_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*(:[A-Za-z]+)?\}$")


def _pattern_regex(pattern: str) -> str:
    if not pattern.startswith("/"):
        raise ValueError(f"path pattern {pattern!r} must start with '/'")
    segments = pattern.strip("/").split("/") if pattern != "/" else []
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if last and segment in ("*", "**"):
            return "".join(parts) + "(?:/.*)?"
        if segment in ("*", "**") or _PARAM.match(segment):
            parts.append("/[^/]+")
        elif "*" in segment or "{" in segment or "}" in segment:
            raise ValueError(
                f"path pattern {pattern!r}: '*' and '{{name}}' stand alone in a segment"
            )
        else:
            parts.append("/" + re.escape(segment))
    return ("".join(parts) or "") + "/?"


_MEMO_CAP = 1024


class PathTable(Generic[T]):
    """Maps path patterns to values; ``match`` returns the first (pattern, value) that matches.

    Answers are remembered per path (a bounded memo, cleared when full: paths come from clients,
    and a flood of distinct ones only costs the regex again).
    """

    __slots__ = ("_entries", "_memo", "_regex")

    def __init__(self, entries: Iterable[tuple[str, T]], *, setting: str = "path pattern") -> None:
        self._entries: list[tuple[str, T]] = list(entries)
        alternatives = []
        for index, (pattern, _) in enumerate(self._entries):
            try:
                alternatives.append(f"(?P<p{index}>{_pattern_regex(pattern)})")
            except ValueError as exc:
                raise ConfigurationError(f"{setting}: {exc}") from None
        self._regex = (
            re.compile("(?:" + "|".join(alternatives) + r")\Z", re.IGNORECASE)
            if alternatives
            else None
        )
        self._memo: dict[str, tuple[str, T] | None] = {}

    def __bool__(self) -> bool:
        return self._regex is not None

    @property
    def patterns(self) -> Sequence[str]:
        """The patterns, in declaration order."""
        return [pattern for pattern, _ in self._entries]

    @property
    def entries(self) -> Sequence[tuple[str, T]]:
        """The (pattern, value) entries, in declaration order."""
        return list(self._entries)

    def match(self, path: str) -> tuple[str, T] | None:
        """The first entry whose pattern matches ``path`` (a normalized path), or None."""
        if self._regex is None:
            return None
        memo = self._memo
        if path in memo:
            return memo[path]
        found = self._regex.match(path)
        entry = None if found is None else self._entries[int(found.lastgroup[1:])]  # type: ignore[index]
        return remember(memo, _MEMO_CAP, path, entry)


class PathSet(PathTable[None]):
    """A set of path patterns: ``path in paths``."""

    def __init__(self, patterns: Iterable[str], *, setting: str = "path pattern") -> None:
        super().__init__(((pattern, None) for pattern in patterns), setting=setting)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.match(path) is not None
