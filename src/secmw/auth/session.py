"""Server-side sessions: an opaque id in a cookie, the principal in a session store.

- The id is 256 random bits (``secrets.token_urlsafe(32)``); the store is keyed by its SHA-256,
  so a dump of the store holds no usable session id.
- The cookie is ``__Host-session`` by default: ``Secure``, ``HttpOnly``, ``SameSite=Lax``,
  ``Path=/`` and no ``Domain``, which the ``__Host-`` prefix makes browsers enforce (RFC 6265bis
  §4.1.3.2), so a sibling subdomain cannot plant its own session cookie.
- A session ends after ``idle_timeout`` seconds without a request or ``absolute_timeout`` seconds
  after login, whichever comes first (OWASP Session Management). ``rotate`` issues a new id for
  the same session on a privilege change (login, role change), the defence against session
  fixation; ``destroy`` ends it.
- A cookie is sent by the browser on cross-site requests too, so cookie-authenticated unsafe
  requests (POST, PUT, PATCH, DELETE... and websocket handshakes) must come from this site:
  ``Sec-Fetch-Site: same-origin`` (or ``none``), else an ``Origin`` whose host is the request's
  ``Host`` or one of ``trusted_origins``. A request with neither header is refused (closed by
  default; every current browser sends ``Origin`` on unsafe requests).
- The cookie is read one way, by :meth:`Sessions.read_cookie`, for the middleware and for the
  app's logout (:meth:`Sessions.session_id`): sent twice it is a 400, in ``Cookie`` fields too
  large to read a 431, so the app can never act on a session the middleware did not check.

Stores: :class:`secmw.stores.sessions.MemorySessionStore` (one process, bounded) and
:class:`secmw.stores.sessions.RedisSessionStore` (shared; each entry's TTL is the session's
remaining life).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import Field, field_validator

from secmw import audit
from secmw.auth.session_auth import (
    REPEATED_COOKIE,
    SESSION_ID,
    TOO_MANY_COOKIES,
    SessionAuthenticator,
    after_failure,
    request_view,
)
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.core.section import Section, StrList
from secmw.errors import ConfigurationError
from secmw.stores.redis import client_pair
from secmw.stores.sessions import (
    AsyncSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
)


class SessionSettings(Section):
    """Cookie sessions (``session.*``). Enabled by ``"session"`` in ``auth.order``."""

    cookie_name: str = Field("__Host-session", min_length=1, description="Session cookie name.")
    secure: bool = Field(True, description="Send the cookie over https only.")
    same_site: Literal["lax", "strict", "none"] = Field("lax", description="SameSite attribute.")
    idle_timeout: float = Field(
        1800, ge=60, le=30 * 86400, description="Seconds without a request that end a session."
    )
    absolute_timeout: float = Field(
        43200, ge=60, le=365 * 86400, description="Seconds after login that end a session."
    )
    max_sessions: int = Field(
        100_000, ge=1, description="Memory store cap (oldest idle sessions dropped first)."
    )
    redis_url: str | None = Field(
        None, description="Redis URL of a shared session store (Cluster, Sentinel, Valkey too)."
    )
    redis_timeout: float = Field(0.5, gt=0, le=10, description="Seconds per Redis call.")
    key_prefix: str = Field("secmw:session:", description="Redis key prefix.")
    trusted_origins: StrList = Field(
        default_factory=list,
        description="Other origins allowed to send unsafe requests (`https://app.example`).",
    )

    @field_validator("cookie_name")
    @classmethod
    def _token_name(cls, value: str) -> str:
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", value):  # RFC 9110 token
            raise ValueError("not a valid cookie name")
        return value


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a session holds: the principal's parts, app data, and its two clocks."""

    subject: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    name: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    created: float = 0.0
    seen: float = 0.0

    def principal(self) -> Principal:
        """The principal this session authenticates."""
        return Principal(self.subject, "session", self.scopes, self.roles, self.data, self.name)

    def dumps(self) -> bytes:
        """JSON for the store."""
        doc = {
            "sub": self.subject,
            "scopes": sorted(self.scopes),
            "roles": sorted(self.roles),
            "name": self.name,
            "data": dict(self.data),
            "created": self.created,
            "seen": self.seen,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> SessionRecord | None:
        """The record stored as JSON, None when it is not one."""
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["sub"]),
                frozenset(doc["scopes"]),
                frozenset(doc["roles"]),
                doc["name"],
                dict(doc["data"]),
                float(doc["created"]),
                float(doc["seen"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session id and the ``Set-Cookie`` value that hands it to the browser."""

    id: str = field(repr=False)
    set_cookie: str = field(repr=False)


def _store_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Create, load, rotate and destroy sessions; sync methods and ``a``-prefixed async twins.

    Args:
        store: A session store (sync methods for WSGI, async ones for ASGI).
        cookie_name: The cookie (``__Host-`` names require ``secure``).
        secure: Add ``Secure`` to the cookie.
        same_site: ``lax``, ``strict`` or ``none`` (``none`` requires ``secure``).
        idle_timeout: Seconds without a request that end a session.
        absolute_timeout: Seconds after creation that end a session.
        clock: UNIX time source (injected in tests).
    """

    def __init__(
        self,
        store: SessionStore | AsyncSessionStore,
        *,
        cookie_name: str = "__Host-session",
        secure: bool = True,
        same_site: str = "lax",
        idle_timeout: float = 1800.0,
        absolute_timeout: float = 43200.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cookie_name.startswith(("__Host-", "__Secure-")) and not secure:
            raise ConfigurationError(
                "session.secure: the __Host- and __Secure- cookie prefixes need Secure"
            )
        if same_site == "none" and not secure:
            raise ConfigurationError("session.same_site: SameSite=None needs Secure")
        self.store: Any = store
        self.cookie_name = cookie_name
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        # Writing on every request would cost a store round trip each; the idle clock is
        # therefore precise to this interval.
        self.touch_interval = min(60.0, idle_timeout / 10)
        self._clock = clock
        attributes = ["Path=/", "HttpOnly", f"SameSite={same_site.capitalize()}"]
        if secure:
            attributes.insert(1, "Secure")
        self._attributes = "; ".join(attributes)

    @classmethod
    def from_settings(cls, settings: SessionSettings) -> Sessions:
        """Sessions as the settings describe them (Redis when ``redis_url`` is set)."""
        store: SessionStore | AsyncSessionStore
        if settings.redis_url:
            store = RedisSessionStore(
                *client_pair(settings.redis_url, settings.redis_timeout, "session.redis_url"),
                prefix=settings.key_prefix,
            )
        else:
            store = MemorySessionStore(settings.max_sessions)
        return cls(
            store,
            cookie_name=settings.cookie_name,
            secure=settings.secure,
            same_site=settings.same_site,
            idle_timeout=settings.idle_timeout,
            absolute_timeout=settings.absolute_timeout,
        )

    # -- cookies -------------------------------------------------------------------------------

    def set_cookie(self, session_id: str) -> str:
        """The ``Set-Cookie`` value carrying ``session_id`` (expires with the absolute timeout)."""
        max_age = int(self.absolute_timeout)
        return f"{self.cookie_name}={session_id}; {self._attributes}; Max-Age={max_age}"

    def clear_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the cookie from the browser."""
        return f"{self.cookie_name}=; {self._attributes}; Max-Age=0"

    def read_cookie(self, request: RequestView) -> str | Deny | None:
        """The session cookie's value as secmw reads it, the one reading shared by the middleware
        and :meth:`session_id`: None when absent; a 400 when the name is sent more than once (an
        app's parser may pick another of the values than secmw does); a 431 when the ``Cookie``
        fields are too large to read (the cookie may be among them)."""
        cookies = request.cookies
        if not cookies.complete:
            return TOO_MANY_COOKIES
        if self.cookie_name in cookies.repeated:
            return REPEATED_COOKIE
        return cookies.get(self.cookie_name)

    def session_id(self, request: object) -> str | None:
        """The session id of a request, read as the middleware read it, if well-formed.

        Args:
            request: A Starlette or Quart request (``.scope``), a Flask or werkzeug request
                (``.environ``), an ASGI scope, a WSGI environ or a :class:`RequestView`. Not
                the framework's cookie mapping: its parser may pick another value of a
                repeated cookie than the one the middleware authenticated.

        Returns:
            The id, or None when the request carries no single well-formed session cookie.
        """
        value = self.read_cookie(request_view(request))
        return value if isinstance(value, str) and SESSION_ID.match(value) else None

    # -- the record's life ---------------------------------------------------------------------

    def _new(self, principal: Principal, data: Mapping[str, Any] | None) -> SessionRecord:
        now = self._clock()
        return SessionRecord(
            principal.id, principal.scopes, principal.roles, principal.name, dict(data or {}),
            now, now,
        )  # fmt: skip

    def _ttl(self, record: SessionRecord, now: float) -> float:
        return min(self.idle_timeout, record.created + self.absolute_timeout - now)

    def _judge(self, raw: bytes | None) -> tuple[SessionRecord | None, str]:
        """The live record and what to do with the stored copy: ``keep``, ``touch``, ``delete``."""
        if raw is None:
            return None, "keep"
        record = SessionRecord.loads(raw)
        now = self._clock()
        if (
            record is None
            or now - record.created >= self.absolute_timeout
            or now - record.seen >= self.idle_timeout
        ):
            return None, "delete"
        if now - record.seen >= self.touch_interval:
            return replace(record, seen=now), "touch"
        return record, "keep"

    # -- sync ----------------------------------------------------------------------------------

    def create(self, principal: Principal, data: Mapping[str, Any] | None = None) -> IssuedSession:
        """Start a session for ``principal`` (call it after a successful login)."""
        record = self._new(principal, data)
        session_id = secrets.token_urlsafe(32)
        self.store.set(_store_key(session_id), record.dumps(), self._ttl(record, record.seen))
        return IssuedSession(session_id, self.set_cookie(session_id))

    def load(self, session_id: str) -> SessionRecord | None:
        """The live session, None when unknown or timed out (a timed-out one is deleted)."""
        key = _store_key(session_id)
        record, action = self._judge(self.store.get(key))
        if action == "delete":
            self.store.delete(key)
        elif action == "touch" and record is not None:
            self.store.set(key, record.dumps(), self._ttl(record, record.seen))
        return record

    def rotate(self, session_id: str, principal: Principal | None = None) -> IssuedSession | None:
        """A new id for the same session (optionally a new principal); the old id stops working.

        The absolute timeout still counts from the original login. None when the session is gone.
        """
        record = self.load(session_id)
        if record is None:
            return None
        record = self._rotated(record, principal)
        new_id = secrets.token_urlsafe(32)
        self.store.set(_store_key(new_id), record.dumps(), self._ttl(record, record.seen))
        self.store.delete(_store_key(session_id))
        audit.emit(
            "session.rotated", "session id renewed", principal=record.subject, level=logging.INFO
        )
        return IssuedSession(new_id, self.set_cookie(new_id))

    def destroy(self, session_id: str) -> str:
        """End the session (logout); returns the ``Set-Cookie`` value that clears the cookie."""
        self.store.delete(_store_key(session_id))
        return self.clear_cookie()

    # -- async ---------------------------------------------------------------------------------

    async def acreate(
        self, principal: Principal, data: Mapping[str, Any] | None = None
    ) -> IssuedSession:
        """Async twin of :meth:`create`."""
        record = self._new(principal, data)
        session_id = secrets.token_urlsafe(32)
        await self.store.aset(
            _store_key(session_id), record.dumps(), self._ttl(record, record.seen)
        )
        return IssuedSession(session_id, self.set_cookie(session_id))

    async def aload(self, session_id: str) -> SessionRecord | None:
        """Async twin of :meth:`load`."""
        key = _store_key(session_id)
        record, action = self._judge(await self.store.aget(key))
        if action == "delete":
            await self.store.adelete(key)
        elif action == "touch" and record is not None:
            await self.store.aset(key, record.dumps(), self._ttl(record, record.seen))
        return record

    async def arotate(
        self, session_id: str, principal: Principal | None = None
    ) -> IssuedSession | None:
        """Async twin of :meth:`rotate`."""
        record = await self.aload(session_id)
        if record is None:
            return None
        record = self._rotated(record, principal)
        new_id = secrets.token_urlsafe(32)
        await self.store.aset(_store_key(new_id), record.dumps(), self._ttl(record, record.seen))
        await self.store.adelete(_store_key(session_id))
        audit.emit(
            "session.rotated", "session id renewed", principal=record.subject, level=logging.INFO
        )
        return IssuedSession(new_id, self.set_cookie(new_id))

    async def adestroy(self, session_id: str) -> str:
        """Async twin of :meth:`destroy`."""
        await self.store.adelete(_store_key(session_id))
        return self.clear_cookie()

    def _rotated(self, record: SessionRecord, principal: Principal | None) -> SessionRecord:
        now = self._clock()
        if principal is None:
            return replace(record, seen=now)
        return replace(
            record,
            subject=principal.id,
            scopes=principal.scopes,
            roles=principal.roles,
            name=principal.name,
            seen=now,
        )


__all__ = [
    "REPEATED_COOKIE",
    "TOO_MANY_COOKIES",
    "IssuedSession",
    "SessionAuthenticator",
    "SessionRecord",
    "SessionSettings",
    "Sessions",
    "after_failure",
]
