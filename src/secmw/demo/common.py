"""What both demo apps share: settings with embedded defaults, users, tokens."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from secmw.auth.apikey import hash_api_key
from secmw.auth.build import revocation_store
from secmw.auth.passwords import dummy_hash, hash_password, verify_password
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.demo.docs_ui import DOCS_CSP, DOCS_URL
from secmw.stores.revocation import MemoryRevocationStore
from secmw.tokens import Account, TokenIssuer

DEMO_USERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("alice-password", ("items:read", "items:write", "admin:read")),
    "bob": ("bob-password", ("items:read",)),
}
DEMO_API_KEY = "demo-key-0001"
DEMO_CLIENT = ("demo-client", "demo-client-secret")
"""A confidential OAuth client (client_credentials grant, scope items:read)."""
DEMO_KEY_OWNER = "svc-reporting"
SCOPES = {
    "items:read": "Read items",
    "items:write": "Create items",
    "admin:read": "Read admin statistics",
}
LOOPBACK = ["127.0.0.0/8", "::1"]
TOKEN_RESPONSES: dict[int, dict[str, str]] = {
    400: {"description": "An RFC 6749 section 5.2 error (invalid_grant, invalid_scope...)."},
    401: {"description": "invalid_client: the client's credential was refused."},
    429: {"description": "temporarily_unavailable: too many failed logins."},
}
"""The token endpoint's error answers (RFC 6749 bodies, ``application/json``), for the
FastOpenAPI demos' documents."""


def demo_settings(base: SecuritySettings | None = None) -> tuple[SecuritySettings, list[str]]:
    """The environment's settings, with the demo's defaults where a variable is unset.

    Returns the settings and a list of notes about the defaults applied (printed at start).
    """
    base = base or SecuritySettings()
    notes: list[str] = []
    sections: dict[str, Any] = {}
    jwt = base.jwt
    if not (jwt.secret or jwt.secret_file or jwt.public_key or jwt.public_key_file or jwt.jwks_url):
        sections["jwt"] = jwt.model_copy(update={"secret": SecretStr(secrets.token_urlsafe(48))})
        notes.append(
            "SECMW_JWT__SECRET is unset: generated a random HS256 secret for this process"
            " (tokens stop working when it exits)"
        )
    if not (base.api_keys.keys or base.api_keys.file):
        entry = {"hash": hash_api_key(DEMO_API_KEY), "id": DEMO_KEY_OWNER, "scopes": ["items:read"]}
        sections["api_keys"] = base.api_keys.model_validate(
            {**base.api_keys.model_dump(), "keys": [entry]}
        )
    if not (base.basic.users or base.basic.users_file):
        users = {
            name: {"password_hash": hash_password(password), "scopes": list(scopes)}
            for name, (password, scopes) in DEMO_USERS.items()
        }
        sections["basic"] = base.basic.model_validate({**base.basic.model_dump(), "users": users})
    if not base.ip.rules:
        rules = {"/internal/*": {"allow": LOOPBACK}}
        sections["ip"] = base.ip.model_validate({**base.ip.model_dump(), "rules": rules})
    rate = base.rate_limit
    if not rate.exempt.paths:
        exempt = {**rate.exempt.model_dump(), "paths": ["/health"]}
        sections["rate_limit"] = rate.model_validate({**rate.model_dump(), "exempt": exempt})
    headers = base.headers
    if DOCS_URL not in headers.paths:
        # Swagger UI from this origin (docs_ui.py), not the CDN the docs preset names.
        paths = {**headers.model_dump()["paths"], DOCS_URL: {"csp": DOCS_CSP}}
        sections["headers"] = headers.model_validate({**headers.model_dump(), "paths": paths})
    tokens = base.tokens
    update: dict[str, Any] = {
        "scopes": tokens.scopes or SCOPES,
        "token_url": tokens.token_url or "/token",
        # The demo's /token shows the password grant (the FastOpenAPI guide uses it); it is off
        # by default elsewhere (RFC 9700 §2.4).
        "password_grant": True,
    }
    if not tokens.clients:
        client_id, secret = DEMO_CLIENT
        update["clients"] = {
            client_id: {
                "secret_hash": hash_password(secret),
                "grants": ["client_credentials"],
                "scopes": ["items:read"],
            }
        }
    sections["tokens"] = tokens.model_validate({**tokens.model_dump(), **update})
    return resolve_settings(base, sections), notes


@dataclass
class Demo:
    """The demo's state: settings, users, token issuer, and an in-memory item list."""

    settings: SecuritySettings
    notes: list[str]
    issuer: TokenIssuer
    revocation: Any
    items: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, base: SecuritySettings | None = None) -> Demo:
        """Build from the environment (or ``base``) with the demo defaults."""
        settings, notes = demo_settings(base)
        revocation = _revocation_store(settings)
        issuer = TokenIssuer(settings, revocation=revocation)
        items = [{"id": 1, "name": "first item"}, {"id": 2, "name": "second item"}]
        return cls(settings, notes, issuer, revocation, items)

    def authenticate(self, username: str, password: str) -> Account | None:
        """Check a user's password (an unknown user costs one hash check too)."""
        users = self.settings.basic.users
        user = users.get(username)
        if not verify_password(password, user.password_hash if user else dummy_hash()):
            return None
        assert user is not None
        return Account.create(username, scopes=user.scopes)

    def add_item(self, name: str, owner: str) -> dict[str, Any]:
        """Append an item; return it."""
        with self.lock:
            item = {"id": len(self.items) + 1, "name": name, "owner": owner}
            self.items.append(item)
        return item


def _revocation_store(settings: SecuritySettings) -> Any:
    """Redis (any deployment, mirrored in the process unless ``jwt.revocation_mirror`` is off)
    when the rate limiter or the denylist setting points at one."""
    url = settings.jwt.revocation_url
    storage = settings.rate_limit.storage_uri.get_secret_value()
    if not url and not storage.startswith("memory"):
        url = storage
    if url:
        return revocation_store(settings.jwt, url)
    return MemoryRevocationStore()


def token_form(
    grant_type: str,
    username: str | None,
    password: str | None,
    scope: str | None,
    refresh: str | None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """The token request as a mapping, as ``TokenIssuer.exchange`` reads it."""
    return {
        "grant_type": grant_type,
        "username": username,
        "password": password,
        "scope": scope,
        "refresh_token": refresh,
        "client_id": client_id,
        "client_secret": client_secret,
    }


def banner(demo: Demo, framework: str, host: str, port: int) -> str:
    """What the demo prints at start: address, users, and three curl lines."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    lines = [f"secmw demo ({framework}) on {base}  - docs at {base}/docs", ""]
    lines += [f"note: {note}" for note in demo.notes]
    lines.append("users (password grant at POST /token, or HTTP Basic):")
    for name, (password, scopes) in DEMO_USERS.items():
        lines.append(f"  {name} / {password}  scopes: {' '.join(scopes)}")
    lines.append(f"API key: {DEMO_API_KEY} (principal {DEMO_KEY_OWNER}, scope items:read)")
    client_id, client_secret = DEMO_CLIENT
    lines.append(
        f"OAuth client: {client_id} / {client_secret} (client_credentials grant, scope items:read)"
    )
    lines += [
        "",
        "try:",
        f"  curl -s {base}/items -H 'X-API-Key: {DEMO_API_KEY}'",
        f"  curl -s -X POST {base}/token -d grant_type=password -d username=alice"
        " -d password=alice-password",
        f"  curl -s {base}/me -u bob:bob-password",
        f"  curl -s -X POST {base}/token -u {client_id}:{client_secret}"
        " -d grant_type=client_credentials",
    ]
    return "\n".join(lines)
