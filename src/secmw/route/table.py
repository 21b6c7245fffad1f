"""Reading an app's route table: Starlette / FastAPI ``routes`` (mounts included) and Flask's
``url_map``, as path patterns of :mod:`secmw.core.paths` with their methods and marks.

Read by duck typing, so no framework is imported: a route has ``path`` and ``endpoint``, a mount
``path`` and ``app``, a Flask app ``url_map`` and ``view_functions``. A view is found through
``functools.partial`` (FastOpenAPI on Starlette), ``__wrapped__`` and the cells of a closure
(FastOpenAPI on Flask), one level deep.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from secmw.errors import ConfigurationError
from secmw.route.marks import Marks, marks_of

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STARLETTE_PARAM = re.compile(r"^\{(?P<name>" + _NAME + r")(?::(?P<conv>" + _NAME + r"))?\}$")
_FLASK_PARAM = re.compile(
    r"^<(?:(?P<conv>" + _NAME + r")(?:\([^)]*\))?:)?(?P<name>" + _NAME + r")>$"
)
_MAX_DEPTH = 16


@dataclass(frozen=True)
class RouteEntry:
    """One route: its path pattern (relative to the stack's root), methods (empty: every
    method), the marks of its view (None: undecorated) and how to name it in messages."""

    pattern: str | None
    methods: tuple[str, ...]
    marks: Marks | None
    label: str
    view: Any = field(repr=False, compare=False, default=None)


@dataclass
class RouteTable:
    """The routes found, in the router's order, and the sub-apps whose routes cannot be read."""

    routes: list[RouteEntry] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    found: bool = False
    """A route table was found at all."""


def read_routes(app: Any) -> RouteTable:
    """The route table under ``app`` (an app, or a middleware wrapping one through ``.app``)."""
    table = RouteTable()
    owner = find_table(app)
    if owner is not None:
        table.found = True
        _read(owner, "", table, 0)
    return table


def find_table(app: Any) -> Any:
    """The first object with a route table down the ``.app`` chain from ``app`` (a bound
    ``wsgi_app`` leads to its Flask app), or None."""
    current = app
    for _ in range(_MAX_DEPTH):
        if current is None:
            return None
        if _is_flask(current) or isinstance(getattr(current, "routes", None), list):
            return current
        owner = getattr(current, "__self__", None)  # Flask's bound ``app.wsgi_app``
        if owner is not None and _is_flask(owner):
            return owner
        current = getattr(current, "app", None)
    return None


def _is_flask(app: Any) -> bool:
    return hasattr(app, "url_map") and isinstance(getattr(app, "view_functions", None), dict)


def _read(owner: Any, prefix: str, table: RouteTable, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if _is_flask(owner):
        _read_flask(owner, prefix, table)
        return
    _read_routes(owner.routes, prefix, table, depth)


def _read_routes(routes: Any, prefix: str, table: RouteTable, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):  # FastAPI's included router: its routes with their prefixes
            found = [getattr(c, "starlette_route", None) or c for c in candidates()]
            _read_routes(found, prefix, table, depth + 1)
            continue
        path = getattr(route, "path", None)
        endpoint = getattr(route, "endpoint", None)
        if isinstance(path, str) and endpoint is not None:
            _add_starlette(route, prefix + path, endpoint, table)
        elif isinstance(path, str) and hasattr(route, "app"):
            _read_mount(route, prefix + path.rstrip("/"), table, depth)
        else:  # a Host route, or a route type without a path
            table.opaque.append(f"{type(route).__name__} {getattr(route, 'host', '')}".strip())


def _read_mount(mount: Any, prefix: str, table: RouteTable, depth: int) -> None:
    # A sub-app protected by a stack of its own enforces its own marks.
    if _has_stack(mount.app):
        return
    sub = find_table(mount.app)
    if sub is None:
        table.opaque.append(f"mount {prefix or '/'} ({type(mount.app).__name__})")
        return
    _read(sub, prefix, table, depth + 1)


def _has_stack(app: Any) -> bool:
    current = app
    for _ in range(_MAX_DEPTH):
        if current is None:
            return False
        if getattr(current, "reads_routes", False):
            return True
        # A Starlette or FastAPI app builds its middleware at startup: look at what was added.
        added = getattr(current, "user_middleware", None) or ()
        if any(getattr(getattr(m, "cls", None), "reads_routes", False) for m in added):
            return True
        # A Flask app's stack sits on its ``wsgi_app``.
        current = current.wsgi_app if _is_flask(current) else getattr(current, "app", None)
    return False


def _add_starlette(route: Any, template: str, endpoint: Any, table: RouteTable) -> None:
    methods = getattr(route, "methods", None)
    if methods is None:
        methods = () if hasattr(route, "methods") else ("WEBSOCKET",)
    marks, view = _view_marks(endpoint)
    label = f"{' '.join(sorted(methods)) or 'ANY'} {template}"
    pattern = _pattern(template, _STARLETTE_PARAM, path_conv="path", label=label, strict=marks)
    table.routes.append(RouteEntry(pattern, _methods(methods), marks, label, view))


def _read_flask(app: Any, prefix: str, table: RouteTable) -> None:
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        marks, found = _view_marks(view)
        methods = rule.methods or ()
        template = prefix + rule.rule
        label = f"{' '.join(sorted(m for m in methods if m != 'OPTIONS'))} {template}"
        pattern = _pattern(template, _FLASK_PARAM, path_conv="path", label=label, strict=marks)
        table.routes.append(RouteEntry(pattern, _methods(methods), marks, label, found))


def _methods(methods: Any) -> tuple[str, ...]:
    # OPTIONS is left out: preflights are the CORS layer's, and an automatic OPTIONS answer
    # (Flask, Starlette) reveals nothing but the allowed methods.
    upper = {str(m).upper() for m in methods} - {"OPTIONS"}
    if "GET" in upper:
        upper.add("HEAD")
    return tuple(sorted(upper)) if upper or not methods else ("OPTIONS",)


def _pattern(
    template: str, param: re.Pattern[str], *, path_conv: str, label: str, strict: Any
) -> str | None:
    """The path pattern of a route template; None when it has none (an error for a decorated
    route, ``strict``: its rules could not be written)."""
    segments = template.strip("/").split("/") if template.strip("/") else []
    out: list[str] = []
    why = None
    for index, segment in enumerate(segments):
        found = param.match(segment)
        if found is None:
            if any(c in segment for c in "{}<>*"):
                why = "a parameter shares a segment with text"
                break
            out.append(segment)
        elif found.group("conv") != path_conv:
            out.append("{" + found.group("name") + "}")
        elif index == len(segments) - 1:
            out.append("**")
        else:
            why = "a path parameter before the last segment"
            break
    if why is None:
        return "/" + "/".join(out)
    if strict:
        raise ConfigurationError(f"route {label}: its path cannot be written as a rule ({why})")
    return None


def _view_marks(endpoint: Any) -> tuple[Marks | None, Any]:
    for candidate in _candidates(endpoint):
        found = marks_of(candidate)
        if found is not None:
            return found, candidate
    return None, endpoint


def _candidates(endpoint: Any) -> Iterator[Any]:
    yield endpoint
    if isinstance(endpoint, functools.partial):
        yield endpoint.func
        yield from endpoint.keywords.values()
    wrapped = getattr(endpoint, "__wrapped__", None)
    if wrapped is not None:
        yield wrapped
    for cell in getattr(endpoint, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(content):
            yield content
