"""Building blocks for settings sections: the section base, list parsing, secret files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_settings import NoDecode

from secmw.errors import ConfigurationError


def parse_list(value: Any) -> Any:
    """Accept a JSON array or a comma-separated string for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(parse_list)]
"""A list setting written as JSON (``["a", "b"]``) or comma-separated (``a,b``)."""


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SettingsSource = Callable[[Any, dict[str, Any]], Any]
"""Builds the settings a component runs on from the settings it was given (or None) and
section overrides."""

_sources: list[SettingsSource] = []


def provide_settings(source: SettingsSource) -> None:
    """Install where components find settings they were not handed.

    ``secmw.config`` installs the environment reader when it is imported, which importing
    ``secmw`` always does: features read their settings through :func:`settings_or_environment`
    and never import ``secmw.config``, which imports every feature's section.
    """
    _sources[:] = [source]


def settings_or_environment(settings: Any, overrides: dict[str, Any]) -> Any:
    """``settings`` as given; without them, or with section overrides, what the installed
    source builds (the environment, then the overrides)."""
    if settings is not None and not overrides:
        return settings
    return _sources[0](settings, overrides)


def read_secret_file(path: Path, setting: str) -> str:
    """The stripped text of a secret file; ConfigurationError naming ``setting`` if unreadable."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{setting}: cannot read {path} ({type(exc).__name__})") from None


def read_json_file(path: Path, setting: str) -> Any:
    """Parsed JSON from a file; ConfigurationError naming ``setting`` if unreadable or invalid."""
    try:
        return json.loads(read_secret_file(path, setting))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{setting}: {path} is not valid JSON (line {exc.lineno})"
        ) from None
