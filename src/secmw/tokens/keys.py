"""The signing key that matches the configured JWT verifier."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.claims import HMAC_ALGORITHMS
from secmw.core.principal import Principal
from secmw.core.section import read_secret_file
from secmw.errors import ConfigurationError

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings


def signing_keys(settings: SecuritySettings) -> tuple[str, Any, Any]:
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
