"""Leased budgets (``rate_limit.mode=leased``): a process takes a slice of a key's remaining
budget from Redis in one script call and admits from it locally until the slice or its window
ends.

A lease charges its units in Redis when it is taken, as that many requests would be, so Redis
never counts more than the limit; what leasing gives up is *when* a unit is counted: a unit
taken by a lease and spent later is counted at the lease's time. Per process and key, one lease
call is in flight at a time and at most ``slice - 1`` unused units are held, which bounds the
overshoot (docs/redis.md derives it): in any window-long span, at most ``limit + P * (slice -
1)`` requests with P processes, counting each lease's first request at the instant Redis granted
it (``limit + P * slice`` counting by arrival at the process). Unused units go back to Redis when
the storage closes; a process that dies leaves them charged until their window ends, never
longer.

Only the request limits are leased; the failed-authentication budgets stay exact. The memory
storage is unaffected: it is already the process's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from secmw.ratelimit.script import LUA, StorageFailure, script_call
from secmw.ratelimit.windows import STATE_WIDTH, LimitHit, Outcome, State, Strategy

_SHARED = "-- end of the shared functions"
if _SHARED not in LUA:  # pragma: no cover (a packaging error)
    raise RuntimeError("ratelimit.lua lost the marker the lease script is built on")
LEASE_LUA = LUA.partition(_SHARED)[0] + resources.files("secmw.ratelimit").joinpath(
    "lease.lua"
).read_text(encoding="utf-8")


@dataclass(slots=True)
class Lease:
    """Units of one key this process may spend, and Redis's view when they were leased."""

    hit: LimitHit  # the limit leased (its key, amount and window)
    units: int
    state: State  # the window after the lease was charged
    taken: float  # local clock (s) when the lease call was sent: never later than Redis's
    expires: float  # local clock (s): the end of the window the units belong to
    stamp: int  # Redis time (ms) the units were charged at (gives moving-window units back)


def lease_call(
    strategy: Strategy, hits: Sequence[LimitHit], want: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the lease script asking ``want`` units (at least each hit's cost)."""
    keys, _ = script_call(strategy, hits, False)
    args: list[Any] = ["l", strategy]
    for hit in hits:
        args += [hit.amount, hit.window_ms, hit.cost, max(want, hit.cost)]
    return keys, args


def give_back_call(strategy: Strategy, lease: Lease) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the lease script giving back the unused units of ``lease``."""
    keys, _ = script_call(strategy, [lease.hit], False)
    hit = lease.hit
    return keys, ["g", strategy, hit.amount, hit.window_ms, lease.units, lease.stamp]


def lifetime_ms(strategy: Strategy, hit: LimitHit, state: State) -> int:
    """How long leased units belong to their window: to the fixed window's end, one window
    (moving: the units then leave Redis's window), or until the sliding window's current counter
    becomes the previous one."""
    if strategy == "fixed-window":
        return state[1]
    if strategy == "moving-window":
        return hit.window_ms
    return max(0, state[3] - hit.window_ms)


def local_state(strategy: Strategy, lease: Lease, elapsed_ms: int) -> State:
    """The window as this process sees it: Redis's at the lease, its unused units not spent,
    times moved on by ``elapsed_ms``."""
    state = lease.state
    if strategy == "fixed-window":
        return (state[0] - lease.units, max(0, state[1] - elapsed_ms))
    if strategy == "moving-window":
        return (state[0] - lease.units, state[1] + elapsed_ms)
    previous, previous_ttl, current, current_ttl = state
    return (
        previous,
        max(0, previous_ttl - elapsed_ms),
        current - lease.units,
        max(0, current_ttl - elapsed_ms),
    )


class Leases:
    """A process's leases per key: the accounting, without I/O. Thread-safe (its lock is never
    held across I/O); at most ``max_keys`` keys, the oldest forgotten first (their units stay
    charged: the safe side)."""

    def __init__(
        self,
        strategy: Strategy,
        size: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.strategy: Strategy = strategy
        self.size = size
        self.clock = clock
        self._max_keys = max_keys
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def spend(self, hits: Sequence[LimitHit]) -> Outcome | None:
        """Admit from the leases when each hit's has its cost left (taken), else None."""
        now = self.clock()
        with self._lock:
            found = [self._leases.get(hit.key) for hit in hits]
            for hit, lease in zip(hits, found, strict=True):
                if lease is None or lease.units < hit.cost or lease.expires <= now:
                    return None
            states = []
            for hit, lease in zip(hits, found, strict=True):
                assert lease is not None
                lease.units -= hit.cost
                states.append(local_state(self.strategy, lease, int((now - lease.taken) * 1000)))
        return Outcome(True, tuple(states))

    def record(self, hits: Sequence[LimitHit], reply: Any, taken: float) -> Outcome:
        """Keep the leases of a lease script's ``reply`` (call sent at ``taken``) and spend this
        request's cost from them; the Outcome is Redis's answer (a refusal charged nothing)."""
        leased, stamp, units, states = _parse(self.strategy, hits, reply)
        if not leased:
            return Outcome(False, states)
        now = self.clock()
        spent = []
        with self._lock:
            for hit, count, state in zip(hits, units, states, strict=True):
                expires = taken + lifetime_ms(self.strategy, hit, state) / 1000
                lease = Lease(hit, count - hit.cost, state, taken, expires, stamp)
                self._leases.pop(hit.key, None)  # a leftover below the cost stays charged
                self._leases[hit.key] = lease
                spent.append(local_state(self.strategy, lease, int((now - taken) * 1000)))
            while len(self._leases) > self._max_keys:
                del self._leases[next(iter(self._leases))]
        return Outcome(True, tuple(spent))

    def refund(self, hits: Sequence[LimitHit]) -> bool:
        """Put a refunded request's units back into its leases (True), unless one has expired
        or is gone (False: give them back to Redis)."""
        now = self.clock()
        with self._lock:
            found = [self._leases.get(hit.key) for hit in hits]
            if any(lease is None or lease.expires <= now for lease in found):
                return False
            for hit, lease in zip(hits, found, strict=True):
                assert lease is not None
                lease.units += hit.cost
        return True

    def drain(self) -> list[Lease]:
        """Forget every lease; the unexpired ones with units left, to give back."""
        now = self.clock()
        with self._lock:
            leases, self._leases = self._leases, {}
        return [lease for lease in leases.values() if lease.units > 0 and lease.expires > now]


def _parse(
    strategy: Strategy, hits: Sequence[LimitHit], reply: Any
) -> tuple[bool, int, list[int], tuple[State, ...]]:
    width = STATE_WIDTH[strategy]
    try:
        values = [int(value) for value in reply]
    except (TypeError, ValueError):
        raise StorageFailure("unexpected reply from the lease script") from None
    count = len(hits)
    if len(values) != 2 + count + width * count:
        raise StorageFailure("unexpected reply from the lease script")
    base = 2 + count
    states = tuple(tuple(values[base + i * width : base + (i + 1) * width]) for i in range(count))
    return values[0] == 1, values[1], values[2 : 2 + count], states
