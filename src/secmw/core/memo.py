"""A bounded memo for answers derived from request data (paths, addresses, ids, plans)."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], cap: int, key: K, value: V) -> V:
    """Store ``value`` under ``key`` in ``memo`` and return it, forgetting everything first once
    ``memo`` holds ``cap`` entries.

    Keys come from clients, so the memory must stay bounded; clearing (rather than evicting one
    by one) keeps a hit a plain dict lookup, and a flood of distinct keys only costs computing
    the answers again. The memos stay plain dicts: CPython's fast paths for ``d[k]`` and
    ``k in d`` apply to exact dicts only.
    """
    if len(memo) >= cap:
        memo.clear()
    memo[key] = value
    return value
