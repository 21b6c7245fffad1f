"""Settings from a mapping of ``SECMW_*`` keys (a Flask ``app.config``) over the environment.

A string value is read exactly as the same environment variable would be (JSON for lists and
objects, comma-separated lists, ``true``/``false``); any other value (a dict, a list, a number)
is taken as it is. Keys of the mapping win over the environment, which fills in the rest: the
app's own configuration is the more specific one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_settings import EnvSettingsSource

from secmw.config.names import ENV_PREFIX
from secmw.config.settings import SecuritySettings
from secmw.errors import ConfigurationError

_DELIMITER = "__"


class _MappingSource(EnvSettingsSource):
    """The environment source of ``SecuritySettings``, reading ``values`` instead."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._given = {name.lower(): value for name, value in values.items()}
        super().__init__(
            SecuritySettings,
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=_DELIMITER,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def settings_from_mapping(mapping: Mapping[str, Any]) -> SecuritySettings:
    """``SecuritySettings`` from the ``SECMW_*`` keys of ``mapping`` over the environment.

    Raises:
        ConfigurationError: an invalid value, naming its ``SECMW_*`` key.
    """
    ours = {k: v for k, v in mapping.items() if isinstance(k, str) and k.startswith(ENV_PREFIX)}
    texts = {k: v for k, v in ours.items() if isinstance(v, str)}
    try:
        values: dict[str, Any] = _MappingSource(texts)() if texts else {}
    except Exception as exc:  # pydantic-settings' own parse error (bad JSON...)
        raise ConfigurationError(f"invalid configuration: {type(exc).__name__}: {exc}") from None
    for key, value in ours.items():
        if key in texts:
            continue
        *sections, name = key[len(ENV_PREFIX) :].lower().split(_DELIMITER)
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return SecuritySettings(**values)
