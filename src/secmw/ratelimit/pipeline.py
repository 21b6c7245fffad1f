"""Pipelined rate-limit script calls: requests that need Redis while a round trip is on the wire
share the next one.

One batch at a time is on the wire per pipeline (one pipeline per process on the sync side, per
event loop on the async side). A caller that finds the pipeline idle sends its own call at once,
as an unpipelined call would: no added latency when requests do not overlap. Callers arriving
while a batch is on the wire queue; when that batch's replies are in, the first queued caller is
handed the baton and sends everything queued as one pipeline of ``EVALSHA``, reading one reply
per call, in order. Redis runs the scripts one after the other, as it would have run separate
round trips, so each caller gets the answer its own call would have had.

Failures stay per call: an error reply (``NOSCRIPT``, a script error on one key) goes to that
call alone, and the caller handles it as it would unpipelined; a connection failure or a timeout
fails the calls of that batch and those queued behind it (they would meet the same Redis). Each
call has one deadline, waiting in the queue included: a sync caller waits for its answer or the
baton until its deadline, and a batch is read within the nearest deadline of the calls in it (on
the async side a caller's deadline cancels its wait, and a batch shares the deadline of the
caller that sends it, the oldest in it). A caller whose call was not sent leaves the queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

from secmw.ratelimit.script import LUA, packed_call

SHA = hashlib.sha1(LUA.encode("utf-8"), usedforsecurity=False).hexdigest()
"""The rate-limit script's SHA1, as ``EVALSHA`` names it."""

_PENDING: Any = object()


class _Call:
    """One caller's ``EVALSHA``: its KEYS and ARGV, its deadline (sync), then its reply (or
    error), and how it is woken: a lock it blocks on (sync) or a future (async)."""

    __slots__ = ("args", "deadline", "keys", "lead", "reply", "signal")

    def __init__(self, keys: list[str], args: list[Any], deadline: float = 0.0) -> None:
        self.keys = keys
        self.args = args
        self.deadline = deadline
        self.reply: Any = _PENDING
        self.lead = False  # handed the baton: send what is queued
        self.signal: Any = None

    def result(self) -> Any:
        reply = self.reply
        if isinstance(reply, BaseException):
            raise reply
        return reply


class _Batching:
    """What both sides share: the queue, the baton and the counters."""

    def __init__(self, pool: Any, sha: str, error_reply: type[Exception]) -> None:
        self._pool = pool
        self._sha = sha
        self._error_reply = error_reply  # redis-py's ResponseError: one call's error reply
        self._packed: dict[tuple[Any, ...], Any] = {}
        self._queue: list[_Call] = []
        self._busy = False
        self.flushes = 0
        """Round trips sent (one batch each)."""
        self.calls = 0
        """Script calls sent."""

    def _take(self) -> list[_Call]:
        batch, self._queue = self._queue, []
        self.flushes += 1
        self.calls += len(batch)
        return batch

    def _pack(self, connection: Any, batch: list[_Call]) -> list[Any]:
        chunks: list[Any] = []
        for call in batch:
            chunks += packed_call(self._packed, connection, self._sha, call.keys, call.args)
        return chunks

    def _strand(self) -> list[_Call]:
        """The calls queued behind a batch whose connection failed or timed out: they would meet
        the same Redis, so they fail with it now instead of each sending in turn (a new
        connection to a frozen Redis would hold them past their deadlines)."""
        stranded, self._queue = self._queue, []
        return stranded

    def _next_leader(self) -> _Call | None:
        """The caller to hand the baton to (None: the pipeline is idle again)."""
        if not self._queue:
            self._busy = False
            return None
        call = self._queue[0]
        call.lead = True
        return call


class Pipeline(_Batching):
    """The sync pipeline, shared by the threads of one process.

    Args:
        pool: redis-py's connection pool of the plain client.
        sha: The script's SHA1.
        error_reply: redis-py's ``ResponseError`` (an error reply ends one call only).
    """

    def __init__(self, pool: Any, sha: str, error_reply: type[Exception]) -> None:
        super().__init__(pool, sha, error_reply)
        self._mutex = threading.Lock()

    def call(self, keys: list[str], args: list[Any], deadline: float) -> Any:
        """The reply of ``EVALSHA sha len(keys) *keys *args`` before ``deadline``
        (``time.monotonic``); raises what that call raised (TimeoutError past the deadline)."""
        call = _Call(keys, args, deadline)
        with self._mutex:
            self._queue.append(call)
            lead = not self._busy
            self._busy = True
            if not lead:
                call.signal = threading.Lock()
                call.signal.acquire()
        if not lead and not self._woken(call):
            return call.result()
        self._lead()
        return call.result()

    def _woken(self, call: _Call) -> bool:
        """Wait for the answer (False) or the baton (True)."""
        if not call.signal.acquire(timeout=max(0.0, call.deadline - time.monotonic())):
            with self._mutex:
                if not call.lead and call.reply is _PENDING:
                    if call in self._queue:  # never sent: nothing was charged
                        self._queue.remove(call)
                    call.reply = TimeoutError("no rate-limit reply within the deadline")
        return call.lead

    def _lead(self) -> None:
        with self._mutex:
            batch = self._take()
        broken: Exception | None = None
        try:
            broken = self._send(batch)
        finally:
            with self._mutex:
                stranded = self._strand() if broken is not None else []
                leader = self._next_leader()
            if broken is not None:
                self._fail(stranded, broken)
            if leader is not None:
                leader.signal.release()

    def _send(self, batch: list[_Call]) -> Exception | None:
        """Send ``batch`` and answer its calls; the exception that failed the whole batch."""
        try:
            connection = self._pool.get_connection()
        except Exception as exc:
            self._fail(batch, exc)
            return exc
        try:
            # The nearest deadline bounds the batch: no caller in it waits past its own.
            within(connection, min(call.deadline for call in batch))
            connection.send_packed_command(self._pack(connection, batch), check_health=False)
            for call in batch:
                try:
                    reply = connection.read_response()
                except self._error_reply as exc:  # this call's error reply; the rest stand
                    reply = exc
                self._answer(call, reply)
        except Exception as exc:  # redis-py dropped the connection: the batch's rest fails
            self._fail(batch, exc)
            return exc
        finally:
            within(connection, None)
            self._pool.release(connection)
        return None

    def _answer(self, call: _Call, reply: Any) -> None:
        with self._mutex:
            if call.reply is _PENDING:
                call.reply = reply
                if call.signal is not None and not call.lead:  # a leader is not waiting
                    call.signal.release()

    def _fail(self, batch: list[_Call], exc: Exception) -> None:
        for call in batch:
            self._answer(call, exc)


class AsyncPipeline(_Batching):
    """The async pipeline of one event loop (same arguments as :class:`Pipeline`; a caller's
    deadline cancels its wait)."""

    def __init__(self, pool: Any, sha: str, error_reply: type[Exception]) -> None:
        super().__init__(pool, sha, error_reply)

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        """The reply of ``EVALSHA sha len(keys) *keys *args``; raises what that call raised."""
        call = _Call(keys, args)
        self._queue.append(call)
        if self._busy:
            call.signal = asyncio.get_running_loop().create_future()
            try:
                await call.signal
            except asyncio.CancelledError:  # the caller's deadline
                self._abandon(call)
                raise
            if not call.lead:
                return call.result()
        self._busy = True
        batch = self._take()
        broken: Exception | None = None
        try:
            broken = await self._send(batch)
        finally:
            if broken is not None:
                self._fail(self._strand(), broken)
            self._pass_baton()
        return call.result()

    def _abandon(self, call: _Call) -> None:
        if call.lead:  # handed the baton as the deadline struck: pass it on
            self._queue.remove(call)
            self._pass_baton()
        elif call in self._queue:  # never sent: nothing was charged
            self._queue.remove(call)

    def _pass_baton(self) -> None:
        leader = self._next_leader()
        if leader is not None and not leader.signal.done():
            leader.signal.set_result(None)

    async def _send(self, batch: list[_Call]) -> Exception | None:
        """Send ``batch`` and answer its calls; the exception that failed the whole batch."""
        try:
            connection = await self._pool.get_connection()
        except Exception as exc:
            self._fail(batch, exc)
            return exc
        try:
            await connection.send_packed_command(self._pack(connection, batch), check_health=False)
            for call in batch:
                try:
                    reply = await connection.read_response()
                except self._error_reply as exc:  # this call's error reply; the rest stand
                    reply = exc
                self._answer(call, reply)
        except Exception as exc:  # redis-py dropped the connection: the batch's rest fails
            self._fail(batch, exc)
            return exc
        except asyncio.CancelledError:  # the sender's deadline: its batch shares it
            self._fail(batch, TimeoutError("no rate-limit reply within the deadline"))
            raise
        finally:
            await self._pool.release(connection)
        return None

    def _answer(self, call: _Call, reply: Any) -> None:
        if call.reply is _PENDING:
            call.reply = reply
            if call.signal is not None and not call.signal.done():
                call.signal.set_result(None)

    def _fail(self, batch: list[_Call], exc: Exception) -> None:
        for call in batch:
            self._answer(call, exc)


def pipeline_for(plain: Any, *, sync: bool) -> Any:
    """The pipeline of a plain client's pool (``script.direct``'s answer, the pool and its
    NOSCRIPT error): a :class:`Pipeline` when ``sync``, else an :class:`AsyncPipeline`; None
    for a client that runs the script through ``Script`` (cluster, valkey)."""
    if plain is None:
        return None
    pool, no_script = plain
    error_reply = no_script.__mro__[1]  # redis-py's ResponseError, NOSCRIPT's base
    return Pipeline(pool, SHA, error_reply) if sync else AsyncPipeline(pool, SHA, error_reply)


def within(connection: Any, deadline: float | None) -> None:
    """Bound a sync connection's socket operations by ``deadline`` (``time.monotonic``; None:
    back to its own timeout). Raises TimeoutError when the deadline has passed."""
    sock = getattr(connection, "_sock", None)
    if deadline is None:
        if sock is not None:
            sock.settimeout(connection.socket_timeout)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("rate-limit storage deadline passed")
    if sock is not None:
        sock.settimeout(left)
