"""TOTP step-up (RFC 6238): a second factor on the routes and principals that need one.

A request needs a code when its path matches ``paths`` (and its method ``methods``, when given)
or when its principal holds one of ``scopes``. It must then carry a valid ``X-TOTP-Code`` for the
principal's secret, which the app looks up (``secret_for(principal)``). The check runs after
authentication, in ``StepUpMiddleware`` (``secmw.asgi`` and ``secmw.wsgi``).

- Codes from ``window`` time steps before and after the current one are accepted (clock drift,
  RFC 6238 §5.2), and compared in constant time.
- A code is accepted once: after a success only codes of later time steps pass for that principal
  (RFC 6238 §5.2, "MUST NOT accept the second attempt"). The last used step lives in memory or,
  across processes, in Redis (an atomic compare-and-set script).
- Wrong codes are throttled by default (``failures`` per principal and per client address): each
  attempt is charged before its check and refunded unless the code was wrong, so six digits do
  not fall to guessing, however many requests run at once (``secmw.auth.stepup``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import Field

from secmw.core.deny import Deny, quote_param
from secmw.core.paths import PathSet
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.core.section import Section, StrList
from secmw.ratelimit.settings import LimitString
from secmw.stores.redis import client_pair

if TYPE_CHECKING:
    import redis
    import redis.asyncio

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class TOTPSettings(Section):
    """TOTP step-up (``totp.*``). Active when ``paths`` or ``scopes`` are set."""

    paths: StrList = Field(default_factory=list, description="Path patterns needing a code.")
    methods: StrList = Field(
        default_factory=list, description="Restrict `paths` to these methods (empty: all)."
    )
    scopes: StrList = Field(
        default_factory=list, description="Principals holding any of these need a code."
    )
    header: str = Field("X-TOTP-Code", min_length=1, description="Header carrying the code.")
    digits: int = Field(6, ge=6, le=8, description="Code length.")
    interval: int = Field(30, ge=15, le=120, description="Seconds per time step.")
    window: int = Field(1, ge=0, le=3, description="Steps of clock drift tolerated each way.")
    digest: Literal["sha1", "sha256", "sha512"] = Field("sha1", description="HMAC hash.")
    redis_url: str | None = Field(
        None, description="Redis URL for replay protection (Cluster, Sentinel, Valkey too)."
    )
    redis_timeout: float = Field(0.5, gt=0, le=10, description="Seconds per Redis call.")
    max_entries: int = Field(100_000, ge=1, description="Memory replay store cap.")
    throttle: bool = Field(
        True,
        description="Throttle wrong codes (per principal and per client address); turn off only"
        " when the app passes a throttle of its own.",
    )
    failures: LimitString = Field(
        "5/minute;30/hour", description="Wrong codes allowed per principal and per client address."
    )


class StepUp:
    """Which requests need a second factor, and whether a code is right (no I/O).

    Args:
        paths: Path patterns that need a code.
        methods: Methods of ``paths`` that need it (empty: every method).
        scopes: Principals holding any of these need a code on every request.
        header: Header carrying the code.
        digits: Code length.
        interval: Seconds per time step.
        window: Steps of drift accepted each way.
        digest: ``sha1`` (what authenticator apps use), ``sha256`` or ``sha512``.
        realm: ``realm`` of the challenge.
        clock: UNIX time source (injected in tests).
    """

    def __init__(
        self,
        *,
        paths: Iterable[str] = (),
        methods: Iterable[str] = (),
        scopes: Iterable[str] = (),
        header: str = "X-TOTP-Code",
        digits: int = 6,
        interval: int = 30,
        window: int = 1,
        digest: str = "sha1",
        realm: str = "api",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.paths = PathSet(paths, setting="totp.paths")
        self.methods = frozenset(m.upper() for m in methods)
        self.scopes = frozenset(scopes)
        self.header = header
        self.digits, self.interval, self.window = digits, interval, window
        self._digest = _DIGESTS[digest]
        self._code = re.compile(rf"[0-9]{{{digits}}}\Z")
        self.realm = realm
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: TOTPSettings, realm: str = "api") -> StepUp:
        """The policy the settings describe."""
        return cls(
            paths=settings.paths,
            methods=settings.methods,
            scopes=settings.scopes,
            header=settings.header,
            digits=settings.digits,
            interval=settings.interval,
            window=settings.window,
            digest=settings.digest,
            realm=realm,
        )

    @property
    def replay_ttl(self) -> int:
        """Seconds a used step must be remembered: until no code of it can match any more."""
        return (2 * self.window + 2) * self.interval

    def needed(self, request: RequestView, principal: Principal) -> bool:
        """True when this request must carry a code."""
        if self.scopes & principal.scopes:
            return True
        if request.normalized_path not in self.paths:
            return False
        return not self.methods or request.method in self.methods

    def code(self, request: RequestView) -> str | None:
        """The code sent (stripped), None when absent; a repeated header yields ``""``."""
        values = request.headers.getlist(self.header)
        if not values:
            return None
        if len(values) > 1:
            return ""  # never a valid code, and counted as a failure
        return values[0].strip()

    def match(self, secret: str, code: str) -> int | None:
        """The time step whose code ``code`` is, within the drift window; None when none is.

        Raises:
            ValueError: ``secret`` is not base32, or shorter than pyotp accepts; the message says
                which (and never holds the secret).
        """
        if not self._code.match(code):
            return None
        import pyotp  # imported here: the settings (and so every app) import this module

        _check_secret(secret)
        totp = pyotp.TOTP(secret, digits=self.digits, digest=self._digest, interval=self.interval)
        now = int(self._clock() // self.interval)
        found = None
        for step in range(now - self.window, now + self.window + 1):
            # Every candidate is computed and compared: the time taken does not depend on which
            # step (if any) matched.
            if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
                found = step
        return found

    def challenge(self) -> str:
        """A non-standard ``TOTP`` challenge naming the header."""
        return f"TOTP realm={quote_param(self.realm)}, header={quote_param(self.header)}"

    def deny(self, status: int, detail: str, code: str) -> Deny:
        """A refusal carrying the challenge on 401."""
        headers = (("www-authenticate", self.challenge()),) if status == 401 else ()
        return Deny(status, detail, code, headers)


def _check_secret(secret: str) -> None:
    """Raise ValueError naming what is wrong with a stored secret, as pyotp would refuse it."""
    try:
        decoded = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    except binascii.Error:
        raise ValueError("stored secret is not base32") from None
    if len(decoded) * 8 < _MIN_SECRET_BITS:
        raise ValueError(
            f"stored secret is {len(decoded) * 8} bits, shorter than the {_MIN_SECRET_BITS}"
            " bits pyotp accepts (RFC 4226 §4 asks for 128, recommends 160)"
        )


_MIN_SECRET_BITS = 112  # pyotp's minimum (NIST SP 800-63B)


# -- replay protection -----------------------------------------------------------------------


class ReplayStore(Protocol):
    """Remembers the last time step used per principal (sync)."""

    def use(self, subject: str, step: int, ttl: int) -> bool:
        """Record ``step`` for ``subject``; False when it is not later than the last one used."""


class AsyncReplayStore(Protocol):
    """Async twin of :class:`ReplayStore`."""

    async def ause(self, subject: str, step: int, ttl: int) -> bool:
        """Record ``step`` for ``subject``; False when it is not later than the last one used."""


class MemoryReplayStore:
    """Per-process replay protection with a cap (least recently used principals dropped).

    Dropping a principal's entry early would re-admit its last code: size ``max_entries`` above
    the number of principals stepping up within ``replay_ttl``; use Redis across processes.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def use(self, subject: str, step: int, ttl: int) -> bool:
        """Record ``step``; False on replay."""
        now = self._clock()
        with self._lock:
            entry = self._last.get(subject)
            if entry is not None and entry[0] > now and entry[1] >= step:
                return False
            self._last[subject] = (now + ttl, step)
            self._last.move_to_end(subject)
            while len(self._last) > self.max_entries:
                self._last.popitem(last=False)
            return True

    async def ause(self, subject: str, step: int, ttl: int) -> bool:
        """Async twin of :meth:`use` (no I/O)."""
        return self.use(subject, step, ttl)


# One round trip, atomic: concurrent requests with the same code cannot both pass.
_USE_STEP = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisReplayStore:
    """Replay protection in Redis: ``prefix + sha256(subject)`` holds the last step used."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        *,
        prefix: str = "secmw:totp:",
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("RedisReplayStore needs a sync or an async Redis client")
        self._script = client.register_script(_USE_STEP) if client is not None else None
        self._ascript = (
            async_client.register_script(_USE_STEP) if async_client is not None else None
        )
        self.prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.5, prefix: str = "secmw:totp:"
    ) -> RedisReplayStore:
        """Both clients for ``url``, with ``timeout`` on connect and on every call."""
        return cls(*client_pair(url, timeout), prefix=prefix)

    def _key(self, subject: str) -> str:
        return self.prefix + hashlib.sha256(subject.encode()).hexdigest()

    def use(self, subject: str, step: int, ttl: int) -> bool:
        """Record ``step``; False on replay."""
        if self._script is None:
            raise RuntimeError("no synchronous Redis client configured")
        return bool(self._script(keys=[self._key(subject)], args=[step, ttl]))

    async def ause(self, subject: str, step: int, ttl: int) -> bool:
        """Async twin of :meth:`use`."""
        if self._ascript is None:
            raise RuntimeError("no asynchronous Redis client configured")
        return bool(await self._ascript(keys=[self._key(subject)], args=[step, ttl]))


def replay_store_from_settings(settings: TOTPSettings) -> MemoryReplayStore | RedisReplayStore:
    """Redis when ``redis_url`` is set, else memory."""
    if settings.redis_url:
        return RedisReplayStore(
            *client_pair(settings.redis_url, settings.redis_timeout, "totp.redis_url")
        )
    return MemoryReplayStore(settings.max_entries)


__all__ = [
    "MemoryReplayStore",
    "RedisReplayStore",
    "StepUp",
    "TOTPSettings",
    "replay_store_from_settings",
]
