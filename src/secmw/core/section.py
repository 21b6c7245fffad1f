"""Building blocks for settings sections: the section base, list parsing, secret files."""

from __future__ import annotations

import json
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
