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
- **Failures**: each call has one deadline, connect included (no client retries: the breaker
  decides); a :class:`CircuitBreaker` per node (one for a server or Sentinel, one per Cluster
  master) stops calling a failed storage, probes it after pauses growing with the outage and
  closes again on success; each transition is one audit event. While it is open the
  ``on_storage_error`` policy answers: per-process memory limits (carried across the switches,
  :class:`Carry`), allow, or 503.
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
from secmw.ratelimit.breaker import Breakers, CircuitBreaker
from secmw.ratelimit.memory import Carry, MemoryWindows
from secmw.ratelimit.pipeline import Pipeline, pipeline_for
from secmw.ratelimit.plan import storage_unavailable
from secmw.ratelimit.script import (
    LUA,
    Direct,
    MapRefresh,
    NodeFailure,
    RemoteNodes,
    carry_call,
    clients_of,
    direct,
    groups,
    limits_error,
    merge,
    node_of,
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
    command would otherwise dominate the call (docs/performance.md); the call's deadline
    (``command_timeout``, from before the connection is taken) bounds the reply. Cluster and
    valkey clients go through the library's ``Script``, each command within the deadline."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.strategy: Strategy = settings.strategy
        uri = settings.storage_uri.get_secret_value()
        self._uri = uri
        self._options = redis_options(settings, uri, asyncio=False)
        self._deadline = settings.command_timeout
        self.clustered = scheme_of(uri).endswith("+cluster")
        self._clients: list[Any] = []  # the script's client first (``clients_of``)
        self._script: Any = None
        self._direct: Direct | None = None  # the plain client's pool and NOSCRIPT error
        self._owners: dict[int, str] = {}  # slot -> its last known master (``node_of``)
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None  # secmw.ratelimit.pipeline, for the plain client

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
            self._pipeline = pipeline_for(self._direct, sync=True)
            self._clients = clients_of(storage, client)
            self._script = client.register_script(LUA)  # set last: it marks the client ready

    def close(self) -> None:
        """Close the clients' connections (a later request connects afresh)."""
        with self._lock:
            clients, self._clients, self._script, self._direct = self._clients, [], None, None
        for client in clients:
            client.close()

    def node(self, key: str) -> str:
        """The cluster node ``key`` lives on (``""`` off a cluster, or before the slot map is
        known)."""
        if not (self.clustered and self._clients):
            return ""
        return node_of(self._clients[0], key, self._owners)

    def apply(
        self, hits: Sequence[LimitHit], *, charging: bool = True, carried: Sequence[LimitHit] = ()
    ) -> Outcome:
        """Charge ``carried`` (units admitted from memory meanwhile), then run the script; raises
        on any storage error (:class:`NodeFailure` on a cluster)."""
        started = time.monotonic()
        if self._script is None:
            self.connect()
        if carried:
            for group in groups(carried, self.clustered):
                self._run(group, carry_call(self.strategy, group), started)
        parts = []
        for group in groups(hits, self.clustered):
            reply = self._run(group, script_call(self.strategy, group, charging), started)
            parts.append((group, parse_reply(self.strategy, group, reply)))
        return parts[0][1] if len(parts) == 1 else merge(parts, hits)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits`` (see :meth:`MemoryWindows.refund`); raises on any
        storage error."""
        started = time.monotonic()
        if self._script is None:
            self.connect()
        for group in groups(hits, self.clustered):
            self._run(group, refund_call(self.strategy, group), started)

    def _run(self, group: list[LimitHit], call: tuple[list[str], list[Any]], started: float) -> Any:
        plain = self._direct
        if plain is not None:
            return self._evalsha(plain, *call, started + self._deadline)
        try:
            return self._script(*call)
        except Exception as exc:
            if self.clustered:
                key = group[0].key
                raise NodeFailure(self.node(key), key, exc) from exc
            raise

    def _evalsha(self, plain: Direct, keys: list[str], args: list[Any], deadline: float) -> Any:
        """The script's reply, from ``EVALSHA`` through the process's pipeline (calls of
        overlapping requests share a round trip), before ``deadline`` (``time.monotonic``)
        however long waiting for the connection or the pipeline took. NOSCRIPT, after a Redis
        restart or failover, is left to ``Script``, which loads the script and runs it again."""
        assert self._pipeline is not None  # built with ``_direct``
        try:
            return self._pipeline.call(keys, args, deadline)
        except plain[1]:
            pass
        return self._script(keys, args)


class Fallback:
    """What the sync and async limiters share: the in-memory windows, a circuit breaker per
    Redis node, and ``on_storage_error`` for when Redis cannot answer.

    The limiters call :meth:`closed` before a Redis call (may it go?), then :meth:`answered` or
    :meth:`failed`, or :meth:`fallback` when Redis may not be called."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float]) -> None:
        self.policy = settings.on_storage_error
        self.memory = MemoryWindows(settings.strategy, max_keys=settings.memory_max_keys)
        self.carry = Carry(self.memory) if self.policy == "memory" else None
        self.breakers = Breakers(settings.breaker_pause, clock)
        self.breaker = self.breakers.main
        self._one = (self.breaker,)  # what ``closed`` answers off a cluster, made once
        self.remote: RemoteNodes | None = None

    def closed(self, hits: Sequence[LimitHit]) -> Sequence[CircuitBreaker] | None:
        """The breakers of the nodes ``hits`` live on, when each lets a call through (closed, or
        this call is its probe); None when the policy must answer."""
        remote = self.remote
        if remote is None or not remote.clustered:
            return self._one if self.breaker.allow() else None
        breakers = [self.breakers.get(node) for node in {remote.node(hit.key) for hit in hits}]
        return breakers if all(breaker.allow() for breaker in breakers) else None

    def carried(self, hits: Sequence[LimitHit]) -> list[LimitHit]:
        """Units ``hits``' keys owe Redis from the memory fallback, taken to be charged with
        this call (:meth:`answered` or :meth:`failed` settles them)."""
        return self.carry.take(hits) if self.carry is not None else []

    def failed(
        self, started: float, exc: Exception, hits: Sequence[LimitHit], carried: Sequence[LimitHit]
    ) -> None:
        """Record a Redis call for ``hits`` begun at ``started`` (``perf_counter``) that raised,
        against the node that failed (on a cluster: the one named by the error, else those of
        ``hits``). The units it carried are owed again (charging them twice errs on the safe
        side)."""
        metrics.observe_storage("redis", time.perf_counter() - started, failed=True)
        if carried and self.carry is not None:
            self.carry.unpaid(carried)
        remote = self.remote
        if isinstance(exc, NodeFailure):
            self.breakers.failure(exc.node, exc.key, exc.error, started)
        elif isinstance(exc, MapRefresh):
            pass  # this request gets the policy's answer; no node is to blame
        elif remote is None or not remote.clustered:
            self.breaker.failure(exc, started)
        else:
            for node, key in {remote.node(hit.key): hit.key for hit in hits}.items():
                self.breakers.failure(node, key, exc, started)

    def answered(
        self,
        started: float,
        breakers: Sequence[CircuitBreaker],
        hits: Sequence[LimitHit] = (),
        outcome: Outcome | None = None,
        carried: Sequence[LimitHit] = (),
    ) -> None:
        """Record a Redis call begun at ``started`` that answered, for ``hits``."""
        metrics.observe_storage("redis", time.perf_counter() - started)
        for breaker in breakers:
            breaker.success()
        if self.carry is not None and outcome is not None:
            self.carry.saw(hits, outcome)
            if carried:
                self.carry.paid(carried)
        if len(self.breakers.nodes) > 1 and self.remote is not None:
            self._retire_moved()

    def _retire_moved(self) -> None:
        """Close the breakers of nodes whose keys another node serves now (a replica took over;
        or ``""``, a slot map unknown before, is read)."""
        assert self.remote is not None
        for node in self.breakers.open_nodes():
            key = self.breakers.failed_keys.get(node)
            if key is not None:
                now = self.remote.node(key)
                if now and now != node:
                    self.breakers.retire(node)

    def fallback(self, hits: Sequence[LimitHit], charging: bool) -> Outcome | Deny | None:
        """The answer while Redis cannot give one: None (``allow``), the in-memory windows
        (``memory``, seeded from Redis's last counts) or a 503 until the next probe (``deny``)."""
        if self.carry is not None:
            return self.carry.apply(hits, charging=charging)
        if self.policy == "allow":
            return None
        return storage_unavailable(self._retry_after(hits))

    def _retry_after(self, hits: Sequence[LimitHit]) -> float:
        remote = self.remote
        if remote is None or not remote.clustered:
            breakers = [self.breaker]
        else:
            breakers = [self.breakers.get(remote.node(hit.key)) for hit in hits]
        return max(b.retry_after() for b in breakers) or self.breakers.pause

    def fallback_refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back units while Redis cannot: only ``memory`` charged anything meanwhile."""
        if self.carry is not None:
            self.carry.refund(hits)


class Limiter(Fallback):
    """The storage behind the sync adapters: primary storage, breakers, failure policy.

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
        remote = self.remote
        if remote is None:
            return self.memory.apply(hits, charging=charging)
        breakers = self.closed(hits)
        if breakers is not None:
            started = time.perf_counter()
            carried = self.carried(hits)
            try:
                outcome = remote.apply(hits, charging=charging, carried=carried)
            except Exception as exc:  # a timeout, a refused connection, a bad reply...
                self.failed(started, exc, hits, carried)
            else:
                self.answered(started, breakers, hits, outcome, carried)
                return outcome
        return self.fallback(hits, charging)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits`` charged by :meth:`apply`; never raises for a storage
        problem (the units then stay charged: the safe side)."""
        remote = self.remote
        if remote is None:
            self.memory.refund(hits)
            return
        breakers = self.closed(hits)
        if breakers is not None:
            started = time.perf_counter()
            try:
                remote.refund(hits)
            except Exception as exc:  # a timeout, a refused connection...
                self.failed(started, exc, hits, ())
            else:
                self.answered(started, breakers)
            return
        self.fallback_refund(hits)
