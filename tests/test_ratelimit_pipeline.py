"""Pipelined rate-limit calls on a real Redis: unpipelined answers, fewer round trips."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse

from secmw.ratelimit.astorage import AsyncRedisWindows
from secmw.ratelimit.script import LUA, parse_reply, script_call
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.storage import RedisWindows
from secmw.ratelimit.windows import LimitHit, Outcome, Strategy
from tests.redis_support import RedisServer

pytestmark = pytest.mark.redis

STRATEGIES: list[Strategy] = ["fixed-window", "moving-window", "sliding-window-counter"]
ITEM = parse("5/hour")
Call = tuple[int, int, bool]  # key number, cost, charging


@pytest.fixture
def own_redis(redis_process: RedisServer) -> RedisServer:
    """A Redis of this test alone (tests here pause it)."""
    return redis_process.start()


def hits(prefix: str, call: Call) -> list[LimitHit]:
    """The one limit a call is charged against."""
    key = f"{prefix}:{call[0]}"
    return [LimitHit("p", ITEM, key, key, call[1])]


def counts(strategy: Strategy, outcome: Outcome) -> tuple[Any, ...]:
    """What an answer says, without the times (two runs cannot share a clock)."""
    if strategy == "sliding-window-counter":
        return (outcome.admitted, *((s[0], s[2]) for s in outcome.states))
    return (outcome.admitted, *(s[0] for s in outcome.states))


def unpipelined(url: str, strategy: Strategy, calls: list[Call]) -> list[tuple[Any, ...]]:
    """The reference: one ``EVALSHA`` round trip per call, in order, with redis-py's client."""
    prefix = uuid.uuid4().hex
    with redis.Redis.from_url(url) as client:
        script = client.register_script(LUA)
        answers = []
        for call in calls:
            group = hits(prefix, call)
            reply = script(*script_call(strategy, group, call[2]))
            answers.append(counts(strategy, parse_reply(strategy, group, reply)))
    return answers


def windows_settings(url: str, strategy: Strategy) -> RateLimitSettings:
    return RateLimitSettings(storage_uri=url, strategy=strategy)


CALLS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(1, 3), st.booleans()), min_size=1, max_size=40
)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=8, deadline=None)
@given(calls=CALLS)
def test_async_pipelined_answers_equal_unpipelined(
    redis_url: str, strategy: Strategy, calls: list[Call]
) -> None:
    """Calls made on one loop in one tick share round trips and get, call by call, the answers
    of the same calls made one round trip each."""
    prefix = uuid.uuid4().hex
    windows = AsyncRedisWindows(windows_settings(redis_url, strategy))

    async def run() -> tuple[list[Outcome], Any]:
        await windows.apply(hits(prefix, (9, 1, False)), charging=False)  # connect
        try:
            tasks = [windows.apply(hits(prefix, call), charging=call[2]) for call in calls]
            return list(await asyncio.gather(*tasks)), windows._pipeline
        finally:
            await windows.aclose()

    outcomes, pipeline = asyncio.run(run())
    assert [counts(strategy, o) for o in outcomes] == unpipelined(redis_url, strategy, calls)
    # The first call goes alone; every call made while it is on the wire shares the next trip.
    assert pipeline.calls == len(calls) + 1
    assert pipeline.flushes == (2 if len(calls) == 1 else 3)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_threads_pipelined_answers_equal_unpipelined(redis_url: str, strategy: Strategy) -> None:
    """Threads of one process share round trips; each thread's calls (on its own key) get the
    answers of the same calls made one round trip each."""
    rng = random.Random(19)
    threads = 12
    sequences = [
        [(t, rng.randint(1, 3), rng.random() < 0.8) for _ in range(15)] for t in range(threads)
    ]
    windows = RedisWindows(windows_settings(redis_url, strategy))
    windows.connect()
    prefix = uuid.uuid4().hex
    answers: dict[int, list[tuple[Any, ...]]] = {}
    start = threading.Barrier(threads)

    def worker(number: int) -> None:
        start.wait()
        answers[number] = [
            counts(strategy, windows.apply(hits(prefix, call), charging=call[2]))
            for call in sequences[number]
        ]

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(30)
    windows.close()
    for number, sequence in enumerate(sequences):
        assert answers[number] == unpipelined(redis_url, strategy, sequence)
    pipeline = windows._pipeline
    assert pipeline is not None
    assert pipeline.calls == threads * 15


def test_threads_queued_behind_a_round_trip_share_the_next(own_redis: RedisServer) -> None:
    """While one thread's call is on the wire, the calls of 15 others queue and go as one
    pipeline: 16 calls, 2 round trips, 16 script runs in Redis."""
    settings_ = RateLimitSettings(storage_uri=own_redis.url, command_timeout=3)
    windows = RedisWindows(settings_)
    windows.connect()
    pipeline = windows._pipeline
    assert pipeline is not None
    control = own_redis.client()
    control.script_load(LUA)  # no NOSCRIPT retry in the count
    control.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # holds the first call on the wire
    results: list[Outcome] = []

    def one(number: int) -> None:
        results.append(windows.apply(hits("q", (number, 1, True))))

    first = threading.Thread(target=one, args=(0,))
    first.start()
    while not pipeline._busy:
        time.sleep(0.001)
    others = [threading.Thread(target=one, args=(n,)) for n in range(1, 16)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    windows.close()
    assert len(results) == 16
    assert all(outcome.admitted for outcome in results)
    assert (pipeline.flushes, pipeline.calls) == (2, 16)
    stats = control.info("commandstats")["cmdstat_evalsha"]
    assert stats["calls"] == 16
    control.close()


def test_one_failing_call_fails_only_itself(redis_url: str) -> None:
    """A script error on one key (a key of the wrong type) fails that call; the calls sharing
    its round trip get their answers."""
    prefix = uuid.uuid4().hex
    with redis.Redis.from_url(redis_url) as client:
        client.hset(f"{prefix}:1", "field", "value")  # the fixed window expects a counter
    windows = AsyncRedisWindows(windows_settings(redis_url, "fixed-window"))

    async def run() -> list[Any]:
        await windows.apply(hits(prefix, (9, 1, False)), charging=False)
        calls = [windows.apply(hits(prefix, (n, 1, True))) for n in range(4)]
        try:
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await windows.aclose()

    answers = asyncio.run(run())
    assert isinstance(answers[1], redis.ResponseError)
    assert [counts("fixed-window", answers[n]) for n in (0, 2, 3)] == [(True, 1)] * 3


def test_noscript_in_a_pipeline_reloads_the_script(redis_url: str) -> None:
    """After SCRIPT FLUSH (a restart, a failover) every pipelined call still gets its answer."""
    prefix = uuid.uuid4().hex
    windows = AsyncRedisWindows(windows_settings(redis_url, "moving-window"))

    async def run() -> list[Outcome]:
        await windows.apply(hits(prefix, (9, 1, False)), charging=False)
        with redis.Redis.from_url(redis_url) as client:
            client.script_flush()
        try:
            return list(
                await asyncio.gather(*(windows.apply(hits(prefix, (0, 1, True))) for _ in range(6)))
            )
        finally:
            await windows.aclose()

    answers = asyncio.run(run())
    assert [counts("moving-window", o) for o in answers] == [
        (True, 1), (True, 2), (True, 3), (True, 4), (True, 5), (False, 5)
    ]  # fmt: skip


def test_async_deadline_fails_the_batch_and_the_pipeline_recovers(own_redis: RedisServer) -> None:
    """A frozen Redis: every pipelined call fails within its deadline (as unpipelined); once
    Redis answers again the pipeline serves the next calls."""
    settings_ = RateLimitSettings(
        storage_uri=own_redis.url, connect_timeout=0.1, command_timeout=0.1
    )
    windows = AsyncRedisWindows(settings_)
    control = own_redis.client()

    async def run() -> tuple[list[Any], float, list[Outcome]]:
        await windows.apply(hits("d", (9, 1, False)), charging=False)
        control.execute_command("CLIENT", "PAUSE", 700, "WRITE")
        started = time.monotonic()
        failed = await asyncio.gather(
            *(windows.apply(hits("d", (n, 1, True))) for n in range(8)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.8)
        try:
            later = list(
                await asyncio.gather(*(windows.apply(hits("d", (9, 1, True))) for _ in range(3)))
            )
            return list(failed), elapsed, later
        finally:
            await windows.aclose()

    failed, elapsed, later = asyncio.run(run())
    control.close()
    assert all(isinstance(answer, TimeoutError) for answer in failed)
    assert elapsed < 0.6  # the deadline is 0.2 s; the pause lasts 0.7 s
    assert [counts("moving-window", o) for o in later] == [(True, 1), (True, 2), (True, 3)]


def test_sync_queued_calls_give_up_at_the_deadline(own_redis: RedisServer) -> None:
    """Threads queued behind a frozen round trip give up at the deadline and leave the queue;
    the pipeline serves calls again once Redis answers."""
    settings_ = RateLimitSettings(
        storage_uri=own_redis.url, connect_timeout=0.1, command_timeout=0.1
    )
    windows = RedisWindows(settings_)
    windows.connect()
    pipeline = windows._pipeline
    assert pipeline is not None
    control = own_redis.client()
    control.execute_command("CLIENT", "PAUSE", 700, "WRITE")
    errors: list[BaseException] = []

    def one(number: int) -> None:
        try:
            windows.apply(hits("s", (number, 1, True)))
        except Exception as exc:
            errors.append(exc)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(5)
    elapsed = time.monotonic() - started
    assert len(errors) == 6
    assert elapsed < 0.65
    time.sleep(0.8)
    assert counts("moving-window", windows.apply(hits("s", (9, 1, True)))) == (True, 1)
    assert not pipeline._queue
    assert not pipeline._busy
    windows.close()
    control.close()


def test_sync_calls_queued_behind_a_frozen_redis_keep_their_one_deadline(
    own_redis: RedisServer,
) -> None:
    """Redis frozen (SIGSTOP) under eight threads: the batch on the wire times out, and the
    calls queued behind it fail with it instead of each opening a new connection to the frozen
    server in turn (whose handshake would hold them about a second deadline)."""
    deadline = 0.3
    settings_ = RateLimitSettings(
        storage_uri=own_redis.url, connect_timeout=deadline, command_timeout=deadline
    )
    windows = RedisWindows(settings_)
    windows.connect()
    assert windows.apply(hits("f", (0, 1, True))).admitted
    longest: list[float] = []
    errors: list[BaseException] = []

    def one(number: int) -> None:
        started = time.monotonic()
        try:
            windows.apply(hits("f", (number, 1, True)))
        except Exception as exc:
            errors.append(exc)
        longest.append(time.monotonic() - started)

    process = own_redis.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):  # waves: each finds the connection left by the last one's timeout
            workers = [threading.Thread(target=one, args=(n,)) for n in range(8)]
            for thread in workers:
                thread.start()
                time.sleep(0.01)
            for thread in workers:
                thread.join(5)
    finally:
        process.send_signal(signal.SIGCONT)
    assert len(errors) == 24  # every call failed (the caller's policy answers it)
    assert max(longest) < deadline * 1.5  # before: up to about twice the deadline
    windows.close()
