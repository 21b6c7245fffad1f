"""HTTP Basic authentication (RFC 7617) against argon2id or bcrypt password hashes.

An unknown user name still costs one hash verification (against a dummy hash), so response times
do not reveal which users exist. Verification is CPU-heavy by design: ``blocking`` tells the ASGI
adapter to run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

from secmw.auth.base import Credential
from secmw.passwords import dummy_hash, verify_password
from secmw.principal import Principal
from secmw.problems import Deny, quote_param
from secmw.request import RequestView


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

    def __init__(self, users: Iterable[BasicUser], *, realm: str = "api") -> None:
        self.users = {u.username: u for u in users}
        self.realm = realm
        dummy_hash()  # computed now, so the first unknown user does not pay for it

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
        user = self.users.get(credential.username or "")
        ok = verify_password(credential.secret, user.password_hash if user else dummy_hash())
        if not ok or user is None:
            return self._deny(401, "invalid user name or password", "invalid_credentials")
        return Principal(user.username, self.scheme, user.scopes, user.roles)

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """``Basic realm="...", charset="UTF-8"`` (RFC 7617 §2.1)."""
        return f'Basic realm={quote_param(self.realm)}, charset="UTF-8"'

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge()),))
