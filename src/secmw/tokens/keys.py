"""The signing keys that match the configured JWT verifier: one signs, all verify (rotation)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.claims import HMAC_ALGORITHMS
from secmw.auth.keyring import derived_kid, load_ring, ring_entries
from secmw.core.principal import Principal
from secmw.core.section import read_secret_file
from secmw.errors import ConfigurationError

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What the issuer signs with (``kid``, ``signing``) and verifies with.

    Attributes:
        algorithm: Of every key.
        kid: Written into every token signed here.
        signing: The active key.
        verifying: ``kid`` -> verification key, the active one included.
        fallback: The key of tokens whose ``kid`` is none of these (``jwt.secret`` or
            ``jwt.public_key``, tokens issued before a ring was configured), or None.
    """

    algorithm: str
    kid: str
    signing: Any = field(repr=False)
    verifying: Mapping[str, Any] = field(repr=False)
    fallback: Any = field(default=None, repr=False)

    def verification_key(self, kid: object) -> Any:
        """The key a token naming ``kid`` is checked with (None: no key can check it)."""
        known = self.verifying.get(kid) if isinstance(kid, str) else None
        return self.fallback if known is None else known

    def public(self) -> list[tuple[str, str, Any]]:
        """``(kid, algorithm, key)`` of each verification key, for a JWKS."""
        return [(kid, self.algorithm, key) for kid, key in self.verifying.items()]


def signing_keys(settings: SecuritySettings) -> SigningKeys:
    """The keys of ``tokens.keys`` (the first signs), or else the single configured key.

    Raises:
        ConfigurationError: naming the variable to fix.
    """
    tokens = settings.tokens
    ring = load_ring(ring_entries(tokens.keys, tokens.keys_file))
    if not ring:
        algorithm, signing, verifying = single_key(settings)
        kid = derived_kid(
            algorithm, verifying.encode() if isinstance(verifying, str) else verifying
        )
        return SigningKeys(algorithm, kid, signing, {kid: verifying})
    texts = {key.kid: key.verification_text() for key in ring}
    # The verifier the middleware builds from the same settings: it refuses a ring that does not
    # fit jwt.* (a JWKS provider, another algorithm than jwt.secret or jwt.public_key).
    verifier = build_jwt_authenticator(settings.jwt, keys=texts)
    assert verifier is not None  # a ring always gives a key
    configured = configured_key(settings)
    fallback = None
    if configured is not None:
        fallback = pyjwt.get_algorithm_by_name(ring[0].algorithm).prepare_key(configured)
    return SigningKeys(
        ring[0].algorithm,
        ring[0].kid,
        ring[0].signing,
        {key.kid: key.verifying for key in ring},
        fallback,
    )


def configured_key(settings: SecuritySettings) -> str | None:
    """The text of ``jwt.secret`` or ``jwt.public_key`` (or their files), when set."""
    jwt = settings.jwt
    if jwt.secret_file:
        return read_secret_file(jwt.secret_file, "jwt.secret_file")
    if jwt.public_key_file:
        return read_secret_file(jwt.public_key_file, "jwt.public_key_file")
    if jwt.secret is not None:
        return jwt.secret.get_secret_value()
    return jwt.public_key


def single_key(settings: SecuritySettings) -> tuple[str, Any, Any]:
    """(algorithm, signing key, verification key) for tokens the configured verifier accepts.

    HMAC: the ``jwt.secret`` itself. Public-key algorithms: ``tokens.private_key``,
    proven to match ``jwt.public_key`` by signing a probe that the real verifier must
    accept, so a mismatched pair fails at start, not at the first login.

    Raises:
        ConfigurationError: naming the variable to fix.
    """
    jwt, tokens = settings.jwt, settings.tokens
    verifier = build_jwt_authenticator(jwt)
    if verifier is None:
        raise ConfigurationError("jwt.secret: set a JWT secret (or public key) to issue tokens")
    if getattr(verifier, "key_source", None) is not None:
        raise ConfigurationError(
            "tokens.private_key: keys come from a JWKS URL: the identity provider issues"
            " the tokens, this app cannot"
        )
    algorithm = verifier.algorithms[0]
    if algorithm in HMAC_ALGORITHMS:
        if jwt.secret_file:
            secret = read_secret_file(jwt.secret_file, "jwt.secret_file")
        elif jwt.secret is not None:
            secret = jwt.secret.get_secret_value()
        else:  # pragma: no cover - build_jwt_authenticator found an HMAC key somewhere
            raise ConfigurationError("jwt.secret: no secret")
        return algorithm, secret, secret
    if tokens.private_key_file:
        pem = read_secret_file(tokens.private_key_file, "tokens.private_key_file")
    elif tokens.private_key:
        pem = tokens.private_key.get_secret_value()
    else:
        raise ConfigurationError(
            "tokens.private_key: required to issue tokens verified with jwt.public_key"
        )
    try:
        key = pyjwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (pyjwt.PyJWTError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"tokens.private_key: not a usable private key for {algorithm} ({type(exc).__name__})"
        ) from None
    if not hasattr(key, "public_key"):
        raise ConfigurationError("tokens.private_key: a public key cannot sign tokens")
    now = int(time.time())
    probe: dict[str, Any] = {
        jwt.subject_claim: "probe",
        "iat": now,
        "exp": now + 60,
        "jti": "probe",
    }
    if jwt.issuer:
        probe["iss"] = jwt.issuer
    if jwt.audience:
        probe["aud"] = jwt.audience[0]
    signed = pyjwt.encode(probe, key, algorithm=algorithm)
    if not isinstance(verifier.verify(Credential("bearer", signed)), Principal):
        raise ConfigurationError("tokens.private_key: does not match jwt.public_key")
    return algorithm, key, key.public_key()
