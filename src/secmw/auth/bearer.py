"""One ``Bearer`` scheme, two verifiers: which tokens are JWTs, which may be introspected.

A compact JWS has three dot-separated segments and a JSON header naming ``alg``: it is verified
locally. Every other token that could be an access token goes to introspection (RFC 7662); one
that cannot (a five-segment JWE, characters outside RFC 6750's ``b64token``) is refused before it
costs the authorization server a request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING

from secmw.auth.base import Credential
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView

if TYPE_CHECKING:
    from secmw.auth.introspection import IntrospectionAuthenticator
    from secmw.auth.jwt import JWTAuthenticator

B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1


def unusable_token(token: str) -> str | None:
    """Why ``token`` cannot be an access token worth a network call, or None when it may be.

    A JWS has three segments, an opaque token usually one; five are a JWE, which no resource
    server introspects. RFC 6750's ``b64token`` leaves out whitespace and control characters.
    """
    if token.count(".") > 2:
        return "token has too many segments"
    if B64TOKEN.fullmatch(token) is None:
        return "token has characters a bearer token cannot have"
    return None


def looks_like_jwt(token: str) -> bool:
    """True for a compact JWS: three segments and a JSON object header naming an ``alg``."""
    if token.count(".") != 2:
        return False
    head = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


class BearerDispatcher:
    """One ``Bearer`` scheme, two verifiers: JWTs locally, everything else by introspection.

    Args:
        jwt: Verifies tokens shaped like a JWS (``JWTAuthenticator``).
        opaque: Verifies every other token (``IntrospectionAuthenticator``).
    """

    scheme = "bearer"
    authorization_scheme = "bearer"
    blocking = True

    def __init__(self, jwt: JWTAuthenticator, opaque: IntrospectionAuthenticator) -> None:
        self.jwt = jwt
        self.opaque = opaque

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The token, under the larger of the two size limits."""
        found = self.opaque.extract(request, authorization)
        if isinstance(found, Credential) and looks_like_jwt(found.secret):
            return self.jwt.extract(request, authorization)
        return found

    def verify(self, credential: Credential) -> Principal | Deny:
        """Dispatch by token shape."""
        if credential.scheme == self.opaque.scheme:
            return self.opaque.verify(credential)
        return self.jwt.verify(credential)

    async def averify(self, credential: Credential) -> Principal | Deny:
        """Async twin of :meth:`verify`."""
        if credential.scheme == self.opaque.scheme:
            return await self.opaque.averify(credential)
        return await self.jwt.averify(credential)

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """The Bearer challenge."""
        return self.opaque.challenge(error, description)

    def close(self) -> None:
        """Close the introspection endpoint's pooled connections."""
        self.opaque.close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        await self.opaque.aclose()


__all__ = ["B64TOKEN", "BearerDispatcher", "looks_like_jwt", "unusable_token"]
