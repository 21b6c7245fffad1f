"""The ``memory`` fallback across its switches: counts carried from Redis into memory and back.

Two limiters stand for two workers sharing a real ``redis-server``. Every request of a run falls
in one window of the limit, so the admissions of the whole run are the worst window; across the
switch to memory and the switch back it must stay within the documented bound, workers x limit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from secmw.ratelimit.memory import Carry, MemoryWindows
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import Outcome
from tests.redis_support import RedisServer
from tests.test_ratelimit_storage import STRATEGIES, Calls, Clock, hits_for

LIMIT, WORKERS = 10, 2


def admitted(answer: Any) -> int:
    return int(isinstance(answer, Outcome) and answer.admitted)


def on_redis(calls: Calls, hits: Any) -> None:
    """Send requests until the limiter answers from Redis again (a few seconds at most)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        calls.apply(hits, charging=False)
        if not calls.limiter.breaker.is_open:
            return
        time.sleep(0.05)
    pytest.fail("the limiter did not come back to Redis")


@pytest.fixture
def workers(redis_process: RedisServer, request: pytest.FixtureRequest) -> Iterator[list[Calls]]:
    """Two sync or two async limiters on one Redis, ``memory`` fallback, a 10/hour limit."""
    kind, strategy = request.param
    settings = RateLimitSettings(
        storage_uri=redis_process.start().url,
        default=f"{LIMIT}/hour",
        strategy=strategy,
        on_storage_error="memory",
        breaker_pause=0.2,
        command_timeout=0.25,  # every call to the frozen Redis below is a probe that waits this
    )
    calls = [Calls(kind, settings) for _ in range(WORKERS)]
    yield calls
    for each in calls:
        each.close()


PARAMS = [  # every strategy, both sides
    ("sync", "moving-window"),
    ("async", "moving-window"),
    ("sync", "fixed-window"),
    ("async", "sliding-window-counter"),
]
IDS = [f"{kind}-{strategy}" for kind, strategy in PARAMS]


@pytest.mark.redis
@pytest.mark.parametrize("workers", PARAMS, ids=IDS, indirect=True)
def test_a_window_across_a_restart_stays_within_workers_times_the_limit(
    redis_process: RedisServer, workers: list[Calls]
) -> None:
    """Redis counts the limit, is killed (each worker's memory starts from the last count it
    saw, so it admits nothing more), and comes back empty (the units admitted from memory are
    carried back first): one window admits at most workers x limit, not limit + workers x limit
    + limit."""
    hits = hits_for(RateLimitSettings(default=f"{LIMIT}/hour"))
    total = 0
    for n in range(LIMIT + 4):  # on Redis: exactly the limit, both workers see the count
        total += admitted(workers[n % WORKERS].apply(hits))
    assert total == LIMIT
    redis_process.kill()
    for n in range(4 * LIMIT):  # on memory, seeded: both workers know the limit is reached
        total += admitted(workers[n % WORKERS].apply(hits))
    redis_process.start()  # empty: the counts of the first part are gone
    for each in workers:
        on_redis(each, hits)
    for n in range(4 * LIMIT):
        total += admitted(workers[n % WORKERS].apply(hits))
    assert total <= WORKERS * LIMIT


@pytest.mark.redis
@pytest.mark.parametrize("workers", PARAMS[1::2], ids=IDS[1::2], indirect=True)
def test_memory_admissions_are_carried_back_to_redis(
    redis_process: RedisServer, workers: list[Calls]
) -> None:
    """Redis is frozen from the start of the window: each worker admits the limit from memory;
    once Redis answers again, those units count there, so Redis admits nothing more in the
    window (before: the limit again)."""
    hits = hits_for(RateLimitSettings(default=f"{LIMIT}/hour"))
    assert redis_process.process is not None
    os.kill(redis_process.process.pid, signal.SIGSTOP)
    total = 0
    try:
        for n in range(WORKERS * LIMIT + 2):
            total += admitted(workers[n % WORKERS].apply(hits))
    finally:
        os.kill(redis_process.process.pid, signal.SIGCONT)
    assert total == WORKERS * LIMIT  # each worker's memory: the limit
    for each in workers:
        on_redis(each, hits)
    for n in range(2 * LIMIT):
        total += admitted(workers[n % WORKERS].apply(hits))
    assert total == WORKERS * LIMIT


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_seeded_window_counts_from_the_state_redis_reported(strategy: Any) -> None:
    """A key's memory window starts from the last state Redis reported for it, and expires as
    that window would (the fixed window at its reset)."""
    clock = Clock()
    memory = MemoryWindows(strategy, clock=clock)
    carry = Carry(memory)
    hits = hits_for(RateLimitSettings(default="5/minute", strategy=strategy))
    state = {
        "fixed-window": (4, 30_000),
        "moving-window": (4, 10_000),
        "sliding-window-counter": (0, 0, 4, 90_000),
    }[strategy]
    carry.saw(hits, Outcome(True, (state,)))
    assert [carry.apply(hits).admitted for _ in range(3)] == [True, False, False]
    assert [hit.cost for hit in carry.take(hits)] == [1]
    if strategy == "fixed-window":
        clock.now += 30
        assert carry.apply(hits).admitted  # the window Redis reported has reset


def test_owed_units_are_carried_once() -> None:
    """Units owed to Redis add up per key and are taken by one call only; a failed call owes
    them again; once paid, nothing is owed and the memory window goes."""
    memory = MemoryWindows("fixed-window", clock=Clock())
    carry = Carry(memory)
    hits = hits_for(RateLimitSettings(default="5/minute", strategy="fixed-window"))
    for _ in range(3):
        carry.apply(hits)
    carry.refund(hits)
    owed = carry.take(hits)
    assert [hit.cost for hit in owed] == [2]
    assert carry.take(hits) == []  # a concurrent call carries nothing more
    carry.unpaid(owed)
    owed = carry.take(hits)
    assert [hit.cost for hit in owed] == [2]
    carry.paid(owed)
    assert carry.take(hits) == []
    assert len(memory) == 0
