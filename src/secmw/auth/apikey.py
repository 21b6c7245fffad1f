"""API keys from a header or a query parameter, stored only as SHA-256 hashes.

A presented key is hashed, the hash looked up, and the stored hash compared with
``hmac.compare_digest``; an unknown key is compared against a dummy so that unknown and
known-but-wrong keys cost the same. API keys are high-entropy random strings, so a fast hash is
the right tool here (a slow password hash would only make every request slow). Keys sent in the
query string end up in access logs and browser history: prefer the header, and switch the query
parameter off (``query_param=None``) when no client needs it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from secmw.auth.base import Credential
from secmw.auth.reload import WatchedFile
from secmw.core.deny import Deny, quote_param
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError

HASH_PREFIX = "sha256:"
_DUMMY = hashlib.sha256(b"secmw-dummy-key").hexdigest()


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex digest>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class APIKeyRecord:
    """What an API key grants. ``key_hash`` is ``sha256:<64 hex digits>``."""

    key_hash: str
    id: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    name: str | None = None


def _digest(key_hash: str, setting: str) -> str:
    digest = key_hash.removeprefix(HASH_PREFIX).lower()
    if not key_hash.startswith(HASH_PREFIX) or len(digest) != 64:
        raise ConfigurationError(
            f"{setting}: key hashes look like 'sha256:<64 hex digits>' (make one with"
            " `secmw hash-key`)"
        )
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise ConfigurationError(f"{setting}: key hash is not hexadecimal") from None
    return digest


class APIKeyAuthenticator:
    """Authenticates a key sent in a header (``X-API-Key``) or a query parameter (``api_key``)."""

    scheme = "apikey"
    authorization_scheme = None
    blocking = False
    throttle_first = False  # cheap to check, impossible to guess: count failures only

    def __init__(
        self,
        records: Iterable[APIKeyRecord],
        *,
        header: str | None = "X-API-Key",
        query_param: str | None = "api_key",
        realm: str = "api",
        setting: str = "api_keys.keys",
        watched: WatchedFile[list[APIKeyRecord]] | None = None,
    ) -> None:
        if not header and not query_param:
            raise ConfigurationError(f"{setting}: an API key needs a header or a query parameter")
        self._inline: Mapping[str, APIKeyRecord] = {
            _digest(r.key_hash, setting): r for r in records
        }
        self._by_digest = self._inline
        # ``api_keys.file``, re-read when it changes; its keys join the inline ones.
        self._watched = watched
        self._built_from: object = None
        self.header = header
        self.query_param = query_param
        self.realm = realm

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The key from the header or the query parameter.

        A key sent more than once (two header fields, two query parameters, the header and the
        query together, whether the copies agree or not) is ambiguous: 400. So is a key holding
        a comma, since a WSGI server joins two header fields with one and the two cannot be told
        apart there. An empty key is a 401.
        """
        values = request.header_values(self.header) if self.header else []
        if self.query_param and request.query_string:
            values += request.query_params(self.query_param)
        if not values:
            return None
        if len(values) > 1 or "," in values[0]:
            return self._deny(400, "API key sent more than once", "invalid_request")
        key = values[0].strip()
        if not key:
            return self._deny(401, "API key empty", "invalid_credentials")
        return Credential(self.scheme, key)

    def verify(self, credential: Credential) -> Principal | Deny:
        """Look the key up by hash; compare in constant time."""
        digest = hashlib.sha256(credential.secret.encode("utf-8", "surrogatepass")).hexdigest()
        # The lookup is keyed by the hash, so its timing can only leak bits of the hash of the
        # guess, which say nothing about stored keys; the final comparison is constant-time.
        record = self._table().get(digest)
        expected = digest if record is not None else _DUMMY
        if not hmac.compare_digest(expected, digest) or record is None:
            return self._deny(401, "API key invalid", "invalid_credentials")
        return Principal(
            record.id, self.scheme, record.scopes, record.roles, {"key_id": record.id}, record.name
        )

    def _table(self) -> Mapping[str, APIKeyRecord]:
        if self._watched is None:
            return self._by_digest
        records = self._watched.current()
        if records is not self._built_from:
            table = {_digest(r.key_hash, "api_keys.file"): r for r in records}
            self._by_digest, self._built_from = {**table, **self._inline}, records
        return self._by_digest

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """A non-standard but widespread ``APIKey`` challenge naming where the key goes."""
        text = f"APIKey realm={quote_param(self.realm)}"
        if self.header:
            text += f", header={quote_param(self.header)}"
        if self.query_param:
            text += f", query={quote_param(self.query_param)}"
        return text

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge()),))
