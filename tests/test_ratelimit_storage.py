"""The storage edge: circuit breaker, memory windows, failure policies, Redis in one round trip."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import warnings
from typing import Any

import pytest
import redis

from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ratelimit.astorage import AsyncLimiter
from secmw.ratelimit.breaker import Breakers, CircuitBreaker
from secmw.ratelimit.memory import MemoryWindows
from secmw.ratelimit.plan import Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.storage import Limiter
from secmw.ratelimit.windows import LimitHit, Outcome
from tests.redis_support import RedisServer, clients_after_closing, cluster_url, free_port

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hits_for(settings: RateLimitSettings, client: str = "198.51.100.7", path: str = "/") -> Any:
    """The hits of a GET from ``client``."""
    plan = RateLimitPolicy(settings).plan(RequestView("GET", path, peer=client))
    assert isinstance(plan, Plan)
    return plan.hits


def unique_prefix() -> str:
    """A key prefix no other test run uses (the cluster lives for the whole session)."""
    return "t" + uuid.uuid4().hex[:12]


def refused_port() -> str:
    """A loopback Redis URL on which nothing listens (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


# -- circuit breaker ---------------------------------------------------------------------------


def test_breaker_opens_probes_once_per_pause_and_recovers(events: list[Any]) -> None:
    """Open on failure; one probe per pause; closed on success; one event per change."""
    clock = Clock()
    breaker = CircuitBreaker(5.0, clock=clock)
    assert breaker.allow()
    breaker.failure(ConnectionError("refused"))
    breaker.failure(ConnectionError("refused"))
    assert breaker.is_open
    assert not breaker.allow()
    assert 0 < breaker.retry_after() < 5.0  # the first probe comes soon
    clock.now += breaker.retry_after()
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.failure(TimeoutError())
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open
    assert breaker.allow()
    assert [e.name for e in events] == ["ratelimit.storage_down", "ratelimit.storage_up"]
    assert "ConnectionError" in events[0].reason


def test_a_call_begun_before_recovery_that_fails_after_it_does_not_reopen(
    events: list[Any],
) -> None:
    """A call sent during the outage whose failure arrives after the probe closed the breaker
    belongs to the outage that ended: one down and one up event, not a second outage."""
    breaker = CircuitBreaker(5.0)
    breaker.failure(ConnectionError("refused"))
    in_flight = time.perf_counter()  # a call sent while Redis was down
    breaker.success()  # the probe's answer
    breaker.failure(ConnectionError("reset"), in_flight)  # that call's late failure
    assert not breaker.is_open
    breaker.failure(ConnectionError("reset"), time.perf_counter())  # a call sent afterwards
    assert breaker.is_open
    names = [e.name for e in events]
    assert names == ["ratelimit.storage_down", "ratelimit.storage_up", "ratelimit.storage_down"]


def test_breaker_pauses_grow_with_the_outage_up_to_the_configured_pause() -> None:
    """The first probe comes soon; later pauses grow with the outage, never past ``pause``; a
    Redis back after a few seconds is probed within about a second; a recovery starts the next
    outage from the short pause again."""
    clock = Clock()
    breaker = CircuitBreaker(5.0, clock=clock)
    breaker.failure(OSError())
    down, probes = clock.now, []
    while clock.now - down < 60:
        clock.now += breaker.retry_after()
        assert breaker.allow()
        probes.append(clock.now - down)
        breaker.failure(OSError())
    waits = [later - earlier for earlier, later in zip([0.0, *probes], probes, strict=False)]
    assert waits[0] <= 0.25
    assert waits == sorted(waits)
    assert max(waits) == pytest.approx(5.0)
    back = 4.0  # Redis answers again four seconds into the outage
    assert min(p for p in probes if p >= back) - back <= 1.25
    assert len(probes) < 30  # a long outage costs one probe per pause
    assert breaker.allow() is False
    clock.now += breaker.retry_after()
    assert breaker.allow()
    breaker.success()
    breaker.failure(OSError())
    assert breaker.retry_after() == pytest.approx(waits[0])


def test_breakers_are_per_node_and_close_when_keys_move(events: list[Any]) -> None:
    """A failed node's breaker opens alone (another node's success leaves it open); it closes
    once, with an event naming it, when the key that failed there is served elsewhere."""
    breakers = Breakers(5.0, Clock())
    breakers.failure("10.0.0.1:6379", "k", ConnectionError("refused"))
    breakers.get("10.0.0.2:6379").success()
    assert breakers.open_nodes() == ["10.0.0.1:6379"]
    assert breakers.get("10.0.0.2:6379").allow()
    breakers.retire("10.0.0.1:6379")
    assert breakers.open_nodes() == []
    assert [e.name for e in events] == ["ratelimit.storage_down", "ratelimit.storage_up"]
    assert all("node 10.0.0.1:6379" in e.reason for e in events)


def test_breaker_threshold_counts_consecutive_failures() -> None:
    """With a threshold of 3, two failures and a success leave it closed."""
    breaker = CircuitBreaker(1.0, threshold=3, clock=Clock())
    breaker.failure(OSError())
    breaker.failure(OSError())
    breaker.success()
    breaker.failure(OSError())
    assert not breaker.is_open


# -- memory ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_memory_is_exact_under_threads(strategy: Any) -> None:
    """Eight threads, 80 requests, limit 25: exactly 25 admitted."""
    windows = MemoryWindows(strategy)
    hits = hits_for(RateLimitSettings(default="25/hour", strategy=strategy))
    admitted: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(10):
            admitted.append(windows.apply(hits).admitted)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 25


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refusal_by_one_limit_charges_none(strategy: Any) -> None:
    """All or nothing: a request refused by the tight limit costs nothing on the loose one."""
    windows = MemoryWindows(strategy)
    hits = hits_for(RateLimitSettings(default="2/hour;100/day", strategy=strategy))
    results = [windows.apply(hits) for _ in range(5)]
    assert [r.admitted for r in results] == [True, True, False, False, False]
    assert results[-1].states[1][0 if strategy != "sliding-window-counter" else 2] == 2


def test_peek_does_not_charge() -> None:
    """``charging=False`` reports without taking units."""
    windows = MemoryWindows("moving-window")
    hits = hits_for(RateLimitSettings(default="1/hour"))
    assert windows.apply(hits, charging=False).admitted
    assert windows.apply(hits).admitted
    assert not windows.apply(hits, charging=False).admitted


def test_memory_store_is_capped(events: list[Any]) -> None:
    """Past ``memory_max_keys`` the least recently used client is forgotten: memory stays
    bounded, new clients are still served, and one event tells the operator."""
    limiter = Limiter(RateLimitSettings(default="2/hour", memory_max_keys=100))
    settings = RateLimitSettings(default="2/hour")
    first = hits_for(settings, "10.0.0.0")
    assert limiter.apply(first).admitted  # type: ignore[union-attr]
    assert limiter.apply(first).admitted  # type: ignore[union-attr]
    assert not limiter.apply(first).admitted  # type: ignore[union-attr]
    for index in range(1, 150):
        outcome = limiter.apply(hits_for(settings, f"10.0.{index // 250}.{index % 250}"))
        assert isinstance(outcome, Outcome)
        assert outcome.admitted
    assert len(limiter.memory) == 100
    assert limiter.apply(first).admitted  # type: ignore[union-attr]  # forgotten: starts afresh
    assert [e.name for e in events] == ["ratelimit.memory_full"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_memory_windows_expire_with_the_clock(strategy: Any) -> None:
    """A full window admits again once the injected clock has moved a window on."""
    now = [960.0]  # the start of a one-minute period, so 30 s later is still the same period
    windows = MemoryWindows(strategy, clock=lambda: now[0])
    hits = hits_for(RateLimitSettings(default="2/minute", strategy=strategy))
    assert [windows.apply(hits).admitted for _ in range(3)] == [True, True, False]
    now[0] += 30
    assert not windows.apply(hits).admitted
    now[0] += 91  # past the window (and, for the sliding counter, past its weighted share)
    assert windows.apply(hits).admitted


def test_sliding_window_weighs_the_previous_period() -> None:
    """Half-way through a period, half of the previous period's count still counts."""
    now = [600.0]
    windows = MemoryWindows("sliding-window-counter", clock=lambda: now[0])
    hits = hits_for(RateLimitSettings(default="4/minute", strategy="sliding-window-counter"))
    assert all(windows.apply(hits).admitted for _ in range(4))
    now[0] = 690.0  # next period, half of it gone: floor(4 * 0.5) = 2 still count
    assert [windows.apply(hits).admitted for _ in range(3)] == [True, True, False]


# -- failure policies (nothing listens) --------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("memory", Outcome, id="memory"),
        pytest.param("allow", type(None), id="allow"),
        pytest.param("deny", Deny, id="deny"),
    ],
)
def test_refused_connections_apply_the_policy_from_the_first_request(
    policy: str, expected: type, events: list[Any]
) -> None:
    """A Redis refusing connections at startup: the app starts, the policy answers at once."""
    settings = RateLimitSettings(storage_uri=refused_port(), on_storage_error=policy)
    limiter = Limiter(settings)
    answers = [limiter.apply(hits_for(settings)) for _ in range(3)]
    assert all(isinstance(answer, expected) for answer in answers)
    if policy == "deny":
        assert answers[0].status == 503  # type: ignore[union-attr]
        assert answers[0].headers[0][0] == "retry-after"  # type: ignore[union-attr]
    assert [e.name for e in events] == ["ratelimit.storage_down"]


@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("redis+cluster://127.0.0.1:{port}", id="cluster"),
        pytest.param("redis+sentinel://127.0.0.1:{port}/mymaster", id="sentinel"),
        pytest.param("rediss://127.0.0.1:{port}/0", id="tls"),
    ],
)
def test_cluster_sentinel_and_tls_down_at_startup(scheme: str) -> None:
    """Cluster, Sentinel or TLS Redis down at startup: 503 at once, sync and async (< 2 s)."""
    settings = RateLimitSettings(
        storage_uri=scheme.format(port=free_port()), on_storage_error="deny"
    )
    started = time.monotonic()
    answer = Limiter(settings).apply(hits_for(settings))

    async def run() -> Any:
        limiter = AsyncLimiter(settings)
        found = await limiter.apply(hits_for(settings))
        await limiter.aclose()
        return found

    answers = [answer, asyncio.run(run())]
    assert time.monotonic() - started < 2  # a fault bound, not a performance figure
    assert all(isinstance(a, Deny) and a.status == 503 for a in answers)


def test_async_refused_connections_apply_the_policy() -> None:
    """The async twin answers the same way without raising."""
    settings = RateLimitSettings(storage_uri=refused_port(), on_storage_error="deny")

    async def run() -> list[Any]:
        limiter = AsyncLimiter(settings)
        answers = [await limiter.apply(hits_for(settings)) for _ in range(2)]
        await limiter.aclose()
        return answers

    assert all(isinstance(a, Deny) and a.status == 503 for a in asyncio.run(run()))


def test_missing_client_library_is_a_configuration_error() -> None:
    """``valkey://`` without the valkey package fails at construction, naming the variable."""
    pytest.importorskip("limits")
    try:
        import valkey  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("valkey is installed")
    settings = RateLimitSettings(storage_uri="valkey://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="SECMW_RATE_LIMIT__STORAGE_URI"):
        Limiter(settings)


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def flushed(redis_url: str) -> str:
    """The shared Redis, emptied."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    return redis_url


def evalsha_calls(url: str) -> int:
    """Script calls the server has run so far (``INFO commandstats``)."""
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_answers_like_memory(flushed: str, strategy: Any) -> None:
    """The Lua script and ``limits``' memory storage admit and count the same way."""
    settings = RateLimitSettings(
        storage_uri=flushed,
        strategy=strategy,
        default="4/hour;6/day",
        rules=[{"path": "/post", "methods": ["POST"], "cost": 3}],
    )
    policy = RateLimitPolicy(settings)
    remote, memory = Limiter(settings), MemoryWindows(strategy)
    for method in ["GET", "POST", "GET", "POST", "GET", "GET"]:
        plan = policy.plan(RequestView(method, "/post", peer="198.51.100.7"))
        assert isinstance(plan, Plan)
        a, b = remote.apply(plan.hits), memory.apply(plan.hits)
        assert isinstance(a, Outcome)
        assert a.admitted == b.admitted
        assert [s[0] for s in a.states] == [s[0] for s in b.states]
    assert not remote.breaker.is_open


@pytest.mark.redis
def test_one_round_trip_per_request_however_many_limits(flushed: str) -> None:
    """Three limits on one request: one EVALSHA per request."""
    settings = RateLimitSettings(
        storage_uri=flushed,
        default="100/minute;1000/hour",
        rules=[{"path": "/", "limit": "50/minute"}],
    )
    limiter = Limiter(settings)
    hits = hits_for(settings)
    assert len(hits) == 3
    limiter.apply(hits)  # loads the script once (NOSCRIPT, SCRIPT LOAD)
    before = evalsha_calls(flushed)
    for _ in range(10):
        assert isinstance(limiter.apply(hits), Outcome)
    assert evalsha_calls(flushed) - before == 10


@pytest.mark.redis
def test_async_redis_is_exact_under_concurrency(flushed: str) -> None:
    """50 concurrent tasks on one loop against a limit of 20: exactly 20 admitted.

    The deadline is generous: on a loaded machine the fiftieth of fifty first calls (each opening
    a connection) can outlast the default 0.5 s and fall back to memory by design, which is not
    what this test is about."""
    settings = RateLimitSettings(
        storage_uri=flushed, default="20/hour", connect_timeout=5, command_timeout=5
    )
    hits = hits_for(settings)

    async def run() -> list[Any]:
        limiter = AsyncLimiter(settings)
        answers = await asyncio.gather(*(limiter.apply(hits) for _ in range(50)))
        await limiter.aclose()
        return list(answers)

    answers = asyncio.run(run())
    assert sum(isinstance(a, Outcome) and a.admitted for a in answers) == 20


class Calls:
    """``Limiter.apply`` or ``AsyncLimiter.apply``, called alike (the async one on one loop, as
    its client's connections belong to one loop)."""

    def __init__(self, kind: str, settings: RateLimitSettings, **options: Any) -> None:
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.limiter = (AsyncLimiter if self.loop else Limiter)(settings, **options)

    def apply(self, hits: Any, charging: bool = True) -> Any:
        result = self.limiter.apply(hits, charging=charging)
        return self.loop.run_until_complete(result) if self.loop else result

    def close(self) -> None:
        if isinstance(self.limiter, AsyncLimiter):
            assert self.loop is not None
            self.loop.run_until_complete(self.limiter.aclose())
            self.loop.close()
        else:
            self.limiter.close()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_redis_reloads_a_flushed_script_and_counts_on(flushed: str, kind: str) -> None:
    """After ``SCRIPT FLUSH`` (what a restarted or failed-over Redis looks like), the next call
    loads the script again and counts on in Redis: no failure, no fallback to memory, one
    ``EVALSHA`` per call otherwise."""
    settings = RateLimitSettings(storage_uri=flushed, default="10/hour", command_timeout=5)
    hits = hits_for(settings)
    calls = Calls(kind, settings)
    answers = [calls.apply(hits)]
    before = evalsha_calls(flushed)
    answers += [calls.apply(hits) for _ in range(3)]
    assert evalsha_calls(flushed) - before == 3
    with redis.Redis.from_url(flushed) as admin:
        admin.script_flush()
    answers += [calls.apply(hits) for _ in range(2)]
    assert not calls.limiter.breaker.is_open
    calls.close()
    assert all(isinstance(a, Outcome) and a.admitted for a in answers)
    assert [a.states[0][0] for a in answers] == [1, 2, 3, 4, 5, 6]  # memory would restart at 1


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sentinel_finds_the_master_and_counts_there(redis_sentinel: str, kind: str) -> None:
    """``redis+sentinel://``: the master is asked of the Sentinel, the script counts on it, and
    closing the limiter closes its connections to the Sentinel too."""
    settings = RateLimitSettings(storage_uri=redis_sentinel, default="10/hour", command_timeout=5)
    hits = hits_for(settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        calls = Calls(kind, settings)
        answers = [calls.apply(hits) for _ in range(3)]
        assert not calls.limiter.breaker.is_open
        calls.close()
        del calls
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # none left open
    assert [a.states[0][0] for a in answers] == [1, 2, 3]
    with redis.Redis.from_url(redis_sentinel.replace("redis+sentinel", "redis")) as sentinel:
        assert clients_after_closing(sentinel, 1) == 1  # this client alone
        host, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    with redis.Redis(host=host.decode(), port=int(port)) as master:
        assert master.llen(hits[0].key) == 3  # a moving window: one entry per unit


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_timeout_mid_reply_leaves_no_stale_reply(
    redis_process: RedisServer, events: list[Any], kind: str
) -> None:
    """A call the timeout cuts off while Redis is paused fails (memory answers meanwhile), and
    its reply is never read as the answer to a later call: once Redis is back, a look without
    charging and a charge see their own counts, and the last one is what Redis holds."""
    clock = Clock()
    settings = RateLimitSettings(
        storage_uri=redis_process.start().url,
        default="10/hour",
        connect_timeout=0.1,
        command_timeout=0.1,
    )
    hits = hits_for(settings)
    calls = Calls(kind, settings, clock=clock)
    answers = [calls.apply(hits) for _ in range(2)]
    with redis_process.client() as admin:
        admin.execute_command("CLIENT", "PAUSE", 500, "WRITE")
    answers.append(calls.apply(hits))  # cut off: memory answers
    assert calls.limiter.breaker.is_open
    time.sleep(0.6)  # the pause is over
    clock.now += settings.breaker_pause
    answers += [calls.apply(hits, charging=False), calls.apply(hits)]
    calls.close()
    counts = [a.states[0][0] for a in answers]
    assert counts[:3] == [1, 2, 3]  # Redis, Redis, memory (seeded from the last count)
    looked, charged = counts[3:]
    assert charged == looked + 1
    with redis_process.client() as admin:
        assert admin.llen(hits[0].key) == charged  # a moving window: one entry per unit
    assert [e.name for e in events] == ["ratelimit.storage_down", "ratelimit.storage_up"]


@pytest.mark.redis
def test_sync_recovers_after_redis_returns(redis_process: RedisServer, events: list[Any]) -> None:
    """Down at startup, memory meanwhile, back on Redis after the pause; one event each way."""
    clock = Clock()
    settings = RateLimitSettings(storage_uri=redis_process.url, default="3/hour")
    limiter = Limiter(settings, clock=clock)
    hits = hits_for(settings)
    assert isinstance(limiter.apply(hits), Outcome)  # from memory
    redis_process.start()
    clock.now += settings.breaker_pause
    assert isinstance(limiter.apply(hits), Outcome)
    assert not limiter.breaker.is_open
    with redis_process.client() as client:
        # counted in Redis, with the unit admitted from memory meanwhile carried back
        assert client.llen(hits[0].key) == 2
    assert [e.name for e in events] == ["ratelimit.storage_down", "ratelimit.storage_up"]


@pytest.mark.redis
def test_cluster_spreads_identities_over_nodes(redis_cluster: list[RedisServer]) -> None:
    """Keys of different clients land on different nodes; each node runs the script."""
    settings = RateLimitSettings(
        storage_uri=cluster_url(redis_cluster), default="2/hour", key_prefix=unique_prefix()
    )
    limiter = Limiter(settings)
    clients = [f"192.0.2.{n}" for n in range(1, 13)]
    for client in clients:
        outcomes = [limiter.apply(hits_for(settings, client)) for _ in range(3)]
        assert [o.admitted for o in outcomes if isinstance(o, Outcome)] == [True, True, False]
    holding = []
    for node in redis_cluster:
        with node.client() as client:
            holding.append(len(client.keys(f"{settings.key_prefix}:*")))
    assert sum(holding) == len(clients)
    assert sum(1 for count in holding if count) >= 2
    assert not limiter.breaker.is_open


@pytest.mark.redis
def test_async_cluster_cold_start_under_concurrency(redis_cluster: list[RedisServer]) -> None:
    """A fresh async cluster client hit by 150 concurrent requests: no storage error, exact."""
    settings = RateLimitSettings(
        storage_uri=cluster_url(redis_cluster),
        default="20/hour",
        on_storage_error="deny",
        key_prefix=unique_prefix(),
        # Correctness under concurrency, not speed: generous timeouts so a loaded machine
        # cannot turn a slow answer into a storage error.
        connect_timeout=5,
        command_timeout=5,
    )
    clients = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]

    async def run() -> list[Any]:
        limiter = AsyncLimiter(settings)
        jobs = [limiter.apply(hits_for(settings, clients[n % 3])) for n in range(150)]
        answers = await asyncio.gather(*jobs)
        await limiter.aclose()
        return list(answers)

    answers = asyncio.run(run())
    assert all(isinstance(answer, Outcome) for answer in answers)
    assert sum(answer.admitted for answer in answers) == 60


@pytest.mark.redis
def test_cluster_mixed_identities_take_one_call_each(redis_cluster: list[RedisServer]) -> None:
    """A rule keyed by address beside a default keyed by principal: both applied in a cluster."""
    from secmw import Principal

    settings = RateLimitSettings(
        storage_uri=cluster_url(redis_cluster),
        default="5/hour",
        rules=[{"path": "/login", "limit": "2/hour", "key": "ip"}],
        key_prefix=unique_prefix(),
    )
    policy, limiter = RateLimitPolicy(settings), Limiter(settings)
    view = RequestView("GET", "/login", peer="192.0.2.200")
    view.state["principal"] = Principal.create("carol", "bearer")
    plan = policy.plan(view)
    assert isinstance(plan, Plan)
    assert len({h.tag for h in plan.hits}) == 2
    answers = [limiter.apply(plan.hits) for _ in range(3)]
    assert [a.admitted for a in answers if isinstance(a, Outcome)] == [True, True, False]


def test_hits_keep_their_order_after_merging() -> None:
    """Per-identity outcomes are put back in the plan's order."""
    from limits import parse

    from secmw.ratelimit.script import merge

    a = LimitHit("a", parse("1/second"), "k1", "t1", 1)
    b = LimitHit("b", parse("1/second"), "k2", "t2", 1)
    merged = merge([([b], Outcome(True, ((2, 0),))), ([a], Outcome(False, ((1, 0),)))], [a, b])
    assert merged == Outcome(False, ((1, 0), (2, 0)))


# -- refunds (the failed-attempt throttle charges before it checks) -----------------------------


def refund_round(limiter: Limiter, hits: Any) -> list[bool]:
    """A refund on nothing, three charges, one refused, a refund, one more charge, one refused."""
    limiter.refund(hits)  # never below zero: this buys no extra unit
    admitted = []
    for refund in [False, False, False, False, True, False, False]:
        if refund:
            limiter.refund(hits)
            continue
        outcome = limiter.apply(hits)
        assert isinstance(outcome, Outcome)
        admitted.append(outcome.admitted)
    return admitted


REFUNDED = [True, True, True, False, True, False]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_memory_refund_gives_back_one_unit(strategy: Any) -> None:
    """A refunded unit can be charged again, once; a refund never goes below zero."""
    settings = RateLimitSettings(strategy=strategy, default="3/hour")
    assert refund_round(Limiter(settings), hits_for(settings)) == REFUNDED


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_refund_gives_back_one_unit(flushed: str, strategy: Any) -> None:
    """The script's refund mode: the same answers as memory, sync and async."""
    settings = RateLimitSettings(storage_uri=flushed, strategy=strategy, default="3/hour")
    limiter = Limiter(settings)
    assert refund_round(limiter, hits_for(settings)) == REFUNDED
    assert not limiter.breaker.is_open

    async def run() -> list[bool]:
        limiter = AsyncLimiter(settings)
        hits = hits_for(settings, client="198.51.100.8")
        await limiter.refund(hits)
        admitted = []
        for refund in [False, False, False, False, True, False, False]:
            if refund:
                await limiter.refund(hits)
                continue
            outcome = await limiter.apply(hits)
            assert isinstance(outcome, Outcome)
            admitted.append(outcome.admitted)
        await limiter.aclose()
        return admitted

    assert asyncio.run(run()) == REFUNDED
