"""Rate-limit windows in process memory: ``limits``' semantics, lazy expiry, a key cap.

``limits``' own ``MemoryStorage`` starts a timer thread after writes to expire keys, each run
scanning every key; these windows expire lazily when a key is read, need no thread, and are capped
(``memory_max_keys``) with LRU eviction.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from secmw import audit
from secmw.ratelimit.windows import LimitHit, Outcome, State, Strategy, admits, charge, used


class MemoryWindows:
    """Rate-limit windows in this process: plain dicts, no timer threads, a hard cap on keys.

    The windows follow ``limits``' semantics (and ``ratelimit.lua``'s): a fixed window counts
    units until it resets; a moving window keeps one timestamp per unit and counts those younger
    than the window; a sliding-window counter keeps this period's and the previous period's
    counts and weighs the previous one by how much of it still overlaps the window. Expired
    state is dropped when its key is next touched, so nothing runs in the background (``limits``'
    ``MemoryStorage`` starts timer threads while traffic flows, each scanning every key).

    Every limit of a request is checked, then charged, under one lock: a request refused by one
    limit costs nothing on the others and threads never over-admit.

    Args:
        strategy: The windowing strategy.
        max_keys: Cap on stored keys. Past it the least recently used key is forgotten (its
            client starts afresh) and one ``ratelimit.memory_full`` event is emitted per episode:
            memory stays bounded and new clients are still served. Share counters in Redis when
            one process sees more clients than that.
        clock: Seconds, monotonic; injectable for tests.
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.strategy: Strategy = strategy
        self.max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._full = False

    def __len__(self) -> int:
        return len(self._windows)

    def apply(self, hits: Sequence[LimitHit], *, charging: bool = True) -> Outcome:
        """Check every limit, then charge them all when each has room (and ``charging``)."""
        now = self._clock()
        with self._lock:
            if self.strategy == "fixed-window":
                return self._apply_fixed(hits, now, charging)
            states = [self._state(hit, now) for hit in hits]
            admitted = all(admits(self.strategy, h, s) for h, s in zip(hits, states, strict=True))
            if admitted and charging:
                for hit in hits:
                    self._charge(hit, now)
                states = [charge(self.strategy, h, s) for h, s in zip(hits, states, strict=True)]
        return Outcome(admitted, tuple(states))

    def _apply_fixed(self, hits: Sequence[LimitHit], now: float, charging: bool) -> Outcome:
        """``apply`` for fixed windows, the cheapest strategy, kept cheap: one pass to check, one
        to charge (the same arithmetic as ``_state``, ``admits`` and ``charge``)."""
        windows = self._windows
        # The usual request has one limit: this branch skips the lists of the loop below, on the
        # path every request takes (docs/performance.md).
        if len(hits) == 1:
            hit = hits[0]
            key = hit.key
            entry = windows.get(key)
            if entry is None or entry[1] <= now:
                entry, count, ttl = None, 0, 0
            else:
                count, ttl = entry[0], int((entry[1] - now) * 1000)
            total = count + hit.cost
            if total > hit.amount or not charging:
                return Outcome(total <= hit.amount, ((count, ttl),))
            if entry is None:
                entry = windows[key] = [0, now + hit.window]
            entry[0] = total  # under the lock: the stored count is still ``count``
            windows.move_to_end(key)
            if len(windows) > self.max_keys:
                self._evict()
            return Outcome(True, ((total, ttl if count else hit.window_ms),))
        entries = []
        states: list[State] = []
        admitted = True
        for hit in hits:
            entry = windows.get(hit.key)
            if entry is None or entry[1] <= now:
                entry, state = None, (0, 0)
            else:
                state = (entry[0], int((entry[1] - now) * 1000))
            if state[0] + hit.cost > hit.amount:
                admitted = False
            entries.append(entry)
            states.append(state)
        if admitted and charging:
            for index, hit in enumerate(hits):
                entry = entries[index]
                if entry is None:
                    entry = windows[hit.key] = [0, now + hit.window]
                entry[0] += hit.cost
                windows.move_to_end(hit.key)
                count, ttl = states[index]
                states[index] = (count + hit.cost, ttl if count else hit.window_ms)
            if len(windows) > self.max_keys:
                self._evict()
        return Outcome(admitted, tuple(states))

    def seed(self, hit: LimitHit, state: State, seen_at: float) -> None:
        """Start ``hit``'s window from a state another storage reported at ``seen_at`` (this
        store's clock), unless this store already has a live window for it.

        Seeding errs on the side of fewer admissions: a moving window's units all count from
        ``seen_at`` but the oldest, and the sliding counter carries its estimate as this
        period's count."""
        now = self._clock()
        with self._lock:
            if self._live(hit, now):
                return
            if self.strategy == "fixed-window":
                count, ttl = state
                if count and seen_at + ttl / 1000 > now:
                    self._windows[hit.key] = [count, seen_at + ttl / 1000]
            elif self.strategy == "moving-window":
                count, oldest_age = state
                if count:
                    first = seen_at - oldest_age / 1000
                    self._windows[hit.key] = deque([first] + [seen_at] * (count - 1))
            else:
                estimate = used(self.strategy, hit, state)
                if estimate:
                    self._windows[hit.key] = (int(now // hit.window), 0, estimate)
            if len(self._windows) > self.max_keys:
                self._evict()

    def _live(self, hit: LimitHit, now: float) -> bool:
        """Whether ``hit``'s window holds units now (under the lock)."""
        entry = self._windows.get(hit.key)
        if entry is None:
            return False
        if self.strategy == "fixed-window":
            return bool(entry[1] > now and entry[0])
        return used(self.strategy, hit, self._state(hit, now)) > 0

    def forget(self, key: str) -> None:
        """Drop ``key``'s window (its units were carried back to the shared storage)."""
        with self._lock:
            self._windows.pop(key, None)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back ``hit.cost`` units of each limit (never below zero): an attempt charged
        before it was checked that turned out not to count (see ``secmw.auth.throttle``).

        The moving window gives back its newest entries, which may be a concurrent request's
        rather than this one's: the same number of units, freed a little later at most."""
        now = self._clock()
        with self._lock:
            for hit in hits:
                entry = self._windows.get(hit.key)
                if entry is None:
                    continue
                if self.strategy == "fixed-window":
                    if entry[1] > now:
                        entry[0] = max(0, entry[0] - hit.cost)
                elif self.strategy == "moving-window":
                    for _ in range(min(hit.cost, len(entry))):
                        entry.pop()
                else:
                    period = int(now // hit.window)
                    previous, current = _sliding_counts(entry, period)
                    taken = min(hit.cost, current)
                    previous = max(0, previous - (hit.cost - taken))
                    self._windows[hit.key] = (period, previous, current - taken)

    def _state(self, hit: LimitHit, now: float) -> State:
        entry = self._windows.get(hit.key)
        window = hit.window
        if self.strategy == "moving-window":
            if not entry:
                return (0, 0)
            horizon = now - window
            while entry and entry[0] <= horizon:
                entry.popleft()
            return (len(entry), int((now - entry[0]) * 1000)) if entry else (0, 0)
        period = int(now // window)
        previous, current = _sliding_counts(entry, period)
        current_ttl = int(((period + 2) * window - now) * 1000)
        previous_ttl = current_ttl - window * 1000
        return (previous, previous_ttl if previous else 0, current, current_ttl if current else 0)

    def _charge(self, hit: LimitHit, now: float) -> None:
        windows, key = self._windows, hit.key
        entry = windows.get(key)
        window = hit.window
        if self.strategy == "moving-window":
            if entry is None:
                entry = deque()
            entry.extend([now] * hit.cost)
        else:
            period = int(now // window)
            previous, current = _sliding_counts(entry, period)
            entry = (period, previous, current + hit.cost)
        windows[key] = entry
        windows.move_to_end(key)
        if len(windows) > self.max_keys:
            self._evict()

    def _evict(self) -> None:
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        if not self._full:
            self._full = True
            audit.emit(
                "ratelimit.memory_full",
                f"in-memory store reached {self.max_keys} keys; forgetting the least recent",
            )
        elif len(self._windows) < self.max_keys * 0.9:
            self._full = False


class Carry:
    """What the ``memory`` fallback carries across the switches between Redis and memory.

    Redis and each worker's memory count the same client apart; without a bridge a window that
    spans a switch could admit the limit in Redis and the limit again in memory (and the other
    way back). So: every Redis answer is remembered per key (:meth:`saw`), and a key's memory
    window starts from the last count this worker saw (:meth:`apply`): in any window, a worker
    admits at most the limit in Redis and memory together. Units admitted from memory are owed
    to Redis and charged there on the key's first call once Redis answers again (:meth:`take`,
    :meth:`paid`), so the fleet's admissions from memory count against the limit after the
    return. Both maps are capped like the memory windows (``memory_max_keys``).
    """

    def __init__(self, memory: MemoryWindows) -> None:
        self.memory = memory
        self._clock = memory._clock
        self._cap = memory.max_keys
        self._seen: dict[str, tuple[State, float]] = {}
        self._owed: dict[str, LimitHit] = {}
        self._lock = threading.Lock()

    def saw(self, hits: Sequence[LimitHit], outcome: Outcome) -> None:
        """Remember the states Redis reported for ``hits``."""
        now = self._clock()
        seen = self._seen
        if len(seen) >= self._cap:
            seen.clear()  # bounded; a forgotten key starts its memory window empty
        for hit, state in zip(hits, outcome.states, strict=True):
            seen[hit.key] = (state, now)

    def apply(self, hits: Sequence[LimitHit], *, charging: bool = True) -> Outcome:
        """The memory windows' answer, each window seeded from Redis's last state; admitted
        units are owed to Redis."""
        for hit in hits:
            last = self._seen.get(hit.key)
            if last is not None:
                self.memory.seed(hit, *last)
        outcome = self.memory.apply(hits, charging=charging)
        if outcome.admitted and charging:
            with self._lock:
                owed = self._owed
                if len(owed) >= self._cap:
                    owed.clear()
                for hit in hits:
                    before = owed.get(hit.key)
                    owed[hit.key] = hit if before is None else _more(before, hit.cost)
        return outcome

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back units in memory, and owe Redis that much less."""
        self.memory.refund(hits)
        with self._lock:
            for hit in hits:
                before = self._owed.get(hit.key)
                if before is not None:
                    if before.cost <= hit.cost:
                        del self._owed[hit.key]
                    else:
                        self._owed[hit.key] = _more(before, -hit.cost)

    def take(self, hits: Sequence[LimitHit]) -> list[LimitHit]:
        """The units owed to Redis on ``hits``' keys, as limits whose cost is the units owed;
        taken, so that concurrent calls do not carry them twice (:meth:`paid` or
        :meth:`unpaid` settles them)."""
        if not self._owed:
            return []
        with self._lock:
            return [self._owed.pop(hit.key) for hit in hits if hit.key in self._owed]

    def paid(self, carried: Sequence[LimitHit]) -> None:
        """Redis counted ``carried``: their memory windows, counted there now, go."""
        for hit in carried:
            if hit.key not in self._owed:
                self.memory.forget(hit.key)

    def unpaid(self, carried: Sequence[LimitHit]) -> None:
        """Redis did not take ``carried``: they are owed again."""
        with self._lock:
            for hit in carried:
                before = self._owed.get(hit.key)
                self._owed[hit.key] = hit if before is None else _more(before, hit.cost)


def _more(hit: LimitHit, units: int) -> LimitHit:
    """``hit`` with ``units`` more cost."""
    return LimitHit(hit.policy, hit.item, hit.key, hit.tag, hit.cost + units)


def _sliding_counts(entry: tuple[int, int, int] | None, period: int) -> tuple[int, int]:
    """(previous, current) counts for ``period`` from a stored (period, previous, current)."""
    if entry is None:
        return 0, 0
    stored_period, previous, current = entry
    if stored_period == period:
        return previous, current
    if stored_period == period - 1:
        return current, 0
    return 0, 0


# -- Redis -----------------------------------------------------------------------------------
