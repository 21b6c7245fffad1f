"""The authenticator protocol and the chain that picks one per request.

Authentication is split in two steps so that the failed-authentication throttle and the ASGI
adapter can sit between them:

1. ``extract`` (cheap, pure): find this scheme's credential in the request. None when absent; a
   :class:`Deny` when present but malformed (empty, repeated, undecodable): a malformed credential
   is never treated as absent.
2. ``verify`` (may be costly: a signature or a password hash): turn the credential into a
   :class:`Principal` or a :class:`Deny`. ``blocking`` authenticators are run in a worker thread
   by the ASGI adapter so that they never stall the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from secmw.auth.scopes import ScopeRules
from secmw.core.deny import Deny
from secmw.core.paths import PathSet
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView

MAX_AUTHORIZATION_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential found in a request. ``secret`` is excluded from ``repr``: it is never logged."""

    scheme: str
    secret: str = field(repr=False)
    username: str | None = None


@runtime_checkable
class Authenticator(Protocol):
    """One authentication scheme.

    Attributes:
        scheme: Name written to ``Principal.scheme`` (``"bearer"``, ``"basic"``, ``"apikey"``).
        authorization_scheme: The ``Authorization`` scheme it owns, lower-case, or None when the
            credential travels elsewhere (an API-key header, a cookie).
        blocking: ``verify`` is CPU-heavy; the ASGI adapter runs it in a thread.

    An authenticator may also set ``throttle_first = False`` when its check is cheap and its
    secrets cannot be guessed (signed tokens, 256-bit keys, session ids): the failed-attempt
    throttle is then charged only after a failure, not on every request (guesses in flight
    cannot win against such secrets, and valid traffic costs no storage call). Without it every
    attempt is charged before ``verify`` and refunded unless it fails (passwords, remote
    introspection).

    An authenticator with network I/O may offer ``async def averify(credential)``, which the
    ASGI adapter awaits instead of calling ``verify``; it may also say ``needs_io = False`` when,
    as configured, it has none after all (the adapter then calls ``verify``, with no coroutine).
    """

    @property
    def scheme(self) -> str: ...

    @property
    def authorization_scheme(self) -> str | None: ...

    @property
    def blocking(self) -> bool: ...

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """This scheme's credential, None when absent, Deny when present but malformed.

        ``authorization`` is the parameter of an ``Authorization`` header whose scheme is this
        authenticator's (already split off and checked by the chain), else None.
        """

    def verify(self, credential: Credential) -> Principal | Deny:
        """The principal for a credential, or the reason it is refused."""

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """The ``WWW-Authenticate`` challenge for this scheme (RFC 7235)."""


class ChargedAttempt(Protocol):
    """An attempt a :class:`FailureThrottle` let through (sync)."""

    def refund(self) -> None:
        """The attempt did not fail: give its budget back."""


class AsyncChargedAttempt(Protocol):
    """The async twin of :class:`ChargedAttempt`."""

    async def refund(self) -> None:
        """The attempt did not fail: give its budget back."""


class FailureThrottle(Protocol):
    """Throttles failed authentication (sync).

    Each attempt is charged *before* it is checked, in one atomic step that also tests the
    budget, and refunded unless it fails: a throttle told of failures only afterwards lets every
    guess already in flight be checked.
    """

    def charge(self, request: RequestView, credential: Credential) -> Deny | ChargedAttempt:
        """A 429 Deny when this client (or user name) has no attempts left, else the attempt."""


class AsyncFailureThrottle(Protocol):
    """The async twin of :class:`FailureThrottle`, for the ASGI adapter."""

    async def charge(
        self, request: RequestView, credential: Credential
    ) -> Deny | AsyncChargedAttempt:
        """A 429 Deny when this client (or user name) has no attempts left, else the attempt."""


def bearer_credential(
    authorization: str | None,
    *,
    scheme: str,
    max_bytes: int,
    deny: Callable[[int, str, str], Deny],
) -> Credential | Deny | None:
    """The token of an ``Authorization: Bearer`` parameter (RFC 6750 §2.1), shared by every
    bearer authenticator: None when absent, 400 when empty or not a single token, 401 when
    longer than ``max_bytes``. ``deny(status, detail, code)`` builds the scheme's refusal."""
    if authorization is None:
        return None
    if not authorization:
        return deny(400, "bearer token missing", "invalid_request")
    if " " in authorization or "\t" in authorization:
        return deny(400, "bearer credentials must be a single token", "invalid_request")
    if len(authorization) > max_bytes:
        return deny(401, "token too large", "invalid_token")
    return Credential(scheme, authorization)


class Found:
    """The chain found a credential; ``authenticator.verify(credential)`` decides."""

    __slots__ = ("authenticator", "credential")

    def __init__(self, authenticator: Authenticator, credential: Credential) -> None:
        self.authenticator = authenticator
        self.credential = credential

    def __repr__(self) -> str:
        return f"Found({self.authenticator!r}, {self.credential!r})"


class AuthChain:
    """Authenticators tried in order; the first credential found decides.

    - No credential at all: the anonymous principal, or 401 with one challenge per scheme when the
      path requires authentication.
    - A credential that is present but malformed or invalid: 400/401 at once, never anonymous.
    - An ``Authorization`` header whose scheme no authenticator owns: 401 (closed by default).
    - A CORS preflight is anonymous (unless ``preflight_anonymous`` is off), so the app's CORS
      middleware answers it wherever it sits.
    - On the token endpoint (``token_endpoint``, routed paths) the ``Authorization`` field is an
      OAuth client's credential (RFC 6749 §2.3.1), not a user's: the chain leaves it to the
      endpoint, which authenticates the client, and reads only the other schemes there; a path
      of ``required`` does not make it ask for a user's credential.
    """

    def __init__(
        self,
        authenticators: Sequence[Authenticator],
        *,
        required: PathSet | None = None,
        public: PathSet | None = None,
        preflight_anonymous: bool = True,
        token_endpoint: PathSet | None = None,
        scopes: ScopeRules | None = None,
    ) -> None:
        self.authenticators = tuple(authenticators)
        self.scopes = scopes if scopes else None
        self.bearer_realm = self._find_bearer_realm(self.authenticators)
        """The realm of the bearer scheme (for insufficient_scope challenges), or None."""
        self.token_endpoint = token_endpoint or PathSet(())
        self._by_authorization = {
            a.authorization_scheme: a for a in self.authenticators if a.authorization_scheme
        }
        self.required = required or PathSet(())
        self.public = public or PathSet(())
        self.preflight_anonymous = preflight_anonymous
        self.challenges = tuple(a.challenge() for a in self.authenticators)
        # The first scheme decides whenever its credential is present; when it owns the
        # Authorization header and can answer from a verified-token cache, a cached token is
        # answered from the raw field (same principal, see ``cached_principal``).
        first = self.authenticators[0] if self.authenticators else None
        self._cached: Any = (
            getattr(first, "cached", None) if first in self._by_authorization.values() else None
        )
        self._cached_prefix = (
            f"{first.authorization_scheme} ".encode("latin-1")
            if first is not None and self._cached is not None
            else b""
        )
        self._cached_max = getattr(first, "max_token_bytes", 0) + len(self._cached_prefix)

    @staticmethod
    def _find_bearer_realm(authenticators: Sequence[Authenticator]) -> str | None:
        for authenticator in authenticators:
            if authenticator.authorization_scheme == "bearer":
                return str(getattr(authenticator, "realm", "api"))
        return None

    def authorize(self, request: RequestView, principal: Principal) -> Deny | None:
        """The ``auth.scopes`` rule of the request, applied to ``principal``: None to go on,
        401 with the challenges for the anonymous principal, 403 ``insufficient_scope`` for one
        lacking a scope. A path of ``public``, the token endpoint and a CORS preflight
        (anonymous by ``preflight_anonymous``) go on."""
        if self.scopes is None:
            return None
        if self.preflight_anonymous and request.method == "OPTIONS" and request.is_cors_preflight:
            return None
        path = request.normalized_path
        if path in self.public or path in self.token_endpoint:
            return None
        refused = self.scopes.refusal(request.method, path, principal, self.bearer_realm)
        if isinstance(refused, tuple):
            return self.deny(401, "authentication required", "authentication_required")
        return refused

    def challenge_headers(self) -> tuple[tuple[str, str], ...]:
        """One ``WWW-Authenticate`` field per configured scheme."""
        return tuple(("www-authenticate", c) for c in self.challenges)

    def deny(self, status: int, detail: str, code: str) -> Deny:
        """A denial carrying every configured challenge."""
        return Deny(status, detail, code, self.challenge_headers())

    def find(self, request: RequestView) -> Found | Principal | Deny:
        """Locate the request's credential: Found, the anonymous principal, or a Deny."""
        if self.preflight_anonymous and request.method == "OPTIONS" and request.is_cors_preflight:
            return ANONYMOUS  # browsers never send credentials on a preflight
        principal = self.cached_principal(request)
        if principal is not None:
            return principal
        path = request.normalized_path
        at_token_endpoint = path in self.token_endpoint
        # There the field is the OAuth client's credential, which the endpoint checks.
        authorization = None if at_token_endpoint else self._authorization(request)
        if isinstance(authorization, Deny):
            return authorization
        owner, param = None, None
        if authorization is not None:
            scheme, param = authorization
            owner = self._by_authorization.get(scheme)
            if owner is None:
                return self.deny(401, "unsupported authorization scheme", "invalid_credentials")
        for authenticator in self.authenticators:
            result = authenticator.extract(request, param if authenticator is owner else None)
            if result is None:
                continue
            if isinstance(result, Credential):
                return Found(authenticator, result)
            return result
        # The token endpoint authenticates its clients itself: never "authentication required".
        if path in self.required and path not in self.public and not at_token_endpoint:
            return self.deny(401, "authentication required", "authentication_required")
        return ANONYMOUS

    def authenticate(self, request: RequestView) -> Principal | Deny:
        """``find`` then ``verify``, synchronously."""
        found = self.find(request)
        if isinstance(found, Found):
            return found.authenticator.verify(found.credential)
        return found

    def cached_principal(self, request: RequestView) -> Principal | None:
        """The principal of a token the first scheme's cache answers for, read from the raw
        ``Authorization`` field (one field, ``<scheme> <token>``) without decoding it or building
        a credential; None, and ``find`` decides the long way, for anything else.

        The answer is the one the long way gives: only a token found and verified that way is
        cached, such a token is a single run of printable ASCII, and its octets as received have
        the digest of its text; a field with other octets (repeated, padded, too long) misses."""
        if self._cached is None:  # the first scheme has no such cache
            return None
        if request.normalized_path in self.token_endpoint:
            return None  # there the field is the OAuth client's: see ``find``
        value = request.single_raw(b"authorization")
        prefix = self._cached_prefix
        if value is None or len(value) > self._cached_max or value[: len(prefix)].lower() != prefix:
            return None
        principal: Principal | None = self._cached(value[len(prefix) :])
        return principal

    def _authorization(self, request: RequestView) -> tuple[str, str] | Deny | None:
        lines = request.header_values("authorization")
        if not lines:
            return None
        # WSGI servers join repeated fields with a comma before secmw sees them, so two fields
        # and one field holding a comma cannot be told apart there: both are refused, on both
        # sides. The schemes verified here (Bearer, Basic: token68, RFC 9110 §11.4) never hold
        # a comma, so no valid credential is lost.
        if len(lines) > 1 or "," in lines[0]:
            return self.deny(400, "more than one Authorization header", "invalid_request")
        # Leading and trailing SP / HTAB are not part of a field value (RFC 9110 §5.5, §5.6.3);
        # ASGI servers strip them, some WSGI servers keep them.
        value = lines[0].strip(" \t")
        if len(value) > MAX_AUTHORIZATION_BYTES:
            return self.deny(400, "Authorization header too large", "invalid_request")
        if not value.isascii() or not value.isprintable():
            return self.deny(400, "malformed Authorization header", "invalid_request")
        scheme, _, param = value.strip().partition(" ")
        return scheme.lower(), param.strip()
