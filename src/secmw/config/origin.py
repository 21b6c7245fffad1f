"""Where each effective setting came from: an argument, the environment, ``.env``, the
configuration file, a secret file or the default.

The sources are asked again, in the order ``SecuritySettings`` merges them (the first that
holds a setting wins), so ``secmw config`` and the configuration errors name the place a value
was actually written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource

from secmw.config.file import config_file, file_key, read_settings_table, setting_paths
from secmw.config.names import variable_name

SECRET_FILE_SUFFIX = "_file"
SECRET_SHOWN = "**********"
"""How a value read from a secret file is shown (it is never printed)."""


@dataclass(frozen=True)
class Origin:
    """One setting's source: ``kind`` (``argument``, ``environment``, ``.env``, ``file``,
    ``secret file``, ``default``) and what names it there (a variable, a file's key, a path)."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


DEFAULT = Origin("default")


class Origins:
    """The sources of one settings class, read once.

    Args:
        settings_cls: ``SecuritySettings``.
        arguments: The keyword arguments it was built with (sections as dicts or objects).
        environ: The process environment.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        arguments: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.settings_cls = settings_cls
        self.environ = {name.upper() for name in environ}
        self.path = config_file(environ)
        file: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            file = read_settings_table(self.path, settings_cls)
        self.layers: list[tuple[str, Mapping[str, Any]]] = [
            ("argument", dict(arguments or {})),
            ("environment", EnvSettingsSource(settings_cls)()),
            (".env", DotEnvSettingsSource(settings_cls)()),
            ("file", file),
        ]

    def of(self, loc: tuple[str | int, ...]) -> Origin:
        """Where the value at ``loc`` (``("jwt", "secret")``) came from."""
        for kind, data in self.layers:
            if _holds(data, loc):
                return Origin(kind, self._detail(kind, loc))
        return DEFAULT

    def in_file(self, loc: tuple[str | int, ...]) -> bool:
        """The configuration file writes ``loc`` (possibly overridden)."""
        return _holds(self.layers[-1][1], loc)

    def _detail(self, kind: str, loc: tuple[str | int, ...]) -> str:
        if kind == "file":
            return f"{file_key(loc)} in {self.path}"
        if kind == "environment":
            names = [str(part) for part in loc if not isinstance(part, int)]
            for depth in range(len(names), 0, -1):  # SECMW_JWT__SECRET, else SECMW_JWT (JSON)
                variable = variable_name(*names[:depth])
                if variable in self.environ:
                    return variable
        return variable_name(*loc)

    def report(self, effective: Mapping[str, Any]) -> Iterator[tuple[str, Any, Origin]]:
        """Every setting of ``effective`` (a settings dump): its variable, value and origin. A
        secret read from a file (``jwt.secret_file``) is reported as coming from that file."""
        for loc in setting_paths(self.settings_cls):
            value = _value(effective, loc)
            origin = self.of(loc)
            if origin is DEFAULT and value is None:
                named = (*loc[:-1], loc[-1] + SECRET_FILE_SUFFIX)
                if _value(effective, named) is not None:
                    origin = Origin("secret file", f"read at start-up from {variable_name(*named)}")
                    value = SECRET_SHOWN
            yield variable_name(*loc), value, origin


def _holds(data: Any, loc: tuple[str | int, ...]) -> bool:
    """``data`` gives a value at ``loc``, or replaces a section above it with a whole value."""
    for part in loc:
        if isinstance(data, Mapping):
            if part not in data:
                return False
            data = data[part]
        elif hasattr(data, "model_fields"):  # a section given as an object
            if not isinstance(part, str) or part not in type(data).model_fields:
                return False
            data = getattr(data, part)
        else:
            return True
    return True


def _value(data: Any, loc: tuple[str, ...]) -> Any:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data
