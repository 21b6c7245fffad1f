"""One settings object for every layer: ``SecuritySettings``, read from ``SECMW_*`` variables.

Nested sections use ``__`` (``SECMW_JWT__SECRET``), a ``.env`` file in the working directory is
read, list settings take JSON or comma-separated values, and secrets can come from files
(``SECMW_JWT__SECRET_FILE``). ``SECMW_CONFIG_FILE`` names a TOML file with the same sections
(``secmw.config.file``), below the environment. An invalid value raises
:class:`ConfigurationError` naming the variable (or the file's key), when the settings are
built: at app start, never at the first request.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from secmw.audit import AuditSettings
from secmw.auth.introspection import IntrospectionSettings
from secmw.auth.session import SessionSettings
from secmw.auth.settings import APIKeySettings, AuthSettings, BasicSettings, JWTSettings
from secmw.auth.totp import TOTPSettings
from secmw.authz import AuthzSettings
from secmw.config.file import ConfigFileSource, FileConfigurationError, config_file, file_key
from secmw.config.names import name_variables, variable_name
from secmw.config.origin import Origins
from secmw.core.section import provide_settings
from secmw.errors import ConfigurationError, name_settings_with
from secmw.headers.settings import HeadersSettings
from secmw.ip.settings import IPSettings
from secmw.metrics import MetricsSettings
from secmw.otel import OTelSettings
from secmw.ratelimit.settings import RateLimitSettings
from secmw.tokens import TokenSettings


class SecuritySettings(BaseSettings):
    """Every secmw setting, one section per layer.

    Build it with no arguments to read the environment, or pass sections (as objects or dicts) to
    override it: ``SecuritySettings(jwt={"secret": "..."})``.
    """

    model_config = SettingsConfigDict(
        env_prefix="SECMW_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    auth: AuthSettings = AuthSettings()
    jwt: JWTSettings = JWTSettings()
    api_keys: APIKeySettings = APIKeySettings()
    basic: BasicSettings = BasicSettings()
    introspection: IntrospectionSettings = IntrospectionSettings()
    session: SessionSettings = SessionSettings()
    totp: TOTPSettings = TOTPSettings()
    ip: IPSettings = IPSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    headers: HeadersSettings = HeadersSettings()
    authz: AuthzSettings = AuthzSettings()
    tokens: TokenSettings = TokenSettings()
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()
    otel: OTelSettings = OTelSettings()

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            if config_file() is None:
                raise ConfigurationError(_explain(exc)) from None
            origins = Origins(type(self), values)
            raise FileConfigurationError(_explain(exc, origins)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, ``.env``, and the ``SECMW_CONFIG_FILE`` file last."""
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        path = config_file()
        if path is None:
            return sources
        return (*sources, ConfigFileSource(settings_cls, path))


def resolve_settings(
    settings: SecuritySettings | None, overrides: dict[str, Any]
) -> SecuritySettings:
    """The settings a middleware runs on: explicit settings, else the environment, plus overrides.

    ``overrides`` are whole sections as dicts or section objects, for example
    ``{"jwt": {"secret": "..."}}``; given with ``settings``, they replace those sections.
    """
    if settings is None:
        return SecuritySettings(**overrides)
    if not overrides:
        return settings
    merged = {name: getattr(settings, name) for name in type(settings).model_fields}
    merged.update(overrides)
    return SecuritySettings(**merged)


def _explain(exc: ValidationError, origins: Origins | None = None) -> str:
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        where = variable_name(*loc) if origins is None else _where(loc, origins)
        messages.append(f"{where}: {error['msg']}")
    return "invalid configuration: " + "; ".join(messages)


def _where(loc: tuple[str | int, ...], origins: Origins) -> str:
    """The place an invalid value was written: a file's key, or a variable (saying so when it
    overrides a key of the file, whose value may have had another type)."""
    origin = origins.of(loc)
    if origin.kind == "file":
        return origin.detail
    if origin.kind == "environment" and origins.in_file(loc):
        return f"{origin.detail} (overriding {file_key(loc)} in {origins.path})"
    return variable_name(*loc) if origin.kind != "environment" else origin.detail


provide_settings(resolve_settings)
name_settings_with(lambda text: name_variables(text, SecuritySettings))
