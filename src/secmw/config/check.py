"""``secmw config``: build every layer from the settings, show them masked, warn about risks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secmw.asgi.stack import SecurityStack
from secmw.config.settings import SecuritySettings

MASK = "**********"
_SECRET_WORDS = ("secret", "password", "private_key")


@dataclass
class ConfigReport:
    """What ``secmw config`` prints: the effective settings (masked) and warnings."""

    effective: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never run
    raise RuntimeError("the configuration check never serves requests")


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if value is not None and any(word in key.lower() for word in _SECRET_WORDS):
        return MASK
    if isinstance(value, str) and "://" in value and "@" in value:
        return MASK  # a URI with credentials (redis://user:password@host)
    return value


def risky_choices(settings: SecuritySettings) -> list[str]:
    """Valid settings a security review would question."""
    warnings = []
    rate = settings.rate_limit
    storage = rate.storage_uri.get_secret_value()
    if rate.enabled and storage.startswith("memory"):
        warnings.append(
            "SECMW_RATE_LIMIT__STORAGE_URI: memory storage counts per process; with several"
            " workers or machines each one admits the full limit (use redis://)"
        )
    if rate.enabled and rate.on_storage_error == "allow":
        warnings.append(
            "SECMW_RATE_LIMIT__ON_STORAGE_ERROR=allow: a storage outage switches rate limiting off"
        )
    if not rate.enabled:
        warnings.append("SECMW_RATE_LIMIT__ENABLED=false: no rate limits and no login throttle")
    headers = settings.headers
    if not headers.enabled or not headers.hsts or headers.hsts_max_age == 0:
        warnings.append("SECMW_HEADERS__HSTS: Strict-Transport-Security is off")
    trusted = [t.strip() for t in settings.ip.trusted_proxies]
    if any(t in ("0.0.0.0/0", "::/0", "*") for t in trusted):
        warnings.append(
            "SECMW_IP__TRUSTED_PROXIES: every address is trusted as a proxy, so any client can"
            " choose its own address"
        )
    jwt = settings.jwt
    if (jwt.jwks_url or jwt.discovery) and not jwt.typ:
        warnings.append(
            "SECMW_JWT__TYP: unset, so any token the provider signs is accepted, an ID token too;"
            " set at+jwt if its access tokens carry that type (RFC 9068 §4)"
        )
    if settings.tokens.password_grant:
        warnings.append(
            "SECMW_TOKENS__PASSWORD_GRANT=true: the password grant passes users' passwords through"
            " the client (deprecated by RFC 9700 §2.4); prefer client_credentials for services"
        )
    if not jwt.require_exp:
        warnings.append("SECMW_JWT__REQUIRE_EXP=false: tokens without expiry are accepted")
    if (settings.api_keys.keys or settings.api_keys.file) and settings.api_keys.query_param:
        warnings.append(
            "SECMW_API_KEYS__QUERY_PARAM: keys in the query string end up in access logs"
        )
    return warnings


def check_settings(settings: SecuritySettings | None = None) -> ConfigReport:
    """Build every layer (raising ConfigurationError naming the variable) and report.

    Building the whole ASGI stack is the check: every section is parsed exactly as the middleware
    would parse it at start-up, and nothing connects to storage.
    """
    settings = settings or SecuritySettings()
    SecurityStack(_noop_app, settings=settings)
    effective = _mask(settings.model_dump(mode="json"))
    return ConfigReport(effective, risky_choices(settings))
