"""HTTP Basic authentication (RFC 7617) against argon2id or bcrypt password hashes.

An unknown user name still costs one hash verification, against one of the configured users'
hashes (so the cost matches whatever algorithm and parameters those hashes use, and a password
that happens to match a decoy is still refused): response times do not reveal which users exist.
Verification is CPU-heavy by design: ``blocking`` tells the ASGI adapter to run it in a worker
thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from secmw.auth.base import Credential
from secmw.auth.passwords import dummy_hash, verify_password
from secmw.auth.reload import WatchedFile
from secmw.core.deny import Deny, quote_param
from secmw.core.principal import Principal
from secmw.core.request import RequestView


@dataclass(frozen=True, slots=True)
class BasicUser:
    """A Basic-auth user: name, password hash, and what the user is granted."""

    username: str
    password_hash: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()


class BasicAuthenticator:
    """Verifies ``Authorization: Basic base64(user:password)``."""

    scheme = "basic"
    authorization_scheme = "basic"
    blocking = True

    def __init__(
        self,
        users: Iterable[BasicUser],
        *,
        realm: str = "api",
        watched: WatchedFile[list[BasicUser]] | None = None,
    ) -> None:
        self._inline = {u.username: u for u in users}
        self.realm = realm
        self._decoy_key = secrets.token_bytes(16)
        # ``basic.users_file``, re-read when it changes; inline users win over the file's.
        self._watched = watched
        self._built_from: object = None
        self._use({})

    def _use(self, from_file: dict[str, BasicUser]) -> None:
        self.users = {**from_file, **self._inline}
        # An unknown name is checked against one of the configured hashes, picked by a keyed hash
        # of the name: the same cost as a real user whatever algorithm and cost the hashes use.
        self._decoys = sorted(u.password_hash for u in self.users.values()) or [dummy_hash()]

    def _current(self) -> dict[str, BasicUser]:
        if self._watched is not None:
            users = self._watched.current()
            if users is not self._built_from:
                self._use({u.username: u for u in users})
                self._built_from = users
        return self.users

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """Decode the user-pass; bad base64, non-UTF-8 or a missing colon is a 400."""
        if authorization is None:
            return None
        if not authorization:
            return self._deny(400, "basic credentials missing", "invalid_request")
        try:
            decoded = base64.b64decode(authorization, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return self._deny(
                400, "basic credentials are not valid base64 UTF-8", "invalid_request"
            )
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            return self._deny(400, "basic credentials need user:password", "invalid_request")
        if not decoded.isprintable():
            return self._deny(400, "basic credentials hold control characters", "invalid_request")
        return Credential(self.scheme, password, username)

    def verify(self, credential: Credential) -> Principal | Deny:
        """Check the password; an unknown user costs the same hash verification as a known one."""
        name = credential.username or ""
        user = self._current().get(name)
        ok = verify_password(credential.secret, user.password_hash if user else self._decoy(name))
        if not ok or user is None:
            return self._deny(401, "invalid user name or password", "invalid_credentials")
        return Principal(user.username, self.scheme, user.scopes, user.roles)

    def _decoy(self, name: str) -> str:
        digest = hmac.digest(self._decoy_key, name.encode("utf-8", "surrogatepass"), "sha256")
        return self._decoys[int.from_bytes(digest[:4], "big") % len(self._decoys)]

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """``Basic realm="...", charset="UTF-8"`` (RFC 7617 §2.1)."""
        return f'Basic realm={quote_param(self.realm)}, charset="UTF-8"'

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge()),))
