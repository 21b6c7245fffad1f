"""The leased mode's storage edge: Redis windows that admit from leases (sync and async twins).

:func:`use_leases` puts them in front of a limiter's Redis windows when
``rate_limit.mode=leased``; the limiter's breaker and ``on_storage_error`` policy stay around
them, so a Redis failure is handled as in exact mode (while Redis is down, unexpired leases
keep admitting). The accounting is :class:`secmw.ratelimit.lease.Leases`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from secmw.ratelimit.astorage import AsyncRedisWindows
from secmw.ratelimit.lease import LEASE_LUA, Lease, Leases, give_back_call, lease_call
from secmw.ratelimit.script import groups, merge
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import LimitHit, Outcome


class _Flight:
    """A lease call in flight: what the callers needing the same keys wait on, and its refusal
    (a refusal answers them too: Redis had no room an instant ago)."""

    __slots__ = ("keys", "refusal", "signal")

    def __init__(self, keys: tuple[str, ...], signal: Any) -> None:
        self.keys = keys
        self.signal = signal
        self.refusal: Outcome | None = None

    def answer(self, keys: tuple[str, ...]) -> Outcome | None:
        """The refusal, for a caller charged against the same keys."""
        return self.refusal if keys == self.keys else None


class _Leasing:
    """What both twins share: the leases, the lease calls in flight, the script's client."""

    def __init__(self, remote: Any, settings: RateLimitSettings) -> None:
        self.remote = remote
        self.strategy = remote.strategy
        self.leases = Leases(settings.strategy, settings.lease_slice, settings.memory_max_keys)
        self.clustered = remote.clustered
        self.node = remote.node  # the node a key lives on, for the breakers (``RemoteNodes``)
        self._client: Any = None
        self._script: Any = None
        # One lease call in flight per key and process: what bounds the overshoot (lease.py).
        self._flights: dict[str, _Flight] = {}

    def _claim(self, hits: Sequence[LimitHit], flight: _Flight) -> _Flight | None:
        """Register ``flight`` for every key of ``hits`` (None), or the flight already there."""
        for hit in hits:
            other = self._flights.get(hit.key)
            if other is not None:
                return other
        for hit in hits:
            self._flights[hit.key] = flight
        return None

    def _land(self, hits: Sequence[LimitHit]) -> None:
        for hit in hits:
            self._flights.pop(hit.key, None)

    def _script_of(self, client: Any) -> Any:
        if self._client is not client:  # a new client (reconnected, another loop)
            self._client, self._script = client, client.register_script(LEASE_LUA)
        return self._script

    def _calls(self, hits: Sequence[LimitHit]) -> list[tuple[list[LimitHit], Any]]:
        size = self.leases.size
        return [
            (group, lease_call(self.strategy, group, size))
            for group in groups(hits, self.clustered)
        ]


class LeasedWindows(_Leasing):
    """Sync Redis windows admitting from leases, in front of ``RedisWindows``."""

    def __init__(self, remote: Any, settings: RateLimitSettings) -> None:
        super().__init__(remote, settings)
        self._mutex = threading.Lock()
        self._wait = settings.command_timeout  # one deadline, connect included

    def connect(self) -> None:
        """Connect the Redis windows (see ``RedisWindows.connect``)."""
        self.remote.connect()

    def close(self) -> None:
        """Give the unused units back, then close the client."""
        self.give_back()
        self.remote.close()

    def apply(
        self, hits: Sequence[LimitHit], *, charging: bool = True, carried: Sequence[LimitHit] = ()
    ) -> Outcome:
        """Admit from the leases, else lease; a look without charging asks Redis. Units admitted
        from memory during an outage (``carried``, once per key) are charged to Redis first."""
        if not charging:
            return self.remote.apply(hits, charging=False)  # type: ignore[no-any-return]
        if carried:
            self.remote.apply(hits, charging=False, carried=carried)
        keys = tuple(hit.key for hit in hits)
        deadline = self.leases.clock() + self._wait
        while True:
            outcome = self.leases.spend(hits)
            if outcome is not None:
                return outcome
            mine = _Flight(keys, threading.Event())
            with self._mutex:
                other = self._claim(hits, mine)
            if other is None:
                try:
                    outcome = self._lease(hits)
                    mine.refusal = None if outcome.admitted else outcome
                    return outcome
                finally:
                    with self._mutex:
                        self._land(hits)
                    mine.signal.set()
            left = deadline - self.leases.clock()
            if left <= 0 or not other.signal.wait(left):
                raise TimeoutError("no lease within the deadline")
            refused = other.answer(keys)
            if refused is not None:
                return refused

    def _lease(self, hits: Sequence[LimitHit]) -> Outcome:
        self.remote.connect()
        script = self._script_of(self.remote._clients[0])
        taken = self.leases.clock()
        parts = [
            (group, self.leases.record(group, script(*call), taken))
            for group, call in self._calls(hits)
        ]
        return parts[0][1] if len(parts) == 1 else merge(parts, hits)

    def refund(self, hits: Sequence[LimitHit]) -> None:
        """Put the units back into the leases, or give them back to Redis."""
        if not self.leases.refund(hits):
            self.remote.refund(hits)

    def give_back(self) -> None:
        """Give every unused, unexpired leased unit back to Redis (stops at the first error:
        the rest stay charged until their windows end)."""
        leases = self.leases.drain()
        if not leases or self._script is None:
            return
        try:
            for lease in leases:
                self._script(*give_back_call(self.strategy, lease))
        except Exception:  # Redis is gone: the units expire with their windows
            return


class AsyncLeasedWindows(_Leasing):
    """Async twin of :class:`LeasedWindows`, in front of ``AsyncRedisWindows``; lease calls are
    bounded by the same deadline as the script's."""

    def __init__(self, remote: Any, settings: RateLimitSettings) -> None:
        super().__init__(remote, settings)
        self._deadline = settings.command_timeout  # one deadline, connect included

    async def aclose(self) -> None:
        """Give the unused units back, then close the clients."""
        await self.give_back()
        await self.remote.aclose()

    async def apply(
        self, hits: Sequence[LimitHit], *, charging: bool = True, carried: Sequence[LimitHit] = ()
    ) -> Outcome:
        """Async twin of :meth:`LeasedWindows.apply`."""
        if not charging:
            return await self.remote.apply(hits, charging=False)  # type: ignore[no-any-return]
        if carried:
            await self.remote.apply(hits, charging=False, carried=carried)
        keys = tuple(hit.key for hit in hits)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        while True:
            outcome = self.leases.spend(hits)
            if outcome is not None:
                return outcome
            mine = _Flight(keys, loop.create_future())
            other = self._claim(hits, mine)
            if other is None:
                try:  # a lease call is one request in ``slice``: a task per call is affordable
                    outcome = await asyncio.wait_for(self._lease(hits), self._deadline)
                    mine.refusal = None if outcome.admitted else outcome
                    return outcome
                finally:
                    self._land(hits)
                    mine.signal.set_result(None)
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no lease within the deadline")
            await asyncio.wait_for(asyncio.shield(other.signal), left)
            refused = other.answer(keys)
            if refused is not None:
                return refused

    async def _lease(self, hits: Sequence[LimitHit]) -> Outcome:
        remote = self.remote
        loop = asyncio.get_running_loop()
        if remote._loop is not loop:  # the client of this loop, as ``AsyncRedisWindows.apply``
            remote._connect(loop)
        await remote._wait_ready()
        script = self._script_of(remote._clients[0])
        taken = self.leases.clock()
        parts = [
            (group, self.leases.record(group, await script(*call), taken))
            for group, call in self._calls(hits)
        ]
        return parts[0][1] if len(parts) == 1 else merge(parts, hits)

    async def refund(self, hits: Sequence[LimitHit]) -> None:
        """Put the units back into the leases, or give them back to Redis."""
        if not self.leases.refund(hits):
            await self.remote.refund(hits)

    async def give_back(self) -> None:
        """Async twin of :meth:`LeasedWindows.give_back`."""
        leases = self.leases.drain()
        if not leases or self._script is None:
            return
        try:
            await asyncio.wait_for(self._give(leases), self._deadline)
        except Exception:  # Redis is gone: the units expire with their windows
            return

    async def _give(self, leases: list[Lease]) -> None:
        for lease in leases:
            await self._script(*give_back_call(self.strategy, lease))


def use_leases(limiter: Any, settings: RateLimitSettings) -> Any:
    """Put leased windows in front of ``limiter``'s Redis windows when the mode is ``leased``
    (nothing to do on memory storage, or in exact mode); returns ``limiter``."""
    remote = limiter.remote
    if settings.mode == "leased" and remote is not None:
        if isinstance(remote, AsyncRedisWindows):
            limiter.remote = AsyncLeasedWindows(remote, settings)
        else:
            limiter.remote = LeasedWindows(remote, settings)
    return limiter
