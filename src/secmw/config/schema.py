"""The JSON Schema of ``SecuritySettings``: what a configuration file may hold.

``secmw config --schema`` prints it; editors validate a ``secmw.toml`` against it (taplo reads
a ``#:schema`` comment, or the ``$schema`` key, at the top of the file).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from secmw.config.file import SCHEMA_KEY
from secmw.config.settings import SecuritySettings

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def settings_schema() -> dict[str, Any]:
    """The schema of a configuration file: every section, no unknown key (the environment
    tolerates other ``SECMW_`` variables, a file does not), and every default (pydantic leaves
    out those made by a factory, so an editor would show none for a list)."""
    schema = SecuritySettings.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    for model in _models(SecuritySettings):
        node = defs.get(model.__name__)
        if node is not None:
            _fill_defaults(model, node)
    schema = {SCHEMA_KEY: DIALECT, **schema, "additionalProperties": False}
    schema["properties"] = {
        SCHEMA_KEY: {"type": "string", "description": "The schema this file follows."},
        **schema["properties"],
    }
    return schema


def _fill_defaults(model: type[BaseModel], node: dict[str, Any]) -> None:
    for name, field in model.model_fields.items():
        prop = node.get("properties", {}).get(name)
        if prop is None or "default" in prop or field.default_factory is None:
            continue
        value = field.get_default(call_default_factory=True, validated_data={})
        if value is not PydanticUndefined:
            prop["default"] = to_jsonable_python(value)


def _models(
    model: type[BaseModel], seen: set[type[BaseModel]] | None = None
) -> Iterator[type[BaseModel]]:
    """``model`` and every model its fields hold (in lists, dicts and unions too), once."""
    seen = set() if seen is None else seen
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for found in _inside(field.annotation):
            yield from _models(found, seen)


def _inside(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _inside(arg)
