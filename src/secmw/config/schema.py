"""The JSON Schema of ``SecuritySettings``: what a configuration file may hold.

``secmw config --schema`` prints it; editors validate a ``secmw.toml`` against it (taplo reads
a ``#:schema`` comment, or the ``$schema`` key, at the top of the file).
"""

from __future__ import annotations

from typing import Any

from secmw.config.file import SCHEMA_KEY
from secmw.config.settings import SecuritySettings

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def settings_schema() -> dict[str, Any]:
    """The schema of a configuration file: every section, no unknown key (the environment
    tolerates other ``SECMW_`` variables, a file does not)."""
    schema = SecuritySettings.model_json_schema(mode="validation")
    schema = {SCHEMA_KEY: DIALECT, **schema, "additionalProperties": False}
    schema["properties"] = {
        SCHEMA_KEY: {"type": "string", "description": "The schema this file follows."},
        **schema["properties"],
    }
    return schema
