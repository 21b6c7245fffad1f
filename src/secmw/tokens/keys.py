"""The signing key that matches the configured JWT verifier."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.jwt import HMAC_ALGORITHMS
from secmw.core.principal import Principal
from secmw.core.section import read_secret_file
from secmw.errors import ConfigurationError

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings


def signing_keys(settings: SecuritySettings) -> tuple[str, Any, Any]:
    """(algorithm, signing key, verification key) for tokens the configured verifier accepts.

    HMAC: the ``SECMW_JWT__SECRET`` itself. Public-key algorithms: ``SECMW_TOKENS__PRIVATE_KEY``,
    proven to match ``SECMW_JWT__PUBLIC_KEY`` by signing a probe that the real verifier must
    accept, so a mismatched pair fails at start, not at the first login.

    Raises:
        ConfigurationError: naming the variable to fix.
    """
    jwt, tokens = settings.jwt, settings.tokens
    verifier = build_jwt_authenticator(jwt)
    if verifier is None:
        raise ConfigurationError(
            "SECMW_JWT__SECRET: set a JWT secret (or public key) to issue tokens"
        )
    if getattr(verifier, "key_source", None) is not None:
        raise ConfigurationError(
            "SECMW_TOKENS__PRIVATE_KEY: keys come from a JWKS URL: the identity provider issues"
            " the tokens, this app cannot"
        )
    algorithm = verifier.algorithms[0]
    if algorithm in HMAC_ALGORITHMS:
        if jwt.secret_file:
            secret = read_secret_file(jwt.secret_file, "SECMW_JWT__SECRET_FILE")
        elif jwt.secret is not None:
            secret = jwt.secret.get_secret_value()
        else:  # pragma: no cover - build_jwt_authenticator found an HMAC key somewhere
            raise ConfigurationError("SECMW_JWT__SECRET: no secret")
        return algorithm, secret, secret
    if tokens.private_key_file:
        pem = read_secret_file(tokens.private_key_file, "SECMW_TOKENS__PRIVATE_KEY_FILE")
    elif tokens.private_key:
        pem = tokens.private_key.get_secret_value()
    else:
        raise ConfigurationError(
            "SECMW_TOKENS__PRIVATE_KEY: required to issue tokens verified with"
            " SECMW_JWT__PUBLIC_KEY"
        )
    try:
        key = pyjwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (pyjwt.PyJWTError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"SECMW_TOKENS__PRIVATE_KEY: not a usable private key for {algorithm}"
            f" ({type(exc).__name__})"
        ) from None
    if not hasattr(key, "public_key"):
        raise ConfigurationError("SECMW_TOKENS__PRIVATE_KEY: a public key cannot sign tokens")
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
        raise ConfigurationError("SECMW_TOKENS__PRIVATE_KEY: does not match SECMW_JWT__PUBLIC_KEY")
    return algorithm, key, key.public_key()
