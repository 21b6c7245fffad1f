"""OAuth 2.0 token-endpoint answers (RFC 6749 §5): error bodies and scope parameters.

An app's ``/token`` endpoint returns these as JSON with their status and headers. They are
values, not exceptions, so that a route can return them whatever its framework. Descriptions are
written by secmw and never echo a credential from the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# RFC 6749 §5.1: token responses and their errors must not be cached.
NO_STORE: tuple[tuple[str, str], ...] = (("cache-control", "no-store"), ("pragma", "no-cache"))


@dataclass(frozen=True, slots=True)
class OAuthError:
    """A token-endpoint error (RFC 6749 §5.2).

    Attributes:
        error: The RFC 6749 error code (``invalid_grant``...).
        description: Human-readable ``error_description`` (ASCII, no credential).
        status: HTTP status: 400 for §5.2 errors, 429 when throttled, 503 when a store is
            unavailable.
        retry_after: Seconds for ``Retry-After`` (on a 429 or a 503), else None.
        challenge: ``WWW-Authenticate`` of a 401 ``invalid_client``, else None.
    """

    error: str
    description: str | None = None
    status: int = 400
    retry_after: str | None = None
    challenge: str | None = None

    def body(self) -> dict[str, str]:
        """The JSON object to send: ``{"error": ..., "error_description": ...}``."""
        doc = {"error": self.error}
        if self.description:
            doc["error_description"] = self.description
        return doc

    def json(self) -> bytes:
        """The body, encoded."""
        return json.dumps(self.body(), separators=(",", ":")).encode()

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Response headers besides the content type (``Cache-Control: no-store``, and
        ``Retry-After`` or ``WWW-Authenticate`` when set)."""
        headers = NO_STORE
        if self.retry_after is not None:
            headers = (*headers, ("retry-after", self.retry_after))
        if self.challenge is not None:
            headers = (*headers, ("www-authenticate", self.challenge))
        return headers


def invalid_request(description: str = "malformed token request") -> OAuthError:
    """A missing, repeated or malformed parameter (RFC 6749 §5.2)."""
    return OAuthError("invalid_request", description)


def invalid_grant(description: str = "invalid credentials or grant") -> OAuthError:
    """Wrong password, or a refresh token that is invalid, expired, revoked or already used."""
    return OAuthError("invalid_grant", description)


def invalid_scope(description: str = "requested scope is invalid or not granted") -> OAuthError:
    """A requested scope that is unknown, malformed, or beyond what the account holds."""
    return OAuthError("invalid_scope", description)


def invalid_client(
    description: str = "client authentication failed", challenge: str | None = None
) -> OAuthError:
    """Unknown client, wrong secret, or no client authentication where one is needed.

    RFC 6749 §5.2: with a ``challenge`` (the client used ``Authorization: Basic``) the answer is
    401 carrying it; without (``client_secret_post``), 400, which the RFC also allows and which
    needs no challenge (a 401 must carry one, RFC 9110 §15.5.2)."""
    return OAuthError("invalid_client", description, 401 if challenge else 400, None, challenge)


def unauthorized_client(description: str = "client may not use this grant") -> OAuthError:
    """An authenticated client asking for a grant type it is not registered for."""
    return OAuthError("unauthorized_client", description)


def unsupported_grant_type(description: str = "grant type not supported") -> OAuthError:
    """A ``grant_type`` this endpoint does not handle."""
    return OAuthError("unsupported_grant_type", description)


def temporarily_unavailable(description: str = "token store unavailable") -> OAuthError:
    """A store the endpoint needs is down: 503, nothing issued (closed by default)."""
    return OAuthError("temporarily_unavailable", description, status=503)


def refused(status: int, retry_after: str | None) -> OAuthError:
    """The token endpoint's own refusal as an OAuth error: too many failed attempts (429) or the
    throttle's storage down (503), with ``Retry-After``.

    RFC 6749 §5.2 has no code for either; ``temporarily_unavailable`` (RFC 6749 §4.1.2.1) is the
    registered code that says "try again later", and OAuth clients (Authlib, for one) raise on any
    ``error`` member instead of taking the body for a token."""
    if status == 429:
        description = "too many failed attempts; retry later"
    else:
        description = "login throttling unavailable"
    return OAuthError("temporarily_unavailable", description, status, retry_after)


def _is_scope_token(token: str) -> bool:
    # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    return bool(token) and all(c == "!" or "#" <= c <= "[" or "]" <= c <= "~" for c in token)


def parse_scope(value: str | None) -> frozenset[str] | OAuthError:
    """The scopes of a ``scope`` parameter (space-delimited, RFC 6749 §3.3); empty when absent."""
    if value is None or not value.strip(" "):
        return frozenset()
    tokens = [t for t in value.split(" ") if t]
    if not all(_is_scope_token(t) for t in tokens):
        return invalid_scope("malformed scope parameter")
    return frozenset(tokens)


def grant_scopes(
    requested: frozenset[str], granted: Iterable[str], known: Iterable[str] = ()
) -> frozenset[str] | OAuthError:
    """The scopes to issue: ``requested`` when it is a subset of ``granted``, else an error.

    Nothing requested means everything granted. ``known`` (when non-empty) lists every scope the
    server knows; an unknown requested scope is refused as such (RFC 6749 §5.2 ``invalid_scope``).
    """
    allowed = frozenset(granted)
    if not requested:
        return allowed
    universe = frozenset(known)
    if universe and not requested <= universe:
        return invalid_scope("unknown scope requested")
    if not requested <= allowed:
        return invalid_scope("requested scope exceeds the scope granted")
    return requested


def form_value(form: Mapping[str, Any], name: str) -> str | OAuthError | None:
    """One form parameter: None when absent, an error when repeated or not text (RFC 6749 §3.2:
    parameters must not be included more than once)."""
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value
    return invalid_request(f"parameter {name!r} repeated or malformed")


@dataclass(frozen=True, slots=True)
class PasswordRequest:
    """A resource-owner password grant (RFC 6749 §4.3.2). The password is never in ``repr``."""

    username: str
    password: str = field(repr=False)
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ClientCredentialsRequest:
    """A client-credentials grant (RFC 6749 §4.4.2): the client is the principal."""

    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """A refresh grant (RFC 6749 §6)."""

    refresh_token: str = field(repr=False)
    scope: str | None = None


def parse_token_request(
    form: Mapping[str, Any], known_scopes: Iterable[str] = ()
) -> PasswordRequest | RefreshRequest | ClientCredentialsRequest | OAuthError:
    """Read a token request's form fields; the error to answer when they are not acceptable.

    Grant types other than ``password``, ``client_credentials`` and ``refresh_token`` get
    ``unsupported_grant_type``; unknown scopes (when ``known_scopes`` is non-empty) get
    ``invalid_scope`` before any secret is checked. Whether the endpoint accepts the password
    grant at all (``tokens.password_grant``) is the endpoint's decision, not the parser's.
    """
    values: dict[str, str | None] = {}
    for name in ("grant_type", "username", "password", "refresh_token", "scope"):
        value = form_value(form, name)
        if isinstance(value, OAuthError):
            return value
        values[name] = value
    grant_type = values["grant_type"]
    if not grant_type:
        return invalid_request("grant_type is required")
    if grant_type == "refresh_token":
        if not values["refresh_token"]:
            return invalid_request("refresh_token is required")
        return RefreshRequest(values["refresh_token"], values["scope"])
    if grant_type not in ("password", "client_credentials"):
        return unsupported_grant_type()
    scopes = parse_scope(values["scope"])
    if isinstance(scopes, OAuthError):
        return scopes
    known = frozenset(known_scopes)
    if known and not scopes <= known:
        return invalid_scope("unknown scope requested")
    if grant_type == "client_credentials":
        return ClientCredentialsRequest(scopes)
    username, password = values["username"], values["password"]
    if not username or password is None:
        return invalid_request("username and password are required")
    return PasswordRequest(username, password, scopes)


def format_scope(scopes: Iterable[str]) -> str:
    """A ``scope`` value: the scopes sorted and space-delimited."""
    return " ".join(sorted(scopes))


__all__ = [
    "NO_STORE",
    "ClientCredentialsRequest",
    "OAuthError",
    "PasswordRequest",
    "RefreshRequest",
    "form_value",
    "format_scope",
    "grant_scopes",
    "invalid_client",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "parse_scope",
    "parse_token_request",
    "refused",
    "temporarily_unavailable",
    "unauthorized_client",
    "unsupported_grant_type",
]
