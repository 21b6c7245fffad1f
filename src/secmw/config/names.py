"""The environment variable names of settings: ``SECMW_`` and the setting's path.

Features name a setting by its path (``rate_limit.auth_failures``); this is the one place that
turns a path into the variable a user sets (``SECMW_RATE_LIMIT__AUTH_FAILURES``).
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

ENV_PREFIX = "SECMW_"


def variable_name(*loc: object) -> str:
    """The environment variable for a settings location: ``("jwt", "secret")`` ->
    ``SECMW_JWT__SECRET``."""
    parts = [str(part).upper() for part in loc if not isinstance(part, int)]
    return ENV_PREFIX + "__".join(parts)


_PATH = re.compile(
    r"(?<![\w.\-/])([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)"  # jwt.secret, headers.paths
    r"(\[[^\]\s]*\](?:\.[a-z][a-z0-9_]*)*)?"  # [/docs].csp: a key, then fields below it
    r"(?![\w\-])"
)


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds (also inside ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for member in get_args(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return member
    return None


def _known_prefix(model: type[BaseModel], parts: list[str]) -> int:
    """How many leading ``parts`` name a setting of ``model`` (0: not a setting path)."""
    count = 0
    current: type[BaseModel] | None = model
    for part in parts:
        if current is None or part not in current.model_fields:
            break
        count += 1
        current = section_model(current.model_fields[part].annotation)
    return count if count >= 2 else 0


def name_variables(text: str, model: type[BaseModel]) -> str:
    """``text`` with each setting path of ``model`` in it (``jwt.secret``, also followed by a
    key such as ``headers.paths[/docs]``) written as its variable (``SECMW_JWT__SECRET``)."""

    def rename(match: re.Match[str]) -> str:
        parts = match.group(1).split(".")
        known = _known_prefix(model, parts)
        if not known:
            return match.group(0)
        name = variable_name(*parts[:known])
        keyed = match.group(2)
        if known < len(parts) or not keyed:
            return name + "".join("." + part for part in parts[known:]) + (keyed or "")
        key, *below = keyed.split("].")
        return name + key + ("]" if below else "") + "".join("__" + p.upper() for p in below)

    return _PATH.sub(rename, text)
