"""JWK sets (RFC 7517): which keys of a published document may verify which algorithms.

Only signature keys are kept: ``use`` other than ``sig``, ``key_ops`` without ``verify``,
symmetric (``oct``) keys, keys holding private members and RSA keys under 2048 bits are skipped.
A key's algorithms follow from its type and curve (RSA: RS*/PS*; EC P-256: ES256, P-384: ES384,
P-521: ES512; OKP Ed25519/Ed448: EdDSA), narrowed by its ``alg`` member and by the allowlist. A
key given only as an ``x5c`` certificate is read from the certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
OKP_CURVES = {"Ed25519": "EdDSA", "Ed448": "EdDSA"}
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA")
MAX_KEYS = 100
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class JWKSError(ValueError):
    """A JWKS or discovery document that cannot be used (the reason is secmw's own text)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One usable public key: its ``kid``, key type and the algorithms it may verify."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    key: Any = field(repr=False)


class KeySet:
    """The usable keys of one JWKS document, indexed by ``kid``."""

    __slots__ = ("_by_kid", "fingerprint", "keys")

    def __init__(self, keys: Sequence[VerificationKey], fingerprint: str) -> None:
        self.keys = tuple(keys)
        self.fingerprint = fingerprint
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(keys) for kid, keys in by_kid.items()}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def kids(self) -> frozenset[str]:
        """The key ids present."""
        return frozenset(self._by_kid)

    def find(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key named ``kid`` that may verify ``alg``.

        A token without ``kid`` is matched only when exactly one key fits ``alg``: trying every
        key would multiply the cost of a forged token by the size of the set.
        """
        if kid is None:
            fitting = [k for k in self.keys if alg in k.algorithms]
            return fitting[0] if len(fitting) == 1 else None
        for key in self._by_kid.get(kid, ()):
            if alg in key.algorithms:
                return key
        return None


def _families(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        return RSA_ALGORITHMS
    curves = EC_CURVES if kty == "EC" else OKP_CURVES if kty == "OKP" else {}
    crv = jwk.get("crv")
    return frozenset({curves[crv]}) if isinstance(crv, str) and crv in curves else frozenset()


def _from_x5c(jwk: Mapping[str, Any]) -> Any:
    from cryptography import x509

    chain = jwk.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise ValueError("no key material")
    # x5c is standard base64 (RFC 7517 §4.7); the certificate's chain is not validated: the
    # document itself is trusted through the TLS connection it came over.
    der = base64.b64decode(chain[0], validate=True)
    return x509.load_der_x509_certificate(der).public_key()


def _public_key(jwk: Mapping[str, Any]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    kty = jwk["kty"]
    public = {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}
    if kty == "RSA":
        key = RSAAlgorithm.from_jwk(public) if "n" in jwk else _from_x5c(jwk)
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            raise ValueError("weak or mismatched RSA key")
        return key
    if kty == "EC":
        key = ECAlgorithm.from_jwk(public) if "x" in jwk else _from_x5c(jwk)
        names = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
        expected = names.get(jwk["crv"], jwk["crv"])
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != expected:
            raise ValueError("mismatched EC key")
        return key
    key = OKPAlgorithm.from_jwk(public)
    if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise ValueError("not a signature key")
    return key


def load_jwk(jwk: Any, allowed: Collection[str]) -> VerificationKey | None:
    """A usable verification key from one JWK, or None when it must not be used."""
    if not isinstance(jwk, dict) or any(member in jwk for member in _PRIVATE_MEMBERS):
        return None
    use, ops, kid, pinned = jwk.get("use"), jwk.get("key_ops"), jwk.get("kid"), jwk.get("alg")
    if use is not None and use != "sig":
        return None  # RFC 7517 §4.2: "enc" keys are for encryption only
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if kid is not None and not isinstance(kid, str):
        return None
    algorithms = _families(jwk) & frozenset(allowed)
    if pinned is not None:
        algorithms = algorithms & {pinned} if isinstance(pinned, str) else frozenset()
    if not algorithms:
        return None
    try:
        key = _public_key(jwk)
    except Exception:  # malformed members: PyJWT and cryptography raise several types
        return None
    return VerificationKey(kid, jwk["kty"], frozenset(algorithms), key)


def parse_jwks(document: bytes | str | Mapping[str, Any], allowed: Collection[str]) -> KeySet:
    """The usable keys of a JWKS document; JWKSError when it holds none."""
    data: Any = document
    if isinstance(document, bytes | str):
        try:
            data = json.loads(document)
        except (ValueError, RecursionError):
            raise JWKSError("invalid JSON") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise JWKSError("no 'keys' list")
    usable: list[VerificationKey] = []
    members: list[str] = []
    for jwk in keys[:MAX_KEYS]:
        key = load_jwk(jwk, allowed)
        if key is not None:
            usable.append(key)
            members.append(json.dumps(jwk, sort_keys=True, default=str))
    if not usable:
        raise JWKSError("no usable signing keys")
    return KeySet(usable, hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest())


__all__ = [
    "DEFAULT_ALGORITHMS",
    "JWKSError",
    "KeySet",
    "VerificationKey",
    "load_jwk",
    "parse_jwks",
]
