"""``TokenIssuer``: access and refresh tokens the configured JWT authenticator accepts.

Tokens are signed with the key the JWT authenticator verifies (``jwt.*``: same algorithm,
issuer, audience, subject and scope claims), so whatever the issuer signs the middleware admits.

- Access tokens: ``token_use: "access"``, RFC 9068 header ``typ: at+jwt``, a ``jti``, scopes in
  the configured scope claim (``scope``, space-delimited, by default), roles in ``roles``, and
  the family (``fam``) of the login they were issued for.
- Refresh tokens: ``token_use: "refresh"``, the same family (``fam``), and their scopes and
  roles inside a ``grant`` claim, where no authenticator looks for a grant. Each works once: a
  live one is kept in a single-use store and marked used when spent; presenting a spent one (a
  stolen copy, RFC 6819 §5.2.2.3, RFC 9700 §4.14.2) revokes the whole family. A grant the store
  no longer knows (expired, or dropped by the memory store's cap) is ``invalid_grant`` and
  revokes nothing: only a grant known to be spent is reuse.
- Revocation writes the ``jti`` and the family into the :mod:`secmw.stores.revocation` denylist the
  JWT authenticator consults, until the token would have expired anyway. Revoking any token of a
  login (logout with the access token, RFC 9700 §4.14.2) ends all of them; so does reuse.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from secmw import audit
from secmw.auth.keyring import public_jwks
from secmw.core.section import settings_or_environment
from secmw.stores.revocation import FAMILY_CLAIM, MemoryRevocationStore, RevocationStore, family_key
from secmw.tokens import endpoint
from secmw.tokens.clients import build_clients
from secmw.tokens.codec import TokenCodec
from secmw.tokens.model import (
    REFRESH,
    TOKEN_USE_CLAIM,
    Account,
    IssuedTokens,
)
from secmw.tokens.oauth import (
    OAuthError,
    invalid_grant,
    temporarily_unavailable,
)
from secmw.tokens.onetime import (
    STORE_ERRORS,
    MemorySingleUseStore,
    SingleUseStore,
    SingleUseTokens,
    build_store,
    subject_group,
)

if TYPE_CHECKING:
    from secmw.auth.base import AsyncFailureThrottle, FailureThrottle
    from secmw.config.settings import SecuritySettings
    from secmw.core.request import RequestView

FAMILY_MARGIN = 60  # seconds a revoked family outlives its last possible token
SPENT = "\x00spent"
"""The value a refresh grant is swapped for when used (no subject is a NUL-led string): a grant
seen with it again is reuse; a grant not found at all is merely unknown."""


def _grant_key(jti: str) -> str:
    return f"refresh:{jti}"


class TokenIssuer:
    """Issues, refreshes and revokes tokens that the configured JWT authenticator accepts.

    Args:
        settings: Settings to build from; default: the environment.
        revocation: The denylist the JWT authenticator consults (give both the same store; use a
            shared Redis store across processes). Default: a memory store.
        store: Where live refresh grants are kept. Default: ``tokens.storage_uri``.
        clock: UNIX time, injectable for tests.
        **overrides: Settings sections, for example ``jwt={"secret": "..."}``.

    Raises:
        ConfigurationError: no JWT key, or (public-key algorithms) no private key or one that does
            not match ``jwt.public_key``.
    """

    def __init__(
        self,
        settings: SecuritySettings | None = None,
        *,
        revocation: RevocationStore | None = None,
        store: SingleUseStore | None = None,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> None:
        resolved: SecuritySettings = settings_or_environment(settings, overrides)
        self.settings = resolved
        tokens = resolved.tokens
        self.codec = TokenCodec(self.settings, clock)
        self.access_ttl = tokens.access_ttl
        self.refresh_ttl = tokens.refresh_ttl
        self.known_scopes = frozenset(tokens.scopes)
        self.clients = build_clients(tokens.clients)
        self.password_grant = tokens.password_grant
        self.realm = resolved.auth.realm
        self.revocation: Any = revocation if revocation is not None else MemoryRevocationStore()
        self.store = (
            store
            if store is not None
            else build_store(
                tokens.storage_uri, max_entries=tokens.max_entries, timeout=tokens.storage_timeout
            )
        )
        self._clock = clock

    # -- issuing ------------------------------------------------------------------------------

    def access_token(
        self, account: Account, scopes: Iterable[str] | None = None, *, ttl: int | None = None
    ) -> str:
        """A signed access token for ``account`` (all its scopes unless narrowed), valid for
        ``ttl`` seconds (default ``tokens.access_ttl``)."""
        granted = account.scopes if scopes is None else frozenset(scopes)
        return self.codec.access_token(account, granted, self.access_ttl if ttl is None else ttl)

    def issue(
        self, account: Account, scopes: Iterable[str] | None = None, *, refresh: bool = True
    ) -> IssuedTokens:
        """An access token and (by default) a new refresh-token family.

        Raises:
            TokenStoreError: the refresh grant could not be stored.
        """
        granted = account.scopes if scopes is None else frozenset(scopes)
        if not refresh:
            return IssuedTokens(self.access_token(account, granted), self.access_ttl, granted)
        family, jti, token = self._new_family(account, granted)
        self.store.put(_grant_key(jti), account.subject, self.refresh_ttl)
        return self._issued(account, granted, family, token)

    async def aissue(
        self, account: Account, scopes: Iterable[str] | None = None, *, refresh: bool = True
    ) -> IssuedTokens:
        """Async twin of :meth:`issue`."""
        granted = account.scopes if scopes is None else frozenset(scopes)
        if not refresh:
            return IssuedTokens(self.access_token(account, granted), self.access_ttl, granted)
        family, jti, token = self._new_family(account, granted)
        await self.store.aput(_grant_key(jti), account.subject, self.refresh_ttl)
        return self._issued(account, granted, family, token)

    def jwks(self) -> dict[str, Any]:
        """The public keys of the tokens this issuer signs, as a JWKS document (RFC 7517 §5):
        serve it (at ``/.well-known/jwks.json``, say) so other services verify these tokens with
        their own JWKS client. Every key of ``tokens.keys`` is listed, so a token signed with a
        previous key still verifies there until that key is removed.

        Raises:
            ConfigurationError: the keys are HMAC secrets, which are never published.
        """
        return public_jwks(self.codec.keys.public())

    # -- the token endpoint --------------------------------------------------------------------

    def exchange(
        self,
        form: Mapping[str, Any],
        authenticate: Callable[[str, str], Account | None],
        *,
        throttle: FailureThrottle | None = None,
        request: RequestView | None = None,
    ) -> IssuedTokens | OAuthError:
        """Answer a token request: ``client_credentials``, ``refresh_token``, or ``password``
        (when ``tokens.password_grant`` is on: RFC 9700 §2.4 deprecates it).

        Clients registered in ``tokens.clients`` authenticate with ``Authorization: Basic``
        (``client_secret_basic``) or ``client_id`` / ``client_secret`` in the form
        (``client_secret_post``); a ``client_credentials`` token is issued to the client itself
        (its id is the subject and ``client_id``), with its scopes, and no refresh token.

        Args:
            form: The request's form fields (RFC 6749 §4.4.2 / §4.3.2 / §6).
            authenticate: ``authenticate(username, password)``: the :class:`Account` for valid
                credentials, else None (then ``invalid_grant``). Verify unknown users against
                ``secmw.auth.passwords.dummy_hash()`` so both cases take the same time.
            throttle: The failed-attempt throttle (``SecurityStack.throttle``): a client secret
                or a password is charged before it is checked and refunded when it was right; a
                throttled one is answered 429 ``temporarily_unavailable`` with ``Retry-After``.
            request: The request, for the client address and ``Authorization``; default:
                ``current_request()``.

        Returns:
            The tokens, or the RFC 6749 §5.2 error to send (``invalid_request``,
            ``invalid_client``: 401 with ``WWW-Authenticate: Basic`` when Basic was used, 400
            otherwise; ``invalid_grant``, ``invalid_scope``, ``unauthorized_client``,
            ``unsupported_grant_type``; 503 ``temporarily_unavailable`` when a store is down).
        """
        return endpoint.exchange(self, form, authenticate, throttle, request)

    async def aexchange(
        self,
        form: Mapping[str, Any],
        authenticate: Callable[[str, str], Any],
        *,
        throttle: AsyncFailureThrottle | None = None,
        request: RequestView | None = None,
    ) -> IssuedTokens | OAuthError:
        """Async twin of :meth:`exchange`; ``authenticate`` may be sync or async (run password
        hashing off the event loop, for example with ``asyncio.to_thread``)."""
        return await endpoint.aexchange(self, form, authenticate, throttle, request)

    # -- refreshing ---------------------------------------------------------------------------

    def refresh(self, refresh_token: str, scope: str | None = None) -> IssuedTokens | OAuthError:
        """Rotate a refresh token (RFC 6749 §6): new access and refresh tokens, the old one spent.

        ``scope`` may narrow the original grant, never widen it. A refresh token that was already
        used revokes its family: the thief's and the user's copies both stop working, refresh
        and access tokens alike. One the store does not know (expired, or dropped by the memory
        store's cap) is refused and revokes nothing.
        """
        grant = self.codec.read_refresh(refresh_token, scope)
        if isinstance(grant, OAuthError):
            return grant
        account, scopes, jti, family = grant.account, grant.scopes, grant.jti, grant.family
        try:
            if self.revocation.is_revoked(family_key(family)):
                return invalid_grant("refresh token revoked")
            previous = self.store.replace(_grant_key(jti), SPENT)
            if previous == SPENT:
                self.revocation.revoke(family_key(family), self._family_until())
                return self._reused(account)
            if previous is None:
                return invalid_grant("refresh token unknown or expired")
            new_jti, token = self.codec.refresh_token(account, scopes, family, self.refresh_ttl)
            self.store.put(_grant_key(new_jti), account.subject, self.refresh_ttl)
        except STORE_ERRORS:
            return temporarily_unavailable()
        return self._issued(account, scopes, family, token)

    async def arefresh(
        self, refresh_token: str, scope: str | None = None
    ) -> IssuedTokens | OAuthError:
        """Async twin of :meth:`refresh`."""
        grant = self.codec.read_refresh(refresh_token, scope)
        if isinstance(grant, OAuthError):
            return grant
        account, scopes, jti, family = grant.account, grant.scopes, grant.jti, grant.family
        try:
            if await self.revocation.ais_revoked(family_key(family)):
                return invalid_grant("refresh token revoked")
            previous = await self.store.areplace(_grant_key(jti), SPENT)
            if previous == SPENT:
                await self.revocation.arevoke(family_key(family), self._family_until())
                return self._reused(account)
            if previous is None:
                return invalid_grant("refresh token unknown or expired")
            new_jti, token = self.codec.refresh_token(account, scopes, family, self.refresh_ttl)
            await self.store.aput(_grant_key(new_jti), account.subject, self.refresh_ttl)
        except STORE_ERRORS:
            return temporarily_unavailable()
        return self._issued(account, scopes, family, token)

    # -- revoking -----------------------------------------------------------------------------

    def revoke(self, token: str) -> bool:
        """End the login a token belongs to (logout, RFC 9700 §4.14.2).

        An access token: its ``jti`` and its family (the refresh tokens of the same login, and
        every access token they minted). A refresh token: its whole family. An access token
        without a family (``issue(refresh=False)``, :meth:`access_token`) only by its ``jti``.

        Returns:
            False for a token this issuer did not sign or that has expired already.

        Raises:
            TokenStoreError: (or the store's own error) the revocation could not be written.
        """
        claims = self.codec.decode(token)
        if claims is None:
            return False
        for key, until in self._denylist_entries(claims):
            self.revocation.revoke(key, until)
        if claims.get(TOKEN_USE_CLAIM) == REFRESH:
            self.store.consume(_grant_key(claims["jti"]))
        self._revoked(claims)
        return True

    async def arevoke(self, token: str) -> bool:
        """Async twin of :meth:`revoke`."""
        claims = self.codec.decode(token)
        if claims is None:
            return False
        for key, until in self._denylist_entries(claims):
            await self.revocation.arevoke(key, until)
        if claims.get(TOKEN_USE_CLAIM) == REFRESH:
            await self.store.aconsume(_grant_key(claims["jti"]))
        self._revoked(claims)
        return True

    def revoke_all(self, subject: str, purpose: str = "password-reset") -> None:
        """Drop every outstanding single-use token of ``purpose`` for ``subject`` (call it when
        the password changes, so an earlier reset link stops working).

        Raises:
            TokenStoreError: the store is down.
        """
        self.store.discard_group(subject_group(purpose, subject))

    async def arevoke_all(self, subject: str, purpose: str = "password-reset") -> None:
        """Async twin of :meth:`revoke_all`."""
        await self.store.adiscard_group(subject_group(purpose, subject))

    # -- single-use tokens --------------------------------------------------------------------

    def password_reset_tokens(self) -> SingleUseTokens:
        """Single-use password-reset tokens in this issuer's store (``tokens.reset_ttl``)."""
        return SingleUseTokens(
            self.store, purpose="password-reset", ttl=self.settings.tokens.reset_ttl
        )

    def verification_tokens(self) -> SingleUseTokens:
        """Single-use email-verification tokens (``tokens.verification_ttl``)."""
        return SingleUseTokens(
            self.store, purpose="email-verification", ttl=self.settings.tokens.verification_ttl
        )

    # -- internals ----------------------------------------------------------------------------

    def _new_family(self, account: Account, scopes: frozenset[str]) -> tuple[str, str, str]:
        family = secrets.token_urlsafe(16)
        return family, *self.codec.refresh_token(account, scopes, family, self.refresh_ttl)

    def _issued(
        self, account: Account, scopes: frozenset[str], family: str, refresh_token: str
    ) -> IssuedTokens:
        access = self.codec.access_token(account, scopes, self.access_ttl, family)
        return IssuedTokens(access, self.access_ttl, scopes, refresh_token)

    def _family_until(self) -> float:
        # Past the last token the family could still mint: a refresh token issued now, or an
        # access token issued now when access tokens outlive refresh tokens.
        lifetime = max(self.refresh_ttl, self.access_ttl)
        return self._clock() + lifetime + self.codec.leeway + FAMILY_MARGIN

    def _denylist_entries(self, claims: Mapping[str, Any]) -> list[tuple[str, float]]:
        family = claims.get(FAMILY_CLAIM)
        entries = [] if claims.get(TOKEN_USE_CLAIM) == REFRESH else [(claims["jti"], claims["exp"])]
        if isinstance(family, str):
            entries.append((family_key(family), self._family_until()))
        return [(key, float(until)) for key, until in entries]

    def _revoked(self, claims: Mapping[str, Any]) -> None:
        audit.emit(
            "token.revoked", "token revoked", principal=str(claims[self.codec.subject_claim])
        )

    def _reused(self, account: Account) -> OAuthError:
        # RFC 6819 §5.2.2.3 / RFC 9700 §4.14.2: a spent refresh token came back; the family dies.
        audit.emit(
            "token.refresh_reused", "used refresh token presented", principal=account.subject
        )
        return invalid_grant("refresh token revoked")


def mint_access_token(
    settings: SecuritySettings | None,
    subject: str,
    *,
    scopes: Iterable[str] = (),
    roles: Iterable[str] = (),
    ttl: int | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """One access token signed with the configured key (``secmw token``, local testing)."""
    issuer = TokenIssuer(settings, store=MemorySingleUseStore(max_entries=1))  # no refresh
    account = Account.create(subject, scopes=scopes, roles=roles, claims=claims)
    return issuer.access_token(account, ttl=ttl)


__all__ = ["SPENT", "TokenIssuer", "family_key", "mint_access_token"]
