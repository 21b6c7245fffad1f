"""A bounded memo for answers derived from request data (paths, addresses, ids, plans)."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict that forgets everything once it holds ``cap`` entries.

    Keys come from clients, so the memory must stay bounded; clearing (rather than evicting one
    by one) keeps a hit a plain dict lookup, and a flood of distinct keys only costs computing
    the answers again.
    """

    __slots__ = ("cap",)

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def remember(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (clearing first when full) and return it."""
        if len(self) >= self.cap:
            self.clear()
        self[key] = value
        return value
