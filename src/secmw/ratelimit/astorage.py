"""The rate-limit storage edge (async twin of :mod:`secmw.ratelimit.storage`) for the ASGI adapters.

Redis is reached through ``limits.aio`` (redis-py's asyncio client), so no call blocks the event
loop; each call, connect included, is capped by one deadline (``command_timeout``). The
in-memory storage is the same object as on the sync side: its operations are short, pure CPU
work under a lock never held across an ``await``, so they run inline.
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
    MapRefresh,
    NodeFailure,
    carry_call,
    clients_of,
    direct,
    groups,
    limits_error,
    merge,
    node_of,
    parse_reply,
    redis_options,
    refreshing,
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

    Every call runs under one deadline (``command_timeout``) covering all of it: waiting for
    the slot map, taking or opening a connection, sending and reading. With redis-py's plain
    client (one server, or Sentinel), the script runs as ``EVALSHA`` on a connection of the
    client's pool, packed once per distinct call (``packed_call``). redis-py's command layer
    (retries, which are off here) and its per-command timeouts (which the deadline replaces)
    would be a large share of the rate limiter's CPU on Redis (docs/performance.md). Cluster
    and valkey clients go through the library's ``Script`` object."""

    def __init__(self, settings: RateLimitSettings) -> None:
        import limits.aio.storage  # noqa: F401  (registers the async+ schemes)

        self.strategy: Strategy = settings.strategy
        uri = settings.storage_uri.get_secret_value()
        self._uri = "async+" + uri
        self._options = redis_options(settings, uri, asyncio=True)
        self.clustered = scheme_of(uri).endswith("+cluster")
        if not self.clustered:
            # The deadline bounds every call; redis-py's own command timeout would add a task
            # (``wait_for``) and two timers per command, for nothing.
            # The cluster client keeps it: its slot-map read runs in a task outside the deadline.
            self._options["socket_timeout"] = None
        self._deadline = settings.command_timeout
        self._clients: list[Any] = []  # the script's client first (``clients_of``)
        self._script: Any = None
        self._direct: Direct | None = None  # the plain client's pool and NOSCRIPT error
        self._owners: dict[int, str] = {}  # slot -> its last known master (``node_of``)
        self._pipeline: AsyncPipeline | None = None  # secmw.ratelimit.pipeline, per loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Task[Any] | None = None  # the cluster's first slot-map read
        self._refresh: asyncio.Task[Any] | None = None  # a later one
        self._nodes = ClusterNodes()
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
        self._pipeline = pipeline_for(self._direct, sync=False)
        self._loop = loop
        # A cluster client reads the slot map on first use; requests racing that first read lose
        # connections under it (redis-py asyncio), so every call waits for one explicit read.
        self._ready = loop.create_task(client.initialize()) if self.clustered else None
        self._nodes.changing = self.clustered  # note the nodes after the first answer

    def node(self, key: str) -> str:
        """The cluster node ``key`` lives on (``""`` off a cluster, or before the slot map is
        known)."""
        if not (self.clustered and self._clients):
            return ""
        return node_of(self._clients[0], key, self._owners)

    async def apply(
        self, hits: Sequence[LimitHit], *, charging: bool = True, carried: Sequence[LimitHit] = ()
    ) -> Outcome:
        """Charge ``carried`` (units admitted from memory meanwhile), then run the script, all
        within the deadline; raises on any storage error (:class:`NodeFailure` on a cluster)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._connect(loop)
        try:
            if _timeout is None:  # pragma: no cover (Python 3.10)
                return await asyncio.wait_for(self._apply(hits, charging, carried), self._deadline)
            async with _timeout(self._deadline):  # no task per call, unlike wait_for
                return await self._apply(hits, charging, carried)
        except TimeoutError:
            if self._ready is not None and not self._ready.done():
                raise MapRefresh from None  # the call waited for the slot map, not its node
            raise

    async def _apply(
        self, hits: Sequence[LimitHit], charging: bool, carried: Sequence[LimitHit]
    ) -> Outcome:
        await self._wait_ready()
        if carried:
            for group in groups(carried, self.clustered):
                await self._run(group, carry_call(self.strategy, group))
        parts = groups(hits, self.clustered)
        if len(parts) == 1:
            return await self._call(parts[0], charging)
        outcomes = await asyncio.gather(*(self._call(group, charging) for group in parts))
        return merge(zip(parts, outcomes, strict=True), hits)

    async def _wait_ready(self) -> None:
        """Wait for the cluster client's first slot-map read; start a refresh the client asked
        for (after an error) in a task of its own, not awaited: calls go on with the current
        map, and a refresh run inside a call would be cut short by the call's deadline and
        start over in the next one (under load, maybe forever)."""
        ready = self._ready
        if ready is None or ready.done():
            refresh = self._refresh
            client = self._clients[0] if self.clustered else None
            if client is not None and refreshing(client) and (refresh is None or refresh.done()):
                self._refresh = asyncio.get_running_loop().create_task(client.initialize())
                self._refresh.add_done_callback(_settled)
                await asyncio.sleep(0)  # it takes the client's lock: this call will not refresh
        if ready is None:
            return
        try:
            await asyncio.shield(ready)
        except Exception:
            if self._ready is ready:
                # The slot map could not be read: a new client next time, this one closed.
                self._loop = None
                self._nodes.retire(self._clients)
            raise

    async def _call(self, group: list[LimitHit], charging: bool) -> Outcome:
        reply = await self._run(group, script_call(self.strategy, group, charging))
        return parse_reply(self.strategy, group, reply)

    async def _run(self, group: list[LimitHit], call: tuple[list[str], list[Any]]) -> Any:
        plain = self._direct
        if plain is not None:
            return await self._evalsha(plain, *call)
        if not self.clustered:
            return await self._script(*call)
        key, client = group[0].key, self._clients[0]
        node = self.node(key)
        try:
            reply = await self._script(*call)
        except Exception as exc:
            self._nodes.changing = True  # the client reads a new slot map on its next call
            raise NodeFailure(node, key, exc) from exc
        if self._nodes.changing:
            self._nodes.track(client)
        return reply

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
        await self._wait_ready()
        for group in groups(hits, self.clustered):
            await self._run(group, refund_call(self.strategy, group))

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
        """Close the clients' connections, and those of every cluster node the client dropped
        from its map meanwhile (call on the loop that used them)."""
        clients, self._clients, self._script, self._loop = self._clients, [], None, None
        self._direct = self._pipeline = None
        for task in (self._ready, self._refresh):
            if task is not None and not task.done():
                task.cancel()
        self._ready = self._refresh = None
        for client in clients:
            await client.aclose()
        await self._nodes.aclose()


def _settled(task: asyncio.Task[Any]) -> None:
    """Retrieve a background refresh's outcome (a failed one is asked for again by the client)."""
    if not task.cancelled():
        task.exception()


class ClusterNodes:
    """Every node object an asyncio cluster client held, so that none is left with open
    connections: after a failure the client drops the failed node from its startup nodes and
    reads a new slot map, and a node object it lets go while a connection of it is still open
    (a call cut short by the deadline) is never closed ("Unclosed ClusterNode object")."""

    def __init__(self) -> None:
        self.changing = False
        self._held: dict[int, Any] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    def track(self, client: Any) -> None:
        """Note the client's nodes now; close those it let go of since the last look."""
        self.changing = False
        manager = client.nodes_manager
        now = {id(node): node for node in manager.nodes_cache.values()}
        now.update((id(node), node) for node in manager.startup_nodes.values())
        for key, node in self._held.items():
            if key not in now:
                self._background(node.disconnect())
        self._held = now

    def retire(self, clients: list[Any]) -> None:
        """Close ``clients``, replaced by new ones (in the background: a call is under way)."""
        for client in clients:
            self._background(client.aclose())

    def _background(self, closing: Any) -> None:
        task = asyncio.get_running_loop().create_task(closing)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every node still held, and wait for the closings under way."""
        held, self._held = list(self._held.values()), {}
        closing = [*self._closing, *(node.disconnect() for node in held)]
        await asyncio.gather(*closing, return_exceptions=True)


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
        remote = self.remote
        if remote is None:
            return self.memory.apply(hits, charging=charging)
        breakers = self.closed(hits)
        if breakers is not None:
            started = time.perf_counter()
            carried = self.carried(hits)
            try:
                outcome = await remote.apply(hits, charging=charging, carried=carried)
            except Exception as exc:  # a timeout, a refused connection, a cluster error...
                self.failed(started, exc, hits, carried)
            else:
                self.answered(started, breakers, hits, outcome, carried)
                return outcome
        return self.fallback(hits, charging)

    async def refund(self, hits: Sequence[LimitHit]) -> None:
        """Give back the units of ``hits``; same answers as ``Limiter.refund``."""
        remote = self.remote
        if remote is None:
            self.memory.refund(hits)
            return
        breakers = self.closed(hits)
        if breakers is not None:
            started = time.perf_counter()
            try:
                await remote.refund(hits)
            except Exception as exc:  # a timeout, a refused connection, a cluster error...
                self.failed(started, exc, hits, ())
            else:
                self.answered(started, breakers)
            return
        self.fallback_refund(hits)

    async def aclose(self) -> None:
        """Close the Redis client, if any."""
        if self.remote is not None:
            await self.remote.aclose()
