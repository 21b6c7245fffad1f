"""A per-process mirror of the Redis revocation denylist: lookups in memory, Redis stays the truth.

Every process holds the revoked ids (``jti``\\ s and :func:`~secmw.stores.revocation.family_key`
families) in a dictionary, each until the token it refuses would have expired plus a margin for
clock skew. A daemon thread keeps it current: it subscribes to the store's pub/sub channel (each
revocation is published as it is written), loads every entry in full (``SCAN`` + ``PTTL``) once
subscribed, again every ``resync_interval`` and whenever the subscription was re-established,
and pings the subscription every ``heartbeat`` seconds; a ping left unanswered (a killed
connection, a frozen server) ends the session and starts a new one. So a request never waits on
Redis for revocation, and a Redis outage does not take bearer authentication down with it:

- ids the mirror knows stay refused while Redis is away;
- a revocation made meanwhile applies here at once and is written (and published) once Redis
  answers again;
- past ``max_staleness`` seconds without a confirmed subscription (and before the first full
  load), ``stale_policy`` says what an unknown id gets: ``"serve"`` (admit it and emit a
  ``revocation.stale`` audit event) or ``"refuse"`` (:class:`RevocationUnavailable`, which the
  JWT authenticator answers with 503).

One thread serves WSGI and ASGI alike: it uses the sync client and never touches an event loop.
After a fork (gunicorn ``--preload``) the child starts its own thread on first use.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from secmw import audit
from secmw.errors import StoreUnavailable
from secmw.stores.redis import REDIS_ERRORS
from secmw.stores.revocation import RedisRevocationStore, read_announcement

StalePolicy = Literal["serve", "refuse"]
NEVER = float("-inf")


class RevocationUnavailable(StoreUnavailable):
    """The mirror is stale past its bound and its policy refuses (the request gets 503)."""


class RevocationMirror:
    """The revocation denylist answered from memory, kept in step with a Redis store.

    Args:
        store: The Redis denylist (its sync client feeds the mirror; its async client, when
            configured, writes revocations made on an event loop).
        max_staleness: Seconds without a confirmed subscription after which ``stale_policy``
            applies to ids the mirror does not know.
        stale_policy: ``"serve"`` (admit, audit ``revocation.stale``) or ``"refuse"`` (503).
        resync_interval: Seconds between two full loads while subscribed.
        max_entries: Cap on the entries held; past it the soonest to expire are dropped first
            (audited as ``revocation.mirror_full``: each one dropped readmits its token).
        margin: Seconds every entry outlives its token: covers the verifier's ``leeway`` and the
            clock difference between the process that revokes and the ones that verify.
        heartbeat: Seconds between two pings of the subscription; three missed ones end it.
        clock: UNIX time (the ``until`` of :meth:`revoke` is a token's ``exp``).
        monotonic: Monotonic time for entry lifetimes and staleness.
        start: Start the thread now (else on first use).
    """

    answers_locally = True
    """No Redis call per lookup: the JWT authenticator asks without awaiting anything."""

    def __init__(
        self,
        store: RedisRevocationStore,
        *,
        max_staleness: float = 30.0,
        stale_policy: StalePolicy = "serve",
        resync_interval: float = 60.0,
        max_entries: int = 1_000_000,
        margin: float = 30.0,
        heartbeat: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self.store = store
        self.max_staleness = max_staleness
        self.stale_policy = stale_policy
        self.resync_interval = resync_interval
        self.max_entries = max_entries
        self.margin = margin
        self.heartbeat = heartbeat
        self._clock = clock
        self._monotonic = monotonic
        self._entries: dict[str, float] = {}  # id -> monotonic expiry
        self._pending: dict[str, float] = {}  # id -> UNIX expiry, still to write to Redis
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.confirmed = NEVER
        """Monotonic time up to which every revocation is known here (NEVER before a load)."""
        self.syncs = 0
        """Full loads done (tests and metrics wait on it)."""
        self._stale_reported = NEVER
        self._reported_down = -1  # the load count at the last disconnection reported
        _after_fork.add(self)
        if start:
            self.start()

    # -- the hot path ---------------------------------------------------------------------------

    def is_revoked(self, *ids: str) -> bool:
        """True while any of ``ids`` is known revoked; for an unknown one, past
        ``max_staleness``, the stale policy decides.

        Raises:
            RevocationUnavailable: stale and the policy refuses.
        """
        if self._thread is None:
            self.start()
        now = self._monotonic()
        entries = self._entries
        for one in ids:
            expiry = entries.get(one)
            if expiry is not None and expiry > now:
                return True
        if now - self.confirmed > self.max_staleness:
            self._stale(now)
        return False

    async def ais_revoked(self, *ids: str) -> bool:
        """Async twin of :meth:`is_revoked` (no I/O)."""
        return self.is_revoked(*ids)

    def remaining(self, key: str) -> float:
        """Seconds this process goes on refusing ``key`` (0 when it does not know it)."""
        return max(0.0, self._entries.get(key, NEVER) - self._monotonic())

    def _stale(self, now: float) -> None:
        age = "never synced" if self.confirmed == NEVER else f"{now - self.confirmed:.0f}s"
        if self.stale_policy == "refuse":
            raise RevocationUnavailable(age)
        if now - self._stale_reported >= self.heartbeat:  # one event a heartbeat, not a request
            self._stale_reported = now
            audit.emit("revocation.stale", f"revocation list not confirmed for {age}")

    # -- revoking -------------------------------------------------------------------------------

    def revoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` here at once, and in every process once Redis has it: written now, or
        when Redis answers again (never raises for a Redis outage)."""
        expires = self._local(jti, until)
        if expires is None:
            return
        try:
            self.store.revoke(jti, expires)
        except REDIS_ERRORS as exc:
            self._defer(jti, expires, exc)

    async def arevoke(self, jti: str, until: float) -> None:
        """Async twin of :meth:`revoke`: written with the store's async client, or by the
        mirror's thread when there is none (the event loop never waits on a sync call)."""
        expires = self._local(jti, until)
        if expires is None:
            return
        if not self.store.has_async:
            self._defer(jti, expires, None)
            return
        try:
            await self.store.arevoke(jti, expires)
        except REDIS_ERRORS as exc:
            self._defer(jti, expires, exc)

    def _local(self, jti: str, until: float) -> float | None:
        """Add the entry here; its UNIX expiry (margin included), None when already past."""
        if self._thread is None:
            self.start()
        expires = until + self.margin
        remaining = expires - self._clock()
        if remaining <= 0:
            return None
        self._add(jti, remaining)
        return expires

    def _defer(self, jti: str, expires: float, exc: Exception | None) -> None:
        with self._lock:
            if len(self._pending) < self.max_entries:
                self._pending[jti] = expires
        if exc is not None:
            audit.emit("revocation.deferred", f"written once Redis answers ({type(exc).__name__})")

    def _add(self, key: str, remaining: float) -> None:
        expiry = self._monotonic() + remaining
        with self._lock:
            if self._entries.get(key, NEVER) >= expiry:
                return
            if key not in self._entries and len(self._entries) >= self.max_entries:
                self._make_room()
            self._entries[key] = expiry

    def _make_room(self) -> None:
        """Drop the expired entries, then (still full) the soonest to expire. Under the lock."""
        now = self._monotonic()
        live = {k: v for k, v in self._entries.items() if v > now}
        if len(live) >= self.max_entries:
            drop = heapq.nsmallest(max(1, self.max_entries // 100), live, key=live.__getitem__)
            for key in drop:
                del live[key]
            audit.emit("revocation.mirror_full", f"dropped {len(drop)} soonest-expiring entries")
        self._entries = live

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that keeps the mirror current (once; again in a forked child)."""
        with self._lock:
            if self._thread is not None or self._closing.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="secmw-revocation-mirror", daemon=True
            )
            self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a full load; whether one happened."""
        deadline = time.monotonic() + timeout
        while self.syncs == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        backoff = 0.05
        while not self._closing.is_set():
            loads = self.syncs
            try:
                self._session()
            except REDIS_ERRORS as exc:
                if loads != self._reported_down:  # once per outage, not once per retry
                    self._reported_down = loads
                    audit.emit("revocation.mirror_disconnected", type(exc).__name__)
            except Exception as exc:  # a reply the mirror cannot read: start over, never die
                audit.emit("revocation.mirror_error", type(exc).__name__)
            backoff = 0.05 if self.syncs != loads else min(backoff * 2, self.heartbeat)
            self._closing.wait(backoff)

    def _session(self) -> None:
        """One subscription: load in full once subscribed, follow the messages, ping, reload."""
        pubsub = self.store.subscription()
        try:
            pubsub.subscribe(self.store.channel)
            heard = pinged = self._monotonic()
            loaded = NEVER
            while not self._closing.is_set():
                message = pubsub.get_message(timeout=min(0.25, self.heartbeat / 2))
                now = self._monotonic()
                if message is not None:
                    heard = now
                    if message["type"] == "subscribe":  # (re)subscribed: messages may be lost
                        loaded = self._load(now)
                    elif message["type"] == "message":
                        self._hear(message["data"])
                    elif message["type"] == "pong" and loaded != NEVER:
                        self._confirm(message["data"])
                if self._pending:
                    self._flush()
                if loaded != NEVER and now - loaded >= self.resync_interval:
                    loaded = self._load(now)
                if now - pinged >= self.heartbeat:
                    pubsub.ping(repr(now))
                    pinged = now
                if now - heard > 3 * self.heartbeat:
                    raise TimeoutError("the subscription stopped answering")
        finally:
            pubsub.close()

    def _load(self, now: float) -> float:
        """Everything in Redis, merged in; confirmed up to ``now`` (subscribed since before)."""
        self._flush()
        for key, remaining in self.store.entries().items():
            self._add(key, remaining)
        with self._lock:
            self._drop_expired()
        self.confirmed = now
        self.syncs += 1
        return now

    def _drop_expired(self) -> None:
        now = self._monotonic()
        if any(expiry <= now for expiry in self._entries.values()):
            self._entries = {k: v for k, v in self._entries.items() if v > now}

    def _hear(self, data: bytes | str) -> None:
        entry = read_announcement(data)
        if entry is not None:
            self._add(*entry)

    def _confirm(self, data: Any) -> None:
        """A pong answers the ping sent at the time it carries: every message published
        before that ping has been heard."""
        try:
            sent = float(data.decode() if isinstance(data, bytes) else data)
        except (TypeError, ValueError):
            return
        self.confirmed = max(self.confirmed, sent)

    def _flush(self) -> None:
        """Write the revocations made while Redis was away (they stay queued on failure)."""
        with self._lock:
            pending = list(self._pending.items())
        for key, expires in pending:
            self.store.revoke(key, expires)
            with self._lock:
                if self._pending.get(key) == expires:
                    del self._pending[key]

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread and close the store's connections."""
        self._stop()
        if self._thread is not None:
            self._thread.join(5)
        self.store.close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close` (the thread is joined off the event loop)."""
        self._stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        await self.store.aclose()

    def _stop(self) -> None:
        self._closing.set()

    def _forked(self) -> None:
        # The parent's thread does not exist here and its locks may have been held at the fork.
        closing = self._closing.is_set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        if closing:
            self._closing.set()
        self._thread = None


_after_fork: weakref.WeakSet[RevocationMirror] = weakref.WeakSet()


def _restart_in_child() -> None:
    for mirror in list(_after_fork):
        mirror._forked()


os.register_at_fork(after_in_child=_restart_in_child)


__all__ = ["RevocationMirror", "RevocationUnavailable", "StalePolicy"]
