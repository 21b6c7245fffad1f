"""The route decorators: each marks a view with what it asks of the stack, and nothing else.

A decorator returns the view itself with a :class:`Marks` value on the ``__secmw_route__``
attribute; the stack reads the app's route table when it starts and compiles the marks into
per-path rules (:mod:`secmw.route.compile`). So a decorator works above or below the framework's
own route decorator, on Starlette, FastAPI, FastOpenAPI and Flask views alike.

Two decorators that contradict each other (``public`` with ``requires``, two ``limit``) raise
:class:`~secmw.errors.ConfigurationError` where they are written, at import.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, get_args

from limits import parse_many
from pydantic import ValidationError

from secmw.auth.settings import ScopeRule
from secmw.errors import ConfigurationError
from secmw.headers.settings import PathPolicy
from secmw.ratelimit.settings import KeyKind

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__secmw_route__"
EXEMPTABLE = ("rate_limit",)
"""Layers a route can leave out (``auth``: use :func:`public`)."""

Access = Literal["public", "authenticated"]


@dataclass(frozen=True)
class LimitMark:
    """``@route.limit``'s arguments."""

    limit: str
    key: KeyKind | None = None
    cost: int = 1
    name: str | None = None
    per_path: bool = False
    include_default: bool = True


@dataclass(frozen=True)
class Marks:
    """What a view's decorators ask of the stack (one value per kind)."""

    limit: LimitMark | None = None
    exempt: frozenset[str] = frozenset()
    access: Access | None = None
    scopes: tuple[str, ...] = ()
    headers: PathPolicy | None = None
    written: tuple[str, ...] = field(default=())
    """The decorators as written, for messages."""

    def describe(self) -> str:
        """The decorators, as ``@route.limit, @route.public``."""
        return ", ".join(f"@route.{name}" for name in self.written)


_marked: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every view a decorator marked: the stack warns about those it cannot find in a route table."""


def marks_of(view: Any) -> Marks | None:
    """The marks on ``view``, or None."""
    found = getattr(view, ATTRIBUTE, None)
    return found if isinstance(found, Marks) else None


def marked_views() -> list[Any]:
    """The views marked so far (alive)."""
    return list(_marked)


def _mark(view: F, name: str, **changes: Any) -> F:
    if not callable(view):
        raise TypeError(f"@route.{name} decorates a view function or class, not {view!r}")
    current = marks_of(view) or Marks()
    for kind, value in changes.items():
        held = getattr(current, kind)
        if held and held != value:
            raise ConfigurationError(
                f"{_where(view)}: @route.{name} contradicts {current.describe()} already on it"
            )
    marks = replace(current, written=(*current.written, name), **changes)
    if marks.limit is not None and "rate_limit" in marks.exempt:
        raise ConfigurationError(
            f"{_where(view)}: @route.limit contradicts @route.exempt('rate_limit')"
        )
    setattr(view, ATTRIBUTE, marks)
    with contextlib.suppress(TypeError):  # not weakly referable: it cannot be warned about
        _marked.add(view)
    return view


def _where(view: Any) -> str:
    module = getattr(view, "__module__", None) or "?"
    return f"view {module}.{getattr(view, '__qualname__', repr(view))}"


def limit(
    value: str,
    *,
    key: KeyKind | None = None,
    cost: int = 1,
    name: str | None = None,
    per_path: bool = False,
    include_default: bool = True,
) -> Callable[[F], F]:
    """Rate-limit this route: ``@route.limit("5/minute")``, as an item of ``rate_limit.rules``.

    Args:
        value: Limits in ``limits`` notation (``"5/minute"``, ``"5/minute;100/day"``).
        key: What a budget belongs to (``"ip"``, ``"principal"``, ``"apikey"``,
            ``"principal-or-ip"``); default: the global ``rate_limit.key``.
        cost: Units each request costs.
        name: Policy name in the RateLimit fields; default: methods and path.
        per_path: One budget per concrete path (``/items/1``, ``/items/2``), not per route.
        include_default: Also charge the default limits.
    """
    try:
        parsed = parse_many(value)
    except ValueError as exc:
        raise ConfigurationError(f"@route.limit({value!r}): {exc}") from None
    if not parsed:
        raise ConfigurationError(f"@route.limit({value!r}): no limit")
    if key is not None and key not in get_args(KeyKind):
        raise ConfigurationError(f"@route.limit: key must be one of {get_args(KeyKind)}")
    if not isinstance(cost, int) or cost < 1:
        raise ConfigurationError("@route.limit: cost must be an integer of at least 1")
    mark = LimitMark(value, key, cost, name, per_path, include_default)
    return lambda view: _mark(view, "limit", limit=mark)


def exempt(*layers: str) -> Callable[[F], F]:
    """Leave this route out of the named layers: ``@route.exempt("rate_limit")`` adds its path
    to ``rate_limit.exempt.paths`` (the whole path, every method). For authentication, use
    :func:`public`."""
    unknown = [layer for layer in layers if layer not in EXEMPTABLE]
    if unknown or not layers:
        raise ConfigurationError(
            f"@route.exempt{layers!r}: name one or more of {EXEMPTABLE}"
            + (" (for authentication use @route.public)" if "auth" in unknown else "")
        )
    return lambda view: _mark(view, "exempt", exempt=frozenset(layers))


def public(view: F) -> F:
    """Anonymous callers are welcome here even under ``auth.required``: the route's path joins
    ``auth.public`` (the whole path, every method)."""
    return _mark(view, "public", access="public")


def requires_auth(view: F) -> F:
    """Anonymous callers get 401 with the challenges (an ``auth.scopes`` rule without scopes)."""
    return _mark(view, "requires_auth", access="authenticated")


def requires(*scopes: str) -> Callable[[F], F]:
    """Callers must hold every scope: anonymous ones get 401 with the challenges, others lacking
    a scope 403 ``insufficient_scope`` with the RFC 6750 challenge (an ``auth.scopes`` rule)."""
    if not scopes:
        raise ConfigurationError("@route.requires: name at least one scope")
    try:
        ScopeRule(path="/", scopes=list(scopes))
    except ValidationError as exc:
        message = exc.errors(include_url=False, include_input=False)[0]["msg"]
        raise ConfigurationError(f"@route.requires: {message}") from None
    return lambda view: _mark(view, "requires", access="authenticated", scopes=tuple(scopes))


def headers(**policy: Any) -> Callable[[F], F]:
    """This route's header policy, as a ``headers.paths`` entry (same fields: ``csp``,
    ``preset``, ``frame_options``, ``referrer_policy``, ``permissions_policy``, ``coop``,
    ``corp``, ``coep``, ``csp_report_only``); it covers the whole path, every method."""
    try:
        built = PathPolicy(**policy)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"@route.headers: {where}: {first['msg']}") from None
    return lambda view: _mark(view, "headers", headers=built)
