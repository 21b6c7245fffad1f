"""A circuit breaker for the rate-limit storage: stop calling a failed Redis, probe, recover.

Closed: every call goes to the storage. After ``threshold`` consecutive failures it opens: calls
are answered by the ``on_storage_error`` policy without touching the storage, except one probe per
``pause``. A successful call closes it. Each transition is one audit event, so an outage is one
``ratelimit.storage_down`` and one ``ratelimit.storage_up`` line, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from secmw import audit


class CircuitBreaker:
    """Closed, open after ``threshold`` consecutive failures, probed after ``pause`` seconds.

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
                self._next_probe = now + self.pause  # one probe per pause, even if it hangs
                return True
            return not self._open

    def retry_after(self) -> float:
        """Seconds until the next probe (0 when closed)."""
        return max(0.0, self._next_probe - self._clock()) if self._open else 0.0

    def success(self) -> None:
        """Record a successful call; closes the breaker."""
        if self._failures == 0 and not self._open:
            return
        with self._lock:
            self._failures = 0
            if self._open:
                self._open = False
                audit.emit("ratelimit.storage_up", f"{self.name} answers again")

    def failure(self, exc: BaseException) -> None:
        """Record a failed call; opens the breaker at the threshold."""
        with self._lock:
            self._failures += 1
            if not self._open and self._failures >= self.threshold:
                self._open = True
                self._next_probe = self._clock() + self.pause
                audit.emit(
                    "ratelimit.storage_down",
                    f"{self.name} failed ({type(exc).__name__}); next probe in {self.pause:g}s",
                )
