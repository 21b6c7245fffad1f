"""The rate-limit storage edge (sync): ``limits`` storages, one round trip, a circuit breaker.

- **Memory** (``memory://``, and the fallback of ``on_storage_error=memory``):
  :class:`MemoryWindows`, secmw's own dict-based windows with ``limits``' semantics. ``limits``'
  ``MemoryStorage`` starts a timer thread after writes while traffic flows, each run scanning
  every key, and wraps each call in an error-handling decorator; the own store expires lazily,
  needs no thread, and is capped (``memory_max_keys``) with LRU eviction (docs/performance.md).
- **Redis** (``redis://``, ``rediss://``, ``redis+cluster://``, ``redis+sentinel://``,
  ``valkey://``...): ``limits`` builds the client from the URI; ``limits`` has no call that
  applies several limits at once (each strategy ``hit`` is a round trip, its window statistics
  another), so secmw runs one Lua script (``ratelimit.lua``) per request that checks and charges
  every limit atomically and returns what the response fields need: **one round trip** however
  many limits apply. In a cluster, keys of one identity share a hash tag; limits keyed on
  different identities (a rule keyed by address beside a default keyed by principal) take one
  round trip per identity, and a refusal there does not refund the others.
- **Failures**: timeouts are bounded (no client retries: the breaker decides), a
  :class:`CircuitBreaker` stops calling a failed storage, probes it after a pause and closes
  again on success; each transition is one audit event. While it is open the
  ``on_storage_error`` policy answers: per-process memory limits, allow, or 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from secmw import metrics
from secmw.core.deny import Deny
from secmw.errors import ConfigurationError
from secmw.ratelimit.breaker import CircuitBreaker
from secmw.ratelimit.memory import MemoryWindows
from secmw.ratelimit.pipeline import Pipeline, pipeline_for
from secmw.ratelimit.plan import storage_unavailable
from secmw.ratelimit.script import (
    LUA,
    Direct,
    clients_of,
    direct,
    groups,
    limits_error,
    merge,
    parse_reply,
    redis_options,
    refund_call,
    scheme_of,
    script_call,
)
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import LimitHit, Outcome, Strategy


class RedisWindows:
    """Rate-limit windows in Redis (sync client), one script call per request (per identity in
    a cluster). The client is built by ``limits`` from the URI, lazily: a Redis that refuses
    connections at startup does not stop the app.

    With redis-py's plain client (one server, or Sentinel), the script runs as ``EVALSHA`` on a
    connection of the client's pool, packed once per distinct call (:func:`packed_call`),
    instead of through redis-py's command layer, whose retries are off here and whose work per
    command would otherwise dominate the call (docs/performance.md). Cluster and valkey clients
    go through the library's ``Script``."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.strategy: Strategy = settings.strategy
        uri = settings.storage_uri.get_secret_value()
        self._uri = uri
        self._options = redis_options(settings, uri, asyncio=False)
        self._clustered = scheme_of(uri).endswith("+cluster")
        self._clients: list[Any] = []  # the script's client first (``clients_of``)
        self._script: Any = None
        self._direct: Direct | None = None  # the plain client's pool and NOSCRIPT error
        self._lock = threading.Lock()
        # Pipelining (secmw.ratelimit.pipeline): a queued call waits as long as a call's I/O.
        self._pipeline: Pipeline | None = None
        self._wait = settings.connect_timeout + settings.command_timeout

    def connect(self) -> None:
        """Build the client (a cluster client reads the slot map now); raises on failure."""
        with self._lock:
            if self._script is not None:
                return
            try:
                storage: Any = storage_from_string(self._uri, **self._options)
            except LimitsConfigurationError as exc:
                raise limits_error(exc) from None
            client = storage.get_connection()
            self._direct = direct(client)
            self._pipeline = pipeline_for(self._direct, wait=self._wait)
            self._clients = clients_of(storage, client)
            self._script = client.register_script(LUA)  # set last: it marks the client ready

    def close(self) -> None:
        """Close the clients' connections (a later request connects afresh)."""
        with self._lock:
            clients, self._clients, self._script, self._direct = self._clients, [], None, None
        for client in clients:
            client.close()

    def apply(self, hits: Sequence[LimitHit], *, charging: bool = True) -> Outcome:
        """Run the script; raises on any storage error."""
        if self._script is None:
            self.connect()
        parts = []
        for group in groups(hits, self._clustered):
            keys, args = script_call(self.strategy, group, charging)
            plain = self._direct
            reply = self._script(keys, args) if plain is None else self._evalsha(plain, keys, args)
            parts.append((group, parse_reply(self.strategy, group, reply)))
        return parts[0][1] if len(parts) == 1 else merge(parts, hits)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits`` (see :meth:`MemoryWindows.refund`); raises on any
        storage error."""
        if self._script is None:
            self.connect()
        for group in groups(hits, self._clustered):
            self._script(*refund_call(self.strategy, group))

    def _evalsha(self, plain: Direct, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, from ``EVALSHA`` through the process's pipeline (calls of
        overlapping requests share a round trip). NOSCRIPT, after a Redis restart or failover,
        is left to ``Script``, which loads the script and runs it again."""
        assert self._pipeline is not None  # built with ``_direct``
        try:
            return self._pipeline.call(keys, args)
        except plain[1]:
            pass
        return self._script(keys, args)


class Fallback:
    """What the sync and async limiters share: the in-memory windows, the circuit breaker around
    Redis, and ``on_storage_error`` for when Redis cannot answer."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float]) -> None:
        self.policy = settings.on_storage_error
        self.memory = MemoryWindows(settings.strategy, max_keys=settings.memory_max_keys)
        self.breaker = CircuitBreaker(settings.breaker_pause, clock=clock)

    def failed(self, started: float, exc: Exception) -> None:
        """Record a Redis call begun at ``started`` (``perf_counter``) that raised."""
        metrics.observe_storage("redis", time.perf_counter() - started, failed=True)
        self.breaker.failure(exc)

    def answered(self, started: float) -> None:
        """Record a Redis call begun at ``started`` that answered."""
        metrics.observe_storage("redis", time.perf_counter() - started)
        self.breaker.success()

    def fallback(self, hits: Sequence[LimitHit], charging: bool) -> Outcome | Deny | None:
        """The answer while Redis cannot give one: None (``allow``), the in-memory windows
        (``memory``) or a 503 until the next probe (``deny``)."""
        if self.policy == "allow":
            return None
        if self.policy == "memory":
            return self.memory.apply(hits, charging=charging)
        return storage_unavailable(self.breaker.retry_after() or self.breaker.pause)

    def fallback_refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back units while Redis cannot: only ``memory`` charged anything meanwhile."""
        if self.policy == "memory":
            self.memory.refund(hits)


class Limiter(Fallback):
    """The storage behind the sync adapters: primary storage, breaker, failure policy.

    :meth:`apply` returns an :class:`Outcome`, or None (``allow``: not limited), or a 503 Deny
    (``deny``). Never raises for a storage problem.
    """

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings, clock)
        self.remote: RedisWindows | None = None
        if not settings.storage_uri.get_secret_value().startswith("memory"):
            self.remote = RedisWindows(settings)
            self._connect_early()

    def _connect_early(self) -> None:
        assert self.remote is not None
        try:
            self.remote.connect()
        except ConfigurationError:
            raise
        except Exception as exc:  # the app starts anyway; the policy applies from request one
            self.breaker.failure(exc)

    def close(self) -> None:
        """Close the Redis client, if any."""
        if self.remote is not None:
            self.remote.close()

    def apply(self, hits: Sequence[LimitHit], *, charging: bool = True) -> Outcome | Deny | None:
        """Charge (or only check) ``hits``; see the class docstring for the answers."""
        if self.remote is None:
            return self.memory.apply(hits, charging=charging)
        if self.breaker.allow():
            started = time.perf_counter()
            try:
                outcome = self.remote.apply(hits, charging=charging)
            except Exception as exc:  # a timeout, a refused connection, a bad reply...
                self.failed(started, exc)
            else:
                self.answered(started)
                return outcome
        return self.fallback(hits, charging)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits`` charged by :meth:`apply`; never raises for a storage
        problem (the units then stay charged: the safe side)."""
        if self.remote is None:
            self.memory.refund(hits)
            return
        if self.breaker.allow():
            started = time.perf_counter()
            try:
                self.remote.refund(hits)
            except Exception as exc:  # a timeout, a refused connection...
                self.failed(started, exc)
            else:
                self.answered(started)
            return
        self.fallback_refund(hits)
