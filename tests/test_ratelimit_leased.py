"""Leased budgets on a real Redis: slices taken in one call, admitted locally, given back; the
overshoot bound with several real processes; a dead process's lease ends with its window."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from secmw.asgi.ratelimit import RateLimitMiddleware as ASGIRateLimit
from secmw.config.settings import SecuritySettings
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ratelimit.astorage import AsyncLimiter
from secmw.ratelimit.leasing import AsyncLeasedWindows, LeasedWindows, use_leases
from secmw.ratelimit.plan import Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.storage import Limiter
from secmw.ratelimit.windows import Outcome, Strategy, remaining_and_reset
from secmw.wsgi.ratelimit import RateLimitMiddleware as WSGIRateLimit
from tests.support import http_scope, run_asgi
from tests.test_ratelimit_adapters import streaming_app, wsgi_app, wsgi_call

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[1]
STRATEGIES: list[Strategy] = ["fixed-window", "moving-window", "sliding-window-counter"]


def leased(url: str, **values: Any) -> RateLimitSettings:
    """Leased settings on ``url`` with a key prefix no other test uses."""
    values.setdefault("default", "20/hour")
    values.setdefault("key_prefix", "l" + uuid.uuid4().hex[:12])
    values.setdefault("on_storage_error", "deny")
    return RateLimitSettings(storage_uri=url, mode="leased", **values)


def plan_of(settings: RateLimitSettings, client: str = "192.0.2.9") -> Plan:
    plan = RateLimitPolicy(settings).plan(RequestView("GET", "/", peer=client))
    assert isinstance(plan, Plan)
    return plan


def used_in_redis(url: str, strategy: Strategy, key: str) -> int:
    """Units Redis counts for ``key`` (moving: entries; fixed and sliding: the current count)."""
    with redis.Redis.from_url(url) as client:
        if strategy == "moving-window":
            return int(client.llen(key))
        counter = key + ":c" if strategy == "sliding-window-counter" else key
        return int(client.get(counter) or 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_process_admits_exactly_the_limit_leasing_slices(
    redis_url: str, strategy: Strategy
) -> None:
    """One process: exactly the limit is admitted, Redis is asked once per slice (and once per
    refusal), the fields count down as in exact mode, and closing gives the unused units back."""
    settings = leased(redis_url, strategy=strategy, lease_slice=6)
    limiter = use_leases(Limiter(settings), settings)
    remote = limiter.remote
    assert isinstance(remote, LeasedWindows)
    plan = plan_of(settings)
    hit = plan.hits[0]
    with redis.Redis.from_url(redis_url) as client:
        before = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    answers = [limiter.apply(plan.hits) for _ in range(23)]
    assert [a.admitted for a in answers] == [True] * 20 + [False] * 3
    remaining = [remaining_and_reset(strategy, hit, a.states[0])[0] for a in answers[:20]]
    assert remaining == list(range(19, -1, -1))
    with redis.Redis.from_url(redis_url) as client:
        after = int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
    assert after - before <= 4 + 3 + 1  # slices of 6, 6, 6, 2; three refusals; a script load
    # Twelve units leased, seven spent: closing gives the five others back.
    settings2 = leased(redis_url, strategy=strategy, lease_slice=12)
    limiter2 = use_leases(Limiter(settings2), settings2)
    plan2 = plan_of(settings2)
    for _ in range(7):
        limiter2.apply(plan2.hits)
    assert used_in_redis(redis_url, strategy, plan2.hits[0].key) == 12
    limiter2.close()
    assert used_in_redis(redis_url, strategy, plan2.hits[0].key) == 7
    limiter.close()


def test_async_twin_admits_the_limit_and_refunds_into_the_lease(redis_url: str) -> None:
    """The ASGI side leases the same way; a refunded unit goes back into the lease."""
    settings = leased(redis_url, lease_slice=5, default="8/hour")
    limiter = use_leases(AsyncLimiter(settings), settings)
    assert isinstance(limiter.remote, AsyncLeasedWindows)
    plan = plan_of(settings)

    async def run() -> list[bool]:
        try:
            answers = [await limiter.apply(plan.hits) for _ in range(3)]
            await limiter.refund(plan.hits)
            answers += await asyncio.gather(*(limiter.apply(plan.hits) for _ in range(7)))
            return [a.admitted for a in answers]
        finally:
            await limiter.aclose()

    assert asyncio.run(run()) == [True] * 3 + [True] * 6 + [False]
    assert used_in_redis(redis_url, "moving-window", plan.hits[0].key) == 8


def test_memory_storage_ignores_the_mode() -> None:
    """On memory storage the mode changes nothing: the windows are already the process's own."""
    settings = RateLimitSettings(mode="leased", default="3/hour")
    limiter = use_leases(Limiter(settings), settings)
    assert limiter.remote is None
    plan = plan_of(settings)
    assert [limiter.apply(plan.hits).admitted for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("name", "value"),
    [("SECMW_RATE_LIMIT__MODE", "approximate"), ("SECMW_RATE_LIMIT__LEASE_SLICE", "1")],
)
def test_bad_mode_settings_fail_at_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """An unknown mode or a slice below two stops the app, naming the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        SecuritySettings()


def worker(url: str, mode: str, size: int, limit: str, seconds: float) -> subprocess.Popen[str]:
    """A real process hammering the shared key (``tests/lease_worker.py``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, "-m", "tests.lease_worker", url, mode, str(size), limit]
    return subprocess.Popen(
        [*command, str(seconds)], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def busiest_span(admitted: list[tuple[float, float]], window: float) -> int:
    """The most admissions decided in any window-long span, counting those whose whole
    [sent, answered] interval lies in it (where between the two the decision fell is unknown,
    and a loaded machine can stretch the interval: the count may miss some, never adds any)."""
    admitted.sort()
    return max(
        sum(1 for _, answered in admitted[i:] if answered < sent + window)
        for i, (sent, _) in enumerate(admitted)
    )


@pytest.mark.parametrize(("mode", "size"), [("leased", 8), ("exact", 2)])
def test_processes_stay_within_the_bound(redis_process: Any, mode: str, size: int) -> None:
    """Four processes of four threads each on one key for two 1-second windows: in any
    1-second span at most limit + processes x slice admissions in leased mode (the bound by
    arrival at the process), at most the limit in exact mode."""
    server = redis_process.start()
    processes, limit = 4, 30
    running = [worker(server.url, mode, size, f"{limit}/second", 2.0) for _ in range(processes)]
    stamps: list[tuple[float, float]] = []
    try:
        for process in running:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0
            stamps += [(float(a), float(b)) for a, b in (line.split() for line in out.splitlines())]
    finally:
        for process in running:
            process.kill()
            process.communicate()
    bound = limit + processes * size if mode == "leased" else limit
    # The script's clock is read in whole milliseconds (Redis TIME, floored): a span a little
    # shorter than the window is one Redis sees as a window.
    busiest = busiest_span(stamps, 0.998)
    assert busiest <= bound, (busiest, bound)
    assert busiest >= limit // 2  # the processes did press on the limit


def test_a_dead_process_lease_ends_with_its_window(redis_process: Any) -> None:
    """A process leases the whole budget and is killed: the key refuses until the window ends,
    then admits again (the lease never outlives its window)."""
    server = redis_process.start()
    died = worker(server.url, "die", 5, "5/2second", 0)
    died.communicate(timeout=60)
    assert died.returncode == -9
    settings = leased(server.url, default="5/2second", lease_slice=5, key_prefix="secmw")
    limiter = use_leases(Limiter(settings), settings)
    plan = plan_of(settings, client="192.0.2.1")
    refused = limiter.apply(plan.hits)
    assert isinstance(refused, Outcome)
    assert not refused.admitted
    time.sleep(2.1)
    assert limiter.apply(plan.hits).admitted
    limiter.close()


def test_middlewares_answer_from_leases_with_the_fields(redis_url: str) -> None:
    """Both middlewares in leased mode: 200s counting down in ``RateLimit``, then a 429 with
    Redis's ``Retry-After``."""
    section = {
        "storage_uri": redis_url,
        "mode": "leased",
        "lease_slice": 2,
        "default": "3/minute",
        "key_prefix": "m" + uuid.uuid4().hex[:10],
    }
    asgi = ASGIRateLimit(streaming_app, rate_limit=section)
    answers = [run_asgi(asgi, http_scope("/")) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.header_values("ratelimit")[0] for a in answers[:3]] == [
        f'"default";r={left};t=60' for left in (2, 1, 0)
    ]
    assert int(answers[3].header_values("retry-after")[0]) >= 59
    section["key_prefix"] = "w" + section["key_prefix"]
    wsgi = WSGIRateLimit(wsgi_app, rate_limit=section)
    statuses = [wsgi_call(wsgi)[0] for _ in range(4)]
    assert statuses == ["200 OK"] * 3 + ["429 Too Many Requests"]
    wsgi.close()


def test_redis_killed_and_restarted_in_leased_mode(redis_process: Any) -> None:
    """Redis killed: the slice held keeps admitting, then ``on_storage_error=memory`` answers;
    nothing raises. Redis back: leasing resumes (the script is loaded again)."""
    server = redis_process.start()
    settings = leased(
        server.url,
        lease_slice=5,
        on_storage_error="memory",
        breaker_pause=0.2,
        connect_timeout=0.2,
        command_timeout=0.2,
    )
    limiter = use_leases(Limiter(settings), settings)
    plan = plan_of(settings)
    assert all(limiter.apply(plan.hits).admitted for _ in range(2))
    server.kill()
    from_lease = [limiter.apply(plan.hits) for _ in range(3)]
    assert all(a.admitted for a in from_lease)
    assert not limiter.breaker.is_open  # the slice answered: Redis was not asked
    fallback = limiter.apply(plan.hits)  # the slice is spent: Redis fails, memory answers
    assert isinstance(fallback, Outcome)
    assert limiter.breaker.is_open
    server.start()
    time.sleep(0.3)  # the breaker's pause
    again = limiter.apply(plan.hits)
    assert isinstance(again, Outcome)
    assert again.admitted
    assert not limiter.breaker.is_open
    # The unit memory admitted during the outage is charged on return, then a new slice of 5.
    assert used_in_redis(server.url, "moving-window", plan.hits[0].key) == 1 + 5
    limiter.close()
