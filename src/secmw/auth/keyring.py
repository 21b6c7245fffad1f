"""Keys of the tokens an app issues itself, for rotation: one signs, all verify, each has a ``kid``.

``tokens.keys`` (or ``tokens.keys_file``) lists them, the active key first: tokens are signed
with it and carry its ``kid``; a token is verified with the key its ``kid`` names, so tokens
signed with a previous key keep working until that key is removed from the list, and a new key
works the moment it is listed. Keys are HMAC secrets or PEM private keys, all of one algorithm
(a ring mixing HMAC and public-key algorithms would reopen key confusion). Public keys can be
published as a JWKS (:func:`public_jwks`) for other services to verify with.

The verifying side lives in the authentication layer (the JWT authenticator takes
``verification_keys``), the signing side in ``secmw.tokens``; both read the ring from here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import Field, SecretStr, model_validator

from secmw.auth.claims import HMAC_ALGORITHMS
from secmw.core.section import Section, read_json_file
from secmw.errors import ConfigurationError


class SigningKeyEntry(Section):
    """One key of ``tokens.keys``: its id and an HMAC secret or a PEM private key."""

    kid: str = Field(min_length=1, max_length=64, description="Key id written into tokens.")
    secret: SecretStr | None = Field(None, description="HMAC secret (at least 32 bytes).")
    private_key: SecretStr | None = Field(None, description="PEM private key (RSA, EC, Ed25519).")

    @model_validator(mode="after")
    def _one_key(self) -> SigningKeyEntry:
        if (self.secret is None) == (self.private_key is None):
            raise ValueError("give exactly one of secret and private_key")
        return self


@dataclass(frozen=True, slots=True)
class RingKey:
    """A loaded key: ``signing`` signs, ``verifying`` checks (the same secret for HMAC)."""

    kid: str
    algorithm: str
    signing: Any = field(repr=False)
    verifying: Any = field(repr=False)

    def verification_text(self) -> str:
        """What the JWT authenticator is configured with: the secret, or the PEM public key."""
        if self.algorithm in HMAC_ALGORITHMS:
            return str(self.verifying.decode())
        pem: bytes = self.verifying.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()


def ring_entries(keys: Sequence[Any], keys_file: Path | None) -> list[SigningKeyEntry]:
    """The ``tokens.keys`` entries, then those of ``tokens.keys_file``."""
    entries = [SigningKeyEntry.model_validate(k) for k in keys]
    if keys_file is not None:
        raw = read_json_file(keys_file, "tokens.keys_file")
        try:
            entries += [SigningKeyEntry.model_validate(item) for item in raw]
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"tokens.keys_file: invalid key list ({exc})") from None
    return entries


def load_ring(entries: Iterable[SigningKeyEntry], setting: str = "tokens.keys") -> list[RingKey]:
    """Loaded keys, active first. Raises ConfigurationError for a bad key, a repeated ``kid``,
    or keys of different algorithms."""
    ring = [_load(entry, setting) for entry in entries]
    kids = [key.kid for key in ring]
    if len(set(kids)) != len(kids):
        raise ConfigurationError(f"{setting}: each key needs its own kid")
    if len({key.algorithm for key in ring}) > 1:
        raise ConfigurationError(f"{setting}: every key must be of the same algorithm")
    return ring


def _load(entry: SigningKeyEntry, setting: str) -> RingKey:
    if entry.secret is not None:
        secret = entry.secret.get_secret_value().encode()
        if len(secret) < HMAC_ALGORITHMS["HS256"] or b"-----BEGIN" in secret:
            raise ConfigurationError(
                f"{setting}: the secret of key {entry.kid!r} must be at least 32 bytes, not PEM"
            )
        return RingKey(entry.kid, "HS256", secret, secret)
    assert entry.private_key is not None  # the model validator saw to it
    try:
        private: Any = serialization.load_pem_private_key(
            entry.private_key.get_secret_value().encode(), password=None
        )
    except (ValueError, TypeError):
        raise ConfigurationError(f"{setting}: key {entry.kid!r} is not a PEM private key") from None
    return RingKey(
        entry.kid, _algorithm_of(private, entry.kid, setting), private, private.public_key()
    )


def _algorithm_of(private: Any, kid: str, setting: str) -> str:
    if isinstance(private, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if private.curve.name in by_curve:
            return by_curve[private.curve.name]
    raise ConfigurationError(f"{setting}: key {kid!r} is of an unsupported type")


def derived_kid(algorithm: str, verifying: Any) -> str:
    """The ``kid`` of a single configured key: the RFC 7638 thumbprint of a public key; for an
    HMAC secret an HMAC of a fixed label, which names the key without revealing anything of it."""
    if algorithm in HMAC_ALGORITHMS:
        digest = hmac.new(verifying, b"secmw key id", hashlib.sha256).digest()
    else:
        jwk = json.loads(pyjwt.get_algorithm_by_name(algorithm).to_jwk(verifying))
        required = {
            "RSA": ("e", "kty", "n"),
            "EC": ("crv", "kty", "x", "y"),
            "OKP": ("crv", "kty", "x"),
        }
        members = {name: jwk[name] for name in required[jwk["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:22]


def public_jwks(keys: Iterable[tuple[str, str, Any]]) -> dict[str, Any]:
    """A JWKS document (RFC 7517 §5) of ``(kid, algorithm, public key)`` triples.

    Raises:
        ConfigurationError: HMAC keys are secret and are never published.
    """
    published = []
    for kid, algorithm, public in keys:
        if algorithm in HMAC_ALGORITHMS:
            raise ConfigurationError(
                "tokens.keys: HMAC secrets cannot be published; use public-key signing keys"
            )
        jwk = json.loads(pyjwt.get_algorithm_by_name(algorithm).to_jwk(public))
        published.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
    return {"keys": published}


__all__ = [
    "RingKey",
    "SigningKeyEntry",
    "derived_kid",
    "load_ring",
    "public_jwks",
    "ring_entries",
]
