"""``TokenSettings``: lifetimes, known scopes, signing key and stores (``tokens.*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from secmw.auth.keyring import SigningKeyEntry
from secmw.core.section import Section, StrList, parse_list
from secmw.errors import ConfigurationError
from secmw.stores.redis import parse_url


class ClientEntry(Section):
    """One confidential OAuth client of the token endpoint (RFC 6749 §2.3.1)."""

    secret_hash: str = Field(
        description="Hash of the client secret: `sha256:<hex>` from `secmw hash-key` (long random"
        " secrets) or argon2id/bcrypt from `secmw hash-password`."
    )
    grants: StrList = Field(
        default_factory=lambda: ["client_credentials"],
        description="Grant types the client may use: client_credentials, password, refresh_token.",
    )
    scopes: StrList = Field(
        default_factory=list, description="Scopes a client_credentials token may carry."
    )

    @field_validator("grants")
    @classmethod
    def _known_grants(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"client_credentials", "password", "refresh_token"}
        if unknown:
            raise ValueError(f"unknown grant type(s): {', '.join(sorted(unknown))}")
        return value


class TokenSettings(Section):
    """Issuing tokens (``tokens.*``): lifetimes, known scopes, stores."""

    access_ttl: int = Field(900, ge=1, le=86_400, description="Access-token lifetime, seconds.")
    refresh_ttl: int = Field(
        14 * 86_400, ge=60, le=366 * 86_400, description="Refresh-token lifetime, seconds."
    )
    token_url: str | None = Field(
        None, description="Path of the app's token endpoint (OpenAPI OAuth2 password flow)."
    )
    endpoint_path: str | None = Field(
        "/token",
        description="Routed path of the app's token endpoint: there the `Authorization` field is"
        " the OAuth client's credential (RFC 6749 §2.3.1), left to the endpoint by the"
        " authentication layer. Empty for none.",
    )
    clients: dict[str, ClientEntry] = Field(
        default_factory=dict,
        description="Confidential clients: JSON object client id -> {secret_hash, grants, scopes}.",
    )
    password_grant: bool = Field(
        False,
        description="Accept `grant_type=password` (deprecated by RFC 9700 §2.4; off unless set).",
    )
    scopes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Known scopes: JSON object scope -> description, or a list. Token requests"
        " for other scopes get `invalid_scope`.",
    )
    private_key: SecretStr | None = Field(
        None, description="PEM private key matching jwt.public_key, to sign tokens."
    )
    private_key_file: Path | None = Field(None, description="File holding the PEM private key.")
    keys: list[SigningKeyEntry] = Field(
        default_factory=list,
        description="Signing keys for rotation, active first: JSON list of {kid, secret} or {kid,"
        " private_key}. The first signs; every listed key verifies the tokens carrying its kid.",
    )
    keys_file: Path | None = Field(
        None, description="JSON file with more keys of the same form, after `keys`."
    )
    storage_uri: str = Field(
        "memory://",
        description="Refresh grants and single-use tokens: `memory://` or a Redis URL (also"
        " `redis+cluster://`, `redis+sentinel://`, `valkey://`).",
    )
    storage_timeout: float = Field(1.0, gt=0, le=30, description="Redis timeout, seconds.")
    max_entries: int = Field(
        100_000,
        ge=1,
        description="Cap of the memory store, per kind of entry (refresh grants, each single-use"
        " purpose).",
    )
    reset_ttl: int = Field(3600, ge=60, description="Password-reset token lifetime, seconds.")
    verification_ttl: int = Field(
        86_400, ge=60, description="Email-verification token lifetime, seconds."
    )

    @field_validator("scopes", mode="before")
    @classmethod
    def _scope_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("{") else parse_list(text)
        return dict.fromkeys(value, "") if isinstance(value, list) else value

    @field_validator("endpoint_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("storage_uri")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if value != "memory://":
            try:
                parse_url(value)
            except ConfigurationError:
                raise ValueError(
                    "must be memory:// or a Redis URL (redis://, rediss://,"
                    " unix://, redis+cluster://, redis+sentinel://, valkey://)"
                ) from None
        return value
