"""The rate-limit storage edge (async twin of :mod:`secmw.ratelimit.storage`) for the ASGI adapters.

Redis is reached through ``limits.aio`` (redis-py's asyncio client), so no call blocks the event
loop; each call is also capped by ``connect_timeout + command_timeout``. The in-memory storage is
the same object as on the sync side: its operations are short, pure CPU work under a lock never
held across an ``await``, so they run inline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.storage import storage_from_string

from secmw.core.deny import Deny
from secmw.ratelimit.pipeline import AsyncPipeline, pipeline_for
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
from secmw.ratelimit.storage import Fallback
from secmw.ratelimit.windows import LimitHit, Outcome, Strategy

_timeout: Any = getattr(asyncio, "timeout", None)  # Python 3.11+


class AsyncRedisWindows:
    """Rate-limit windows in Redis through ``limits.aio``; one script call per request (per
    identity in a cluster, concurrently). The client is built lazily on the running loop and
    rebuilt if the loop changes (a client's connections belong to one loop).

    With redis-py's plain client (one server, or Sentinel), the script runs as ``EVALSHA`` on a
    connection of the client's pool, packed once per distinct call (``packed_call``). redis-py's
    command layer (retries, which are off here) and its per-command timeouts (which ``apply``'s
    deadline replaces) would be a large share of the rate limiter's CPU on Redis
    (docs/performance.md). Cluster and valkey clients go through the library's ``Script``
    object."""

    def __init__(self, settings: RateLimitSettings) -> None:
        import limits.aio.storage  # noqa: F401  (registers the async+ schemes)

        self.strategy: Strategy = settings.strategy
        uri = settings.storage_uri.get_secret_value()
        self._uri = "async+" + uri
        self._options = redis_options(settings, uri, asyncio=True)
        self._clustered = scheme_of(uri).endswith("+cluster")
        if not self._clustered:
            # ``apply`` bounds every call with one deadline; redis-py's own command timeout would
            # add a task (``wait_for``) and two timers per command, for nothing.
            # The cluster client keeps it: its slot-map read runs in a task outside the deadline.
            self._options["socket_timeout"] = None
        self._deadline = settings.connect_timeout + settings.command_timeout
        self._clients: list[Any] = []  # the script's client first (``clients_of``)
        self._script: Any = None
        self._direct: Direct | None = None  # the plain client's pool and NOSCRIPT error
        self._pipeline: AsyncPipeline | None = None  # secmw.ratelimit.pipeline, per loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Task[Any] | None = None
        self.check()

    def check(self) -> None:
        """Build a client once, so a missing client library fails at startup."""
        try:
            self._build()
        except LimitsConfigurationError as exc:
            raise limits_error(exc) from None

    def _build(self) -> Any:
        return storage_from_string(self._uri, **self._options)

    def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        storage: Any = self._build()
        client = storage.bridge.get_connection()
        self._clients = clients_of(storage.bridge, client)
        self._script = client.register_script(LUA)
        self._direct = direct(client)
        self._pipeline = pipeline_for(self._direct, wait=None)
        self._loop = loop
        # A cluster client reads the slot map on first use; requests racing that first read lose
        # connections under it (redis-py asyncio), so every call waits for one explicit read.
        self._ready = loop.create_task(client.initialize()) if self._clustered else None

    async def apply(self, hits: Sequence[LimitHit], *, charging: bool = True) -> Outcome:
        """Run the script within the deadline; raises on any storage error."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._connect(loop)
        if _timeout is None:  # pragma: no cover (Python 3.10)
            return await asyncio.wait_for(self._apply(hits, charging), self._deadline)
        async with _timeout(self._deadline):  # no task per call, unlike wait_for
            return await self._apply(hits, charging)

    async def _apply(self, hits: Sequence[LimitHit], charging: bool) -> Outcome:
        ready = self._ready
        if ready is not None:
            try:
                await asyncio.shield(ready)
            except Exception:
                if self._ready is ready:
                    self._loop = None  # the slot map could not be read: a new client next time
                raise
        parts = groups(hits, self._clustered)
        if len(parts) == 1:
            return await self._call(parts[0], charging)
        outcomes = await asyncio.gather(*(self._call(group, charging) for group in parts))
        return merge(zip(parts, outcomes, strict=True), hits)

    async def _call(self, group: list[LimitHit], charging: bool) -> Outcome:
        keys, args = script_call(self.strategy, group, charging)
        plain = self._direct
        if plain is None:
            reply = await self._script(keys, args)
        else:
            reply = await self._evalsha(plain, keys, args)
        return parse_reply(self.strategy, group, reply)

    async def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits`` within the deadline; raises on any storage error."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._connect(loop)
        if _timeout is None:  # pragma: no cover (Python 3.10)
            await asyncio.wait_for(self._refund(hits), self._deadline)
            return
        async with _timeout(self._deadline):
            await self._refund(hits)

    async def _refund(self, hits: Sequence[LimitHit]) -> None:
        if self._ready is not None:
            await asyncio.shield(self._ready)
        for group in groups(hits, self._clustered):
            await self._script(*refund_call(self.strategy, group))

    async def _evalsha(self, plain: Direct, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, from ``EVALSHA`` through the loop's pipeline (calls of
        overlapping requests share a round trip). NOSCRIPT, after a Redis restart or failover,
        is left to ``Script``, which loads the script and runs it again."""
        assert self._pipeline is not None  # built with ``_direct``
        try:
            return await self._pipeline.call(keys, args)
        except plain[1]:
            pass
        return await self._script(keys, args)

    async def aclose(self) -> None:
        """Close the clients' connections (call on the loop that used them)."""
        clients, self._clients, self._script, self._loop = self._clients, [], None, None
        self._direct = self._pipeline = None
        ready, self._ready = self._ready, None
        if ready is not None and not ready.done():
            ready.cancel()
        for client in clients:
            await client.aclose()


class AsyncLimiter(Fallback):
    """The storage behind the ASGI adapters; same answers as
    :class:`secmw.ratelimit.storage.Limiter`."""

    def __init__(
        self, settings: RateLimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings, clock)
        self.remote: AsyncRedisWindows | None = None
        if not settings.storage_uri.get_secret_value().startswith("memory"):
            self.remote = AsyncRedisWindows(settings)

    async def apply(
        self, hits: Sequence[LimitHit], *, charging: bool = True
    ) -> Outcome | Deny | None:
        """Charge (or only check) ``hits``: an Outcome, None (``allow``) or a 503 Deny."""
        if self.remote is None:
            return self.memory.apply(hits, charging=charging)
        if self.breaker.allow():
            started = time.perf_counter()
            try:
                outcome = await self.remote.apply(hits, charging=charging)
            except Exception as exc:  # a timeout, a refused connection, a cluster error...
                self.failed(started, exc)
            else:
                self.answered(started)
                return outcome
        return self.fallback(hits, charging)

    async def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits``; same answers as ``Limiter.refund``."""
        if self.remote is None:
            self.memory.refund(hits)
            return
        if self.breaker.allow():
            started = time.perf_counter()
            try:
                await self.remote.refund(hits)
            except Exception as exc:  # a timeout, a refused connection, a cluster error...
                self.failed(started, exc)
            else:
                self.answered(started)
            return
        self.fallback_refund(hits)

    async def aclose(self) -> None:
        """Close the Redis client, if any."""
        if self.remote is not None:
            await self.remote.aclose()
