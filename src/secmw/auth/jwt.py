"""Bearer JWT authentication with PyJWT (RFC 6750 challenges, RFC 7519 claims).

Security choices, each closed by default:

- The algorithm allowlist is explicit and never contains ``none``; one key serves either HMAC or
  public-key algorithms, never both (the classic RS256-to-HS256 key-confusion attack needs both).
- HMAC secrets shorter than the hash output are refused (RFC 7518 §3.2).
- ``exp`` is required unless switched off; ``iss`` and ``aud`` are checked when configured.
- Keys come only from configuration: ``jwk``, ``jku``, ``x5u`` and ``x5c`` token headers are ignored
  (PyJWT never reads them for verification).
- Tokens longer than ``max_token_bytes`` are refused before any decoding.

Keys come from configuration (one HMAC secret or one PEM public key) or from a JWKS endpoint
(:class:`secmw.auth.jwks.JWKSKeySource`): then the token's ``kid`` picks the key and its ``alg``
must be allowed and fit that key's type. A successful check is cached per token until its ``exp``
(:class:`secmw.auth.cache.TokenCache`), so a client repeating its token pays the signature once;
the revocation denylist is consulted on every request, cached or not, in one lookup covering the
token's ``jti`` and its family (``fam``, see :mod:`secmw.stores.revocation`), and an unreachable
denylist refuses with 503 rather than letting a possibly revoked token through. A denylist that
answers from memory (``answers_locally``: :class:`secmw.stores.mirror.RevocationMirror`) is asked
without awaiting anything, on the cached path too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt

from secmw import audit
from secmw.auth.base import Credential, bearer_credential
from secmw.auth.cache import TokenCache
from secmw.auth.claims import (
    HMAC_ALGORITHMS,
    check_algorithms,
    describe_error,
    roles_from_claims,
    scopes_from_claims,
    token_type,
)
from secmw.auth.jwks import JWKSKeySource, VerificationKey
from secmw.core.deny import Deny, quote_param
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore, any_of, denylist_ids


class JWTAuthenticator:
    """Verifies ``Authorization: Bearer <JWT>`` with a configured key or a JWKS key source.

    Args:
        key: HMAC secret (str or bytes) or a PEM public key; None with ``key_source``.
        key_source: Keys from a JWKS endpoint, picked by the token's ``kid``.
        algorithms: Allowlist; must not mix HMAC and public-key algorithms.
        issuer: Required ``iss`` when set.
        audience: Accepted ``aud`` value(s) when set (``aud`` then becomes required).
        leeway: Seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
        require: Claims that must be present (``exp`` by default).
        subject_claim: Claim holding the principal id (``sub``; some apps use ``user_id``).
        scopes_claim: Claim holding scopes; None tries ``scope``, ``scopes``, ``scp``.
        roles_claim: Claim holding roles (``roles``), None for none.
        realm: ``realm`` of the challenge.
        max_token_bytes: Longer tokens are refused before decoding.
        cache_size: Verified tokens remembered (0 turns the cache off).
        negative_ttl: Seconds a refused token is remembered.
        revocation: Denylist of ``jti`` values and token families, consulted on every request
            (sync ``is_revoked`` for WSGI, async ``ais_revoked`` for ASGI; sync on both sides
            for a store that ``answers_locally``), one lookup for the token's ``jti`` and its
            ``fam`` claim. Tokens without ``jti`` cannot be revoked one
            by one: add ``"jti"`` to ``require`` to refuse them.
        clock: UNIX time source of the cache (injected in tests).
        typ: Accepted ``typ`` header values (``["at+jwt"]``: RFC 9068 §4 access tokens only, so
            an ID token cannot be replayed as an access token); empty: not checked. Compared
            case-insensitively, ``application/at+jwt`` as ``at+jwt``; a token without ``typ``
            is refused when it is set.
        verification_keys: ``kid`` -> secret or PEM public key of tokens the app issues itself
            (``tokens.keys``): a token naming one of them is checked with it, any other with
            ``key``. Same algorithms as ``key``.
    """

    scheme = "bearer"
    authorization_scheme = "bearer"
    blocking = False
    throttle_first = False  # cheap to check, impossible to guess: count failures only

    def __init__(
        self,
        key: str | bytes | None = None,
        *,
        key_source: JWKSKeySource | None = None,
        algorithms: Sequence[str] = ("HS256",),
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        leeway: float = 0,
        require: Sequence[str] = ("exp",),
        subject_claim: str = "sub",
        scopes_claim: str | None = None,
        roles_claim: str | None = "roles",
        realm: str = "api",
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        negative_ttl: float = 5.0,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        clock: Callable[[], float] = time.time,
        setting: str = "jwt",
        typ: Iterable[str] = (),
        verification_keys: Mapping[str, str | bytes] | None = None,
    ) -> None:
        self.algorithms = check_algorithms(algorithms, setting=f"{setting}.algorithms")
        if (key is None) == (key_source is None):
            raise ConfigurationError(
                f"{setting}.secret: configure exactly one of a secret, a public key or a JWKS URL"
            )
        self.key_source = key_source
        if key_source is not None:
            outside = set(self.algorithms) - key_source.algorithms
            if outside:
                raise ConfigurationError(
                    f"{setting}.algorithms: {', '.join(sorted(outside))} cannot be verified with"
                    " JWKS keys (public-key algorithms only)"
                )
        self._key = self._load_key(key, setting) if key is not None else None
        self.typ = frozenset(filter(None, map(token_type, typ)))
        self._ring = {
            kid: self._load_key(k, "tokens.keys") for kid, k in (verification_keys or {}).items()
        }
        self.issuer = issuer
        self.audience = audience if isinstance(audience, str | None) else list(audience)
        self.leeway = leeway
        self.subject_claim = subject_claim
        self.scopes_claim = scopes_claim
        self.roles_claim = roles_claim
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self._required = list(dict.fromkeys([*require, subject_claim]))
        self._decoder = pyjwt.PyJWT(options={"require": self._required})
        self.cache = TokenCache(cache_size, negative_ttl=negative_ttl, clock=clock)
        self.revocation = revocation
        # An in-memory answer (a mirror of the Redis denylist): no I/O, so no await either.
        self._local_revocation = bool(getattr(revocation, "answers_locally", False))
        is_revoked = getattr(revocation, "is_revoked", None)
        ais_revoked = getattr(revocation, "ais_revoked", None)
        if revocation is not None and is_revoked is None and ais_revoked is None:
            raise ConfigurationError(
                f"{setting}.revocation_url: the revocation store has no is_revoked/ais_revoked"
            )
        # A store written for one jti per call still answers for a token's jti and family.
        self._is_revoked = any_of(is_revoked) if is_revoked is not None else None
        self._ais_revoked = any_of(ais_revoked) if ais_revoked is not None else None

    def _load_key(self, key: str | bytes, setting: str) -> Any:
        if self.algorithms[0] in HMAC_ALGORITHMS:
            raw = key.encode() if isinstance(key, str) else key
            if b"-----BEGIN" in raw:
                raise ConfigurationError(
                    f"{setting}.secret: a PEM key cannot be an HMAC secret (key confusion)"
                )
            needed = max(HMAC_ALGORITHMS[a] for a in self.algorithms)
            if len(raw) < needed:
                raise ConfigurationError(
                    f"{setting}.secret: HMAC secret must be at least {needed} bytes for"
                    f" {', '.join(self.algorithms)} (got {len(raw)})"
                )
            return raw
        algorithm = pyjwt.get_algorithm_by_name(self.algorithms[0])
        try:
            loaded = algorithm.prepare_key(key)
            for name in self.algorithms[1:]:
                pyjwt.get_algorithm_by_name(name).prepare_key(key)
        except (pyjwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{setting}.public_key: not a usable public key for {', '.join(self.algorithms)}"
                f" ({type(exc).__name__})"
            ) from None
        return loaded

    def cached(self, token: str | bytes) -> Principal | None:
        """The principal for a token the cache alone answers for: checked before, unexpired, and
        nothing else to consult but a denylist answered from memory (no JWKS key set). None
        otherwise: ``verify`` decides. The chain calls it for the token it extracted, saving a
        credential object."""
        if self.key_source is not None or not (self.revocation is None or self._local_revocation):
            return None
        known = self.cache.principal(token)
        if known is None or self.revocation is None:
            return known
        try:  # revoked, or a stale mirror that refuses: ``verify`` answers (401 or 503)
            ids = denylist_ids(known.claims)
            return None if ids and self._is_revoked_sync(ids) else known
        except Exception:
            return None

    @property
    def needs_io(self) -> bool:
        """Whether a check may wait on the network (a JWKS fetch, an async denylist); without,
        the ASGI adapter calls :meth:`verify` directly instead of awaiting :meth:`averify`."""
        remote = self._ais_revoked is not None and not self._local_revocation
        return self.key_source is not None or remote

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The bearer token from the ``Authorization`` parameter the chain handed over."""
        return bearer_credential(
            authorization, scheme=self.scheme, max_bytes=self.max_token_bytes, deny=self._deny
        )

    def verify(self, credential: Credential) -> Principal | Deny:
        """Check signature and claims (or take the cached result), then the denylist."""
        token = credential.secret
        generation = self._generation
        result = self.cache.get(token, generation)
        if result is None:
            step = self._prepare(token)
            if isinstance(step, _Lookup):
                step = self._from_source(step.source.get(step.kid, step.alg), step)
            result = self._remember(token, step, generation)
        elif self.key_source is not None:
            self.key_source.refresh_if_due()
        ids = _denylist_ids(result) if self.revocation is not None else ()
        if not ids:
            return result
        try:
            revoked = self._is_revoked_sync(ids)
        except Exception as exc:  # any store failure: refuse, never let a revoked token in
            return self._revocation_unavailable(exc)
        return self._deny(401, "token revoked", "invalid_token") if revoked else result

    async def averify(self, credential: Credential) -> Principal | Deny:
        """Async twin of :meth:`verify`: JWKS fetches and the denylist never block the loop."""
        token = credential.secret
        generation = self._generation
        result = self.cache.get(token, generation)
        if result is None:
            step = self._prepare(token)
            if isinstance(step, _Lookup):
                step = self._from_source(await step.source.aget(step.kid, step.alg), step)
            result = self._remember(token, step, generation)
        elif self.key_source is not None:
            self.key_source.refresh_if_due()
        ids = _denylist_ids(result) if self.revocation is not None else ()
        if not ids:
            return result
        try:
            if self._ais_revoked is not None and not self._local_revocation:
                revoked = bool(await self._ais_revoked(*ids))
            else:
                revoked = self._is_revoked_sync(ids)
        except Exception as exc:  # any store failure: refuse, never let a revoked token in
            return self._revocation_unavailable(exc)
        return self._deny(401, "token revoked", "invalid_token") if revoked else result

    @property
    def _generation(self) -> int:
        return self.key_source.generation if self.key_source is not None else 0

    def _prepare(self, token: str) -> _Keyed | _Lookup | Deny:
        """The configured key, or what a JWKS lookup needs (kid, alg), or a refusal."""
        if self.key_source is None and not self._ring:
            return _Keyed(self._key, list(self.algorithms))
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            return self._deny(401, "malformed token", "invalid_token")
        alg, kid = header.get("alg"), header.get("kid")
        if self.key_source is None:  # a rotating ring: the kid picks, else the configured key
            known = self._ring.get(kid) if isinstance(kid, str) else None
            return _Keyed(self._key if known is None else known, list(self.algorithms))
        if not isinstance(alg, str) or alg not in self.algorithms:
            return self._deny(401, "token algorithm not allowed", "invalid_token")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            return self._deny(401, "malformed token", "invalid_token")
        return _Lookup(self.key_source, kid, alg)

    def _from_source(self, found: VerificationKey | str, lookup: _Lookup) -> _Keyed | Deny:
        if isinstance(found, VerificationKey):
            return _Keyed(found.key, [lookup.alg])
        if found == "unknown":
            return self._deny(401, "token signing key unknown", "invalid_token")
        # No key set was ever loaded: an unavailable dependency (503), not a bad token.
        retry = str(max(1, int(lookup.source.cooldown)))
        return Deny(
            503, "signing keys unavailable", "temporarily_unavailable", (("retry-after", retry),)
        )

    def _remember(self, token: str, step: _Keyed | Deny, generation: int) -> Principal | Deny:
        if isinstance(step, Deny):
            # Refused before any signature check (malformed, alg, unknown kid): cheap to redo,
            # and an unknown kid must be looked up again once the key set may have changed.
            return step
        result = self._decode(token, step)
        expires_at = None
        if isinstance(result, Principal):
            exp = result.claims.get("exp")
            if isinstance(exp, int | float) and not isinstance(exp, bool):
                try:
                    expires_at = float(exp)
                except OverflowError:  # a signed exp beyond float range: valid, never cached
                    return result
        self.cache.put(token, result, expires_at=expires_at, generation=generation)
        return result

    def _decode(self, token: str, key: _Keyed) -> Principal | Deny:
        options = {
            "jwt": token,
            "key": key.key,
            "algorithms": key.algorithms,
            "audience": self.audience,
            "issuer": self.issuer,
            "leeway": self.leeway,
        }
        try:
            if not self.typ:
                claims: dict[str, Any] = self._decoder.decode(**options)
                return self.principal_from_claims(claims)
            decoded = self._decoder.decode_complete(**options)
        except pyjwt.PyJWTError as exc:
            return self._deny(401, describe_error(exc), "invalid_token")
        if token_type(decoded["header"].get("typ")) not in self.typ:
            return self._deny(401, "token type not accepted", "invalid_token")
        claims = decoded["payload"]
        return self.principal_from_claims(claims)

    def _is_revoked_sync(self, ids: tuple[str, ...]) -> bool:
        if self._is_revoked is None:
            raise TypeError("the revocation store has no synchronous is_revoked")
        return bool(self._is_revoked(*ids))

    def _revocation_unavailable(self, exc: Exception) -> Deny:
        audit.emit("revocation.unavailable", type(exc).__name__)
        return Deny(
            503, "revocation list unavailable", "temporarily_unavailable", (("retry-after", "5"),)
        )

    def principal_from_claims(self, claims: Mapping[str, Any]) -> Principal | Deny:
        """The principal for verified claims (the subject must be a non-empty string or int).

        Tokens that say they are not access tokens (``token_use`` other than ``"access"``, as
        ``secmw.tokens`` writes into refresh tokens) are refused: a refresh token must never work
        as a bearer token.
        """
        if claims.get("token_use", "access") != "access":
            return self._deny(401, "not an access token", "invalid_token")
        subject = claims.get(self.subject_claim)
        if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
            return self._deny(401, "token subject invalid", "invalid_token")
        name = claims.get("name")
        return Principal(
            str(subject),
            self.scheme,
            scopes_from_claims(claims, self.scopes_claim),
            roles_from_claims(claims, self.roles_claim),
            claims,
            name if isinstance(name, str) else None,
        )

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """``Bearer realm="..."`` with RFC 6750 ``error`` parameters when given."""
        text = f"Bearer realm={quote_param(self.realm)}"
        if error:
            text += f", error={quote_param(error)}"
        if description:
            text += f", error_description={quote_param(description)}"
        return text

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge(code, detail)),))


@dataclass(frozen=True, slots=True)
class _Keyed:
    """A verification key with the algorithms it may check for this token."""

    key: Any
    algorithms: list[str]


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A key still to be found in a JWKS key source."""

    source: JWKSKeySource
    kid: str | None
    alg: str


def _denylist_ids(result: Principal | Deny) -> tuple[str, ...]:
    # From the principal's claims, so a cached token is checked exactly like a fresh one.
    return denylist_ids(result.claims) if isinstance(result, Principal) else ()


__all__ = ["JWTAuthenticator"]
