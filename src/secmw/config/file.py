"""The configuration file: ``SECMW_CONFIG_FILE`` names a TOML file holding the same sections as
the environment (``[jwt]``, ``[rate_limit]``...), or a ``pyproject.toml`` whose ``[tool.secmw]``
table holds them.

The file is read through pydantic-settings' own TOML source, below the environment: a variable
overrides the key it names, and the rest of the file still applies. Before anything is
validated, the file must parse (an error names its line and column) and every key must be a
setting (an unknown key is named with the closest valid one), so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel
from pydantic_settings import BaseSettings, TomlConfigSettingsSource

from secmw.config.names import section_model
from secmw.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

CONFIG_FILE = "SECMW_CONFIG_FILE"
PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = ("tool", "secmw")
SCHEMA_KEY = "$schema"
"""A key editors read (the schema the file follows); allowed at the top and ignored."""

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


class FileConfigurationError(ConfigurationError):
    """A configuration error that speaks of the file's own keys (``[jwt] secret``) and of
    variables by their full names: its message is shown as written."""

    def __str__(self) -> str:
        return self.reason


def config_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file ``SECMW_CONFIG_FILE`` names, None when it is unset or empty."""
    value = environ.get(CONFIG_FILE, "").strip()
    return Path(value).expanduser() if value else None


def table_header(path: Path) -> tuple[str, ...]:
    """Where the settings sit in ``path``: ``[tool.secmw]`` of a ``pyproject.toml``, else the
    top of the file."""
    return PYPROJECT_TABLE if path.name == PYPROJECT else ()


def read_settings_table(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The settings table of ``path``, parsed and its keys checked against ``model``.

    Raises:
        FileConfigurationError: the file cannot be read or parsed (line and column), the
            ``[tool.secmw]`` table of a ``pyproject.toml`` is missing, or a key is unknown.
    """
    table: Any = _parse(path)
    header = table_header(path)
    for key in header:
        table = table.get(key) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        raise FileConfigurationError(f"{CONFIG_FILE}: {path} has no [{'.'.join(header)}] table")
    unknown = [_unknown(loc, model) for loc in _unknown_keys(table, model, ())]
    if unknown:
        raise FileConfigurationError(f"{path}: " + "; ".join(unknown))
    table.pop(SCHEMA_KEY, None)
    return table


def file_key(loc: tuple[str | int, ...]) -> str:
    """A settings location as the file writes it: ``[rate_limit.exempt] paths``."""
    keys = [str(part) for part in loc if not isinstance(part, int)]
    if len(keys) == 1:
        return keys[0]
    return f"[{'.'.join(keys[:-1])}] {keys[-1]}"


class ConfigFileSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source on the file ``SECMW_CONFIG_FILE`` names, after the checks
    of :func:`read_settings_table`."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():
            raise FileConfigurationError(f"{CONFIG_FILE}: {path} is not a readable file")
        self.path = path
        self.model = settings_cls  # read by _read_file, which the source calls on init
        super().__init__(settings_cls, toml_file=path, toml_table_header=table_header(path))

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        table = read_settings_table(Path(file_path), self.model)
        data: dict[str, Any] = table
        for key in reversed(self.toml_table_header):  # the source walks down the header itself
            data = {key: data}
        return data


def _parse(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data: dict[str, Any] = tomllib.load(file)
            return data
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _POSITION.search(message)
        if position is None:  # pragma: no cover - every TOMLDecodeError names its position
            raise FileConfigurationError(f"{path}: {message}") from None
        line, column = position.groups()
        text = message[: position.start()]
        raise FileConfigurationError(f"{path}: line {line}, column {column}: {text}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileConfigurationError(
            f"{CONFIG_FILE}: cannot read {path} ({type(exc).__name__})"
        ) from None


def _unknown_keys(
    table: dict[str, Any], model: type[BaseModel], loc: tuple[str, ...]
) -> Iterator[tuple[str, ...]]:
    """The locations in ``table`` that name no setting of ``model`` (an object setting's own
    keys, ``headers.paths``' paths for one, are values, not settings)."""
    for key, value in table.items():
        if not loc and key == SCHEMA_KEY:
            continue
        field = model.model_fields.get(key)
        if field is None:
            yield (*loc, key)
            continue
        section = section_model(field.annotation)
        if section is not None and isinstance(value, dict):
            yield from _unknown_keys(value, section, (*loc, key))


def _unknown(loc: tuple[str, ...], model: type[BaseModel]) -> str:
    """``unknown key [jwt] secrett (did you mean [jwt] secret?)``."""
    *parent, key = loc
    siblings = _model_at(model, tuple(parent)).model_fields
    close = difflib.get_close_matches(key, list(siblings), n=1, cutoff=0.5)
    if close:
        return f"unknown key {file_key(loc)} (did you mean {file_key((*parent, close[0]))}?)"
    # A key in the wrong table (``secret`` at the top): the closest setting anywhere.
    everywhere = {".".join(path): path for path in setting_paths(model)}
    close = difflib.get_close_matches(key, [p[-1] for p in everywhere.values()], n=1, cutoff=0.75)
    if close:
        match = next(path for path in everywhere.values() if path[-1] == close[0])
        return f"unknown key {file_key(loc)} (did you mean {file_key(match)}?)"
    return f"unknown key {file_key(loc)}"


def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel]:
    for key in loc:  # _unknown_keys descends into sections only
        model = cast("type[BaseModel]", section_model(model.model_fields[key].annotation))
    return model


def setting_paths(model: type[BaseModel], loc: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every setting's location in ``model``, sections walked into (``("jwt", "secret")``)."""
    for name, field in model.model_fields.items():
        section = section_model(field.annotation)
        if section is None:
            yield (*loc, name)
        else:
            yield from setting_paths(section, (*loc, name))
