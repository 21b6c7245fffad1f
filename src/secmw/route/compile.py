"""Compiling route marks into the per-path rules the environment gives, refusing conflicts.

Each decorated route becomes a setting entry keyed by its path pattern:

- ``@route.limit`` an item of ``rate_limit.rules`` (with the route's methods);
- ``@route.exempt("rate_limit")`` an entry of ``rate_limit.exempt.paths``;
- ``@route.public`` an entry of ``auth.public``;
- ``@route.requires_auth`` / ``@route.requires`` an item of ``auth.scopes`` (with its methods);
- ``@route.headers`` an entry of ``headers.paths``.

The decorated rules come before those of the environment, in the router's order. A decorator and
an environment rule of the same kind that both cover a route are a conflict: the stack refuses to
start and names both, rather than pick one silently. So is a decorator whose rule would reach
another route the router sends elsewhere (``@route.public`` on ``GET /items/{id}`` while
``POST /items/{id}`` is not public, or a route before it that its pattern covers): rules cover a
path, and a decorator must not widen onto a route that does not carry it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from secmw.core.paths import PathTable
from secmw.core.section import settings_or_environment
from secmw.errors import ConfigurationError
from secmw.route.marks import Marks
from secmw.route.table import RouteEntry, RouteTable

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings

_PATH_WIDE = ("exempt", "public", "headers")
_METHOD_WIDE = ("limit", "access")


def apply_routes(settings: SecuritySettings, table: RouteTable) -> SecuritySettings:
    """``settings`` with the rules of the decorated routes of ``table`` added.

    Raises:
        ConfigurationError: a decorator conflicting with an environment rule, or reaching a
            route that does not carry it.
    """
    decorated = [entry for entry in table.routes if entry.marks is not None]
    if not decorated:
        return settings
    _check_reach(table.routes)
    _check_environment(settings, decorated)
    rl, auth, hd = settings.rate_limit, settings.auth, settings.headers
    rules: list[Any] = []
    exempt: list[str] = []
    public: list[str] = []
    scopes: list[Any] = []
    paths: dict[str, Any] = {}
    for entry in decorated:
        marks, pattern = entry.marks, entry.pattern
        if marks is None or pattern is None:  # a decorated route always has a pattern
            continue
        if marks.limit is not None:
            mark = marks.limit
            rules.append(
                {
                    "path": pattern,
                    "methods": list(entry.methods),
                    "limit": mark.limit,
                    "cost": mark.cost,
                    "name": mark.name,
                    "key": mark.key,
                    "per_path": mark.per_path,
                    "include_default": mark.include_default,
                }
            )
        if "rate_limit" in marks.exempt:
            exempt.append(pattern)
        if marks.access == "public":
            public.append(pattern)
        elif marks.access == "authenticated":
            scopes.append({"path": pattern, "methods": list(entry.methods), "scopes": marks.scopes})
        if marks.headers is not None:
            paths.setdefault(pattern, marks.headers)
    overrides = {
        "rate_limit": {
            **dict(rl),
            "rules": [*rules, *rl.rules],
            "exempt": {**dict(rl.exempt), "paths": [*exempt, *rl.exempt.paths]},
        },
        "auth": {
            **dict(auth),
            "public": [*public, *auth.public],
            "scopes": [*scopes, *auth.scopes],
        },
        "headers": {**dict(hd), "paths": {**paths, **hd.paths}},
    }
    merged: SecuritySettings = settings_or_environment(settings, overrides)
    return merged


def _kinds(marks: Marks) -> dict[str, object]:
    return {
        "limit": marks.limit,
        "exempt": marks.exempt or None,
        "public": marks.access == "public" or None,
        "access": (marks.access, marks.scopes) if marks.access == "authenticated" else None,
        "headers": marks.headers,
    }


def _overlap(a: tuple[str, ...], b: Iterable[str]) -> bool:
    other = set(b)
    return not a or not other or bool(set(a) & other)


@functools.lru_cache(maxsize=4096)
def _pattern_table(pattern: str) -> PathTable[None]:
    return PathTable([(pattern, None)])


def _covers(pattern: str, path: str | None) -> bool:
    return path is not None and _pattern_table(pattern).match(path) is not None


def _head(pattern: str | None) -> str:
    return (pattern or "/").lstrip("/").split("/", 1)[0].lower()


def _is_variable(segment: str) -> bool:
    return segment.startswith(("{", "*")) or not segment


def _check_reach(routes: list[RouteEntry]) -> None:
    kinds = [_kinds(route.marks or Marks()) for route in routes]
    by_head: dict[str, list[int]] = {}  # first path segment -> the routes starting with it
    for position, route in enumerate(routes):
        by_head.setdefault(_head(route.pattern), []).append(position)
    for index, entry in enumerate(routes):
        if entry.marks is None or entry.pattern is None:
            continue
        head = _head(entry.pattern)
        # A pattern starting with a literal segment covers only routes starting with it.
        candidates = range(len(routes)) if _is_variable(head) else by_head.get(head, [])
        covered = [
            (position, routes[position])
            for position in candidates
            if position != index and _covers(entry.pattern, routes[position].pattern)
        ]
        for kind, value in kinds[index].items():
            if value is None:
                continue
            wide = kind in _PATH_WIDE
            for position, other in covered:
                if not wide and (position > index or not _overlap(entry.methods, other.methods)):
                    continue  # after it, the router never reaches ``other`` for these methods
                theirs = kinds[position]
                # A public route before a protected pattern stays public (auth.public wins).
                if theirs[kind] is None and not (kind == "access" and theirs["public"]):
                    raise ConfigurationError(
                        f"route {entry.label}: {entry.marks.describe()} would also cover route"
                        f" {other.label}, which does not carry it; decorate that route too"
                    )


def _check_environment(settings: SecuritySettings, decorated: list[RouteEntry]) -> None:
    rl, auth = settings.rate_limit, settings.auth
    for entry in decorated:
        marks, template = entry.marks, entry.pattern
        if marks is None or template is None:
            continue
        found: list[tuple[str, str]] = []
        if marks.limit is not None or marks.exempt:
            found += [
                ("rate_limit.rules", r.path)
                for r in rl.rules
                if _covers(r.path, template) and _overlap(entry.methods, r.methods)
            ]
        if marks.limit is not None:
            found += [
                ("rate_limit.exempt.paths", p) for p in rl.exempt.paths if _covers(p, template)
            ]
        if marks.access is not None:
            found += [
                ("auth.scopes", r.path)
                for r in auth.scopes
                if _covers(r.path, template) and _overlap(entry.methods, r.methods)
            ]
        if marks.access == "authenticated":
            found += [("auth.public", p) for p in auth.public if _covers(p, template)]
        if marks.headers is not None:
            found += [("headers.paths", p) for p in settings.headers.paths if _covers(p, template)]
        if found:
            setting, pattern = found[0]
            raise ConfigurationError(
                f"route {entry.label}: {marks.describe()} conflicts with the {setting} entry"
                f" {pattern!r}: remove one of them"
            )
