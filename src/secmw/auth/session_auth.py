"""The session scheme: authenticates a request by its session cookie, refuses cross-site unsafe
requests (see :mod:`secmw.auth.csrf`), and answers a stale cookie with a 401 that clears it.

The sessions themselves (ids, records, timeouts, the cookie's one reading) are
:mod:`secmw.auth.session`'s, which re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING

from secmw import audit
from secmw.auth.base import Credential
from secmw.auth.csrf import SAFE_METHODS, cross_site_reason, normalize_origins
from secmw.core.deny import Deny, quote_param
from secmw.core.principal import Principal
from secmw.core.request import RequestView

if TYPE_CHECKING:
    from secmw.auth.session import Sessions

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,128}\Z")
"""What a session id looks like (``secrets.token_urlsafe(32)`` gives 43 characters)."""
REPEATED_COOKIE = Deny(400, "session cookie sent more than once", "invalid_request")
TOO_MANY_COOKIES = Deny(431, "Cookie fields too large to read", "cookies_too_large")


def request_view(request: object) -> RequestView:
    """The request view the middleware built (kept in the scope or environ), else a new one."""
    if isinstance(request, RequestView):
        return request
    scope = getattr(request, "scope", None)
    if isinstance(scope, MutableMapping):
        return RequestView.from_scope(scope)
    environ = getattr(request, "environ", None)
    if isinstance(environ, MutableMapping):
        return RequestView.from_environ(environ)
    if isinstance(request, MutableMapping):
        if request.get("type") in ("http", "websocket"):
            return RequestView.from_scope(request)
        if "REQUEST_METHOD" in request:
            return RequestView.from_environ(request)
    raise TypeError(
        "session_id() takes the request (Starlette, Flask, an ASGI scope or a WSGI environ), "
        "not a cookie mapping: the framework's parser may read another session cookie"
    )


class SessionAuthenticator:
    """Authenticates a request by its session cookie; refuses cross-site unsafe requests.

    Args:
        sessions: The :class:`Sessions` that issued the cookies.
        trusted_origins: Other origins whose pages may send unsafe requests.
        realm: ``realm`` of the challenge.
    """

    scheme = "session"
    authorization_scheme = None
    blocking = True  # a sync store may do network I/O; the ASGI adapter uses averify
    throttle_first = False  # cheap to check, impossible to guess: count failures only

    def __init__(
        self, sessions: Sessions, *, trusted_origins: Iterable[str] = (), realm: str = "api"
    ) -> None:
        self.sessions = sessions
        self.trusted_origins = normalize_origins(trusted_origins, "session.trusted_origins")
        self.realm = realm

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The session id from the cookie; a cross-site unsafe request is a 403."""
        value = self.sessions.read_cookie(request)
        if value is None or isinstance(value, Deny):
            return value
        if request.method not in SAFE_METHODS:  # "WEBSOCKET" included: CSWSH
            reason = cross_site_reason(request, self.trusted_origins)
            if reason is not None:
                return Deny(403, reason, "cross_site")
        if not SESSION_ID.match(value):
            return self._expired("session cookie malformed")
        return Credential(self.scheme, value)

    def verify(self, credential: Credential) -> Principal | Deny:
        """The session's principal; an unknown or timed-out session is a 401 clearing the cookie."""
        try:
            record = self.sessions.load(credential.secret)
        except Exception as exc:  # store down: refuse, do not fall back to anonymous
            return self._unavailable(exc)
        return record.principal() if record else self._expired("session expired or unknown")

    async def averify(self, credential: Credential) -> Principal | Deny:
        """Async twin of :meth:`verify`."""
        try:
            record = await self.sessions.aload(credential.secret)
        except Exception as exc:  # store down: refuse, do not fall back to anonymous
            return self._unavailable(exc)
        return record.principal() if record else self._expired("session expired or unknown")

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """A non-standard ``Session`` challenge naming the cookie (browsers show no dialog)."""
        cookie = quote_param(self.sessions.cookie_name)
        return f"Session realm={quote_param(self.realm)}, cookie={cookie}"

    def _expired(self, detail: str) -> Deny:
        # Clearing the cookie lets the browser continue anonymously on the next request.
        return Deny(
            401,
            detail,
            "invalid_session",
            (("www-authenticate", self.challenge()), ("set-cookie", self.sessions.clear_cookie())),
        )

    def _unavailable(self, exc: Exception) -> Deny:
        audit.emit("session.store_unavailable", type(exc).__name__)
        return Deny(
            503, "session store unavailable", "temporarily_unavailable", (("retry-after", "5"),)
        )


def after_failure(refusal: Deny | None, failure: Deny) -> Deny:
    """The answer to a failed authentication that the failure throttle may replace.

    ``failure`` (a 401) when the throttle let it stand (``refusal`` None), else ``refusal`` (its
    429, or 503) carrying the ``Set-Cookie`` fields of the 401: without them a browser keeps
    sending a stale session cookie, each attempt counts as another failure, and every client
    behind its address stays throttled. Shared by the ASGI and WSGI authentication drivers.
    """
    if refusal is None:
        return failure
    clearing = tuple(pair for pair in failure.headers if pair[0] == "set-cookie")
    return refusal.with_headers(*clearing) if clearing else refusal


__all__ = [
    "REPEATED_COOKIE",
    "SESSION_ID",
    "TOO_MANY_COOKIES",
    "SessionAuthenticator",
    "after_failure",
    "request_view",
]
