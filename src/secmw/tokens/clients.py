"""Confidential OAuth clients of the token endpoint (RFC 6749 §2.3.1): who they are, how a
request presents them, and how their secret is checked.

A client authenticates with HTTP Basic (``client_secret_basic``: its id and secret, each
form-urlencoded, as the Basic user and password) or with ``client_id`` and ``client_secret`` in
the form (``client_secret_post``); a request using both is refused (RFC 6749 §2.3: one method per
request). Secrets are stored hashed like API keys (``sha256:``, for long random secrets) or like
passwords (argon2id / bcrypt); an unknown client is checked against a dummy of the same kind so
that unknown and known-but-wrong cost the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from secmw.auth.apikey import HASH_PREFIX, _digest
from secmw.auth.passwords import dummy_hash, verify_password
from secmw.core.request import RequestView
from secmw.tokens.oauth import OAuthError, form_value, invalid_request

BASIC = "client_secret_basic"
POST = "client_secret_post"


@dataclass(frozen=True, slots=True)
class Client:
    """A registered confidential client and what it may do."""

    id: str
    secret_hash: str = field(repr=False)
    grants: frozenset[str] = frozenset({"client_credentials"})
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PresentedClient:
    """Client credentials found in a token request; ``method`` is how they came."""

    id: str
    secret: str | None = field(repr=False)
    method: str


def build_clients(entries: Mapping[str, Any], setting: str = "tokens.clients") -> dict[str, Client]:
    """Clients from their settings entries (``secret_hash``, ``grants``, ``scopes``).

    Raises:
        ConfigurationError: a ``sha256:`` hash that is not 64 hex digits.
    """
    clients = {}
    for client_id, entry in entries.items():
        if entry.secret_hash.startswith(HASH_PREFIX):
            _digest(entry.secret_hash, f"{setting}.{client_id}.secret_hash")
        clients[client_id] = Client(
            client_id, entry.secret_hash, frozenset(entry.grants), frozenset(entry.scopes)
        )
    return clients


def presented_client(
    request: RequestView | None, form: Mapping[str, Any]
) -> PresentedClient | OAuthError | None:
    """The client credentials of a token request: from ``Authorization: Basic`` or from the
    form's ``client_id`` / ``client_secret``; None when neither is there."""
    form_id = form_value(form, "client_id")
    if isinstance(form_id, OAuthError):
        return form_id
    form_secret = form_value(form, "client_secret")
    if isinstance(form_secret, OAuthError):
        return form_secret
    basic = _basic(request) if request is not None else None
    if isinstance(basic, OAuthError):
        return basic
    if basic is not None:
        if form_secret is not None or (form_id is not None and form_id != basic.id):
            return invalid_request("use one client authentication method")
        return basic
    if form_id:
        return PresentedClient(form_id, form_secret, POST)
    if form_secret is not None:
        return invalid_request("client_secret without client_id")
    return None


def _basic(request: RequestView) -> PresentedClient | OAuthError | None:
    lines = request.header_values("authorization")
    if not lines:
        return None
    if len(lines) > 1 or "," in lines[0]:
        return invalid_request("more than one Authorization header")
    scheme, _, param = lines[0].strip(" \t").partition(" ")
    if scheme.lower() != "basic":
        return invalid_request("client authentication must use the Basic scheme")
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return invalid_request("malformed Basic credentials")
    name, colon, secret = decoded.partition(":")
    if not colon or not name:
        return invalid_request("malformed Basic credentials")
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined.
    return PresentedClient(unquote_plus(name), unquote_plus(secret), BASIC)


def check_secret(client: Client | None, secret: str) -> bool:
    """True when ``secret`` is ``client``'s; an unknown client (None) costs the same and fails.

    Argon2 / bcrypt checks are CPU-heavy: async callers run this in a worker thread.
    """
    stored = client.secret_hash if client is not None else None
    if stored is None or not stored.startswith(HASH_PREFIX):
        matched = verify_password(secret, stored or dummy_hash())
    else:
        presented = hashlib.sha256(secret.encode()).hexdigest()
        matched = hmac.compare_digest(presented, stored.removeprefix(HASH_PREFIX).lower())
    return client is not None and matched


__all__ = [
    "BASIC",
    "POST",
    "Client",
    "PresentedClient",
    "build_clients",
    "check_secret",
    "presented_client",
]
