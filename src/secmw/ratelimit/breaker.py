"""Circuit breakers for the rate-limit storage: stop calling a failed Redis, probe, recover.

Closed: every call goes to the storage. After ``threshold`` consecutive failures it opens: calls
are answered by the ``on_storage_error`` policy without touching the storage, except one probe
per pause. The first pause is short and the pauses grow with the outage (a quarter of its length
so far), up to ``pause``: a brief outage (a restart, a failover) is noticed soon after it ends,
a long one costs one probe per ``pause``. A successful call closes it. Each transition is one
audit event, so an outage is one ``ratelimit.storage_down`` and one ``ratelimit.storage_up``
line, not one per request.

On a Redis Cluster each master has its own breaker (:class:`Breakers`): a dead master sends
only its keys to the policy, and a success on another master says nothing about it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from secmw import audit

FIRST_PAUSE = 0.2
"""Seconds before the first probe (or ``pause``, if shorter)."""
SHARE = 0.25
"""Later pauses last this share of the outage so far (at least ``FIRST_PAUSE``, at most
``pause``): recovery lags Redis by a quarter of the outage, never more than ``pause``."""


class CircuitBreaker:
    """Closed, open after ``threshold`` consecutive failures, probed after pauses that grow
    with the outage.

    While open, :meth:`allow` is False except for one probe per pause; a successful call closes
    it. Transitions are logged once each (``ratelimit.storage_down`` / ``ratelimit.storage_up``).
    Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        pause: float,
        *,
        threshold: int = 1,
        clock: Callable[[], float] = time.monotonic,
        name: str = "rate-limit storage",
    ) -> None:
        self.pause = pause
        self.threshold = threshold
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open = False
        self._next_probe = 0.0
        self._down_since = 0.0
        self._closed_at = float("-inf")  # time.perf_counter() when it last closed

    @property
    def is_open(self) -> bool:
        """True while the storage is considered down."""
        return self._open

    def allow(self) -> bool:
        """True when the caller may use the storage (closed, or this caller is the probe)."""
        if not self._open:
            return True
        with self._lock:
            now = self._clock()
            if self._open and now >= self._next_probe:
                # One probe per pause, even if it hangs; the next pause grows with the outage.
                self._next_probe = now + self._pause_at(now)
                return True
            return not self._open

    def _pause_at(self, now: float) -> float:
        return min(self.pause, max(FIRST_PAUSE, (now - self._down_since) * SHARE))

    def retry_after(self) -> float:
        """Seconds until the next probe (0 when closed)."""
        return max(0.0, self._next_probe - self._clock()) if self._open else 0.0

    def success(self) -> None:
        """Record a successful call; closes the breaker."""
        if self._failures == 0 and not self._open:
            return
        self.close(f"{self.name} answers again")

    def close(self, reason: str) -> None:
        """Close the breaker (one ``ratelimit.storage_up`` event saying ``reason`` if it was
        open)."""
        with self._lock:
            self._failures = 0
            if self._open:
                self._open = False
                self._closed_at = time.perf_counter()
                audit.emit("ratelimit.storage_up", reason)

    def failure(self, exc: BaseException, started: float | None = None) -> None:
        """Record a failed call begun at ``started`` (``time.perf_counter``; None: now); opens
        the breaker at the threshold, unless the call began before the breaker last closed."""
        if started is not None and started < self._closed_at:
            return
        with self._lock:
            self._failures += 1
            if not self._open and self._failures >= self.threshold:
                self._open = True
                self._down_since = now = self._clock()
                wait = self._pause_at(now)
                self._next_probe = now + wait
                audit.emit(
                    "ratelimit.storage_down",
                    f"{self.name} failed ({type(exc).__name__}); next probe in {wait:g}s",
                )


class Breakers:
    """One :class:`CircuitBreaker` per storage node, made on first use.

    A single server or Sentinel is one node (named ``""``, as is a Cluster whose slot map is not
    read yet); a Cluster's masters are named ``host:port``. Nodes are few (a cluster's masters),
    and a node whose keys moved is dropped by :meth:`retire`, so the map stays small.
    """

    def __init__(self, pause: float, clock: Callable[[], float]) -> None:
        self.pause = pause
        self._clock = clock
        self._lock = threading.Lock()
        self.nodes: dict[str, CircuitBreaker] = {}
        self.failed_keys: dict[str, str] = {}  # node -> a key whose call to it failed
        self.main = self.get("")

    def get(self, node: str) -> CircuitBreaker:
        """The breaker of ``node``."""
        breaker = self.nodes.get(node)
        if breaker is None:
            with self._lock:
                name = f"rate-limit storage node {node}" if node else "rate-limit storage"
                breaker = self.nodes.setdefault(
                    node, CircuitBreaker(self.pause, clock=self._clock, name=name)
                )
        return breaker

    def failure(
        self, node: str, key: str, exc: BaseException, started: float | None = None
    ) -> None:
        """Record a failed call of ``key`` to ``node`` begun at ``started``."""
        self.failed_keys[node] = key
        self.get(node).failure(exc, started)

    def open_nodes(self) -> list[str]:
        """The nodes whose breaker is open."""
        return [node for node, breaker in list(self.nodes.items()) if breaker.is_open]

    def retire(self, node: str) -> None:
        """Close ``node``'s breaker, whose keys another node serves now, with an event saying
        why (the outage ended for them); a node that left the cluster is forgotten."""
        with self._lock:
            breaker = self.nodes.get(node) if not node else self.nodes.pop(node, None)
            self.failed_keys.pop(node, None)
        if breaker is not None:
            breaker.close(f"{breaker.name} is replaced; another node serves its keys now")
