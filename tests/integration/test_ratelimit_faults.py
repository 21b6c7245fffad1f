"""Redis faults under each ``on_storage_error`` policy, through real servers on 127.0.0.1.

For ``memory``, ``allow`` and ``deny``, an ASGI app (uvicorn) and a WSGI app (werkzeug) share a
``redis-server`` that refuses connections at startup, then answers, then stalls (``CLIENT PAUSE``,
longer than the command timeout), then is killed and restarted. Every request must be answered as
the policy says, before the client's 2-second timeout, never with a 500; limiting must resume on
Redis after each fault; each outage is one ``storage_down`` and one ``storage_up`` event.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from secmw import audit
from secmw.asgi.ratelimit import RateLimitMiddleware as ASGIRateLimit
from secmw.core.deny import Deny
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import Outcome
from secmw.wsgi.ratelimit import RateLimitMiddleware as WSGIRateLimit
from tests.faults.run import Timing, suite
from tests.faults.topology import Cluster
from tests.integration.apps.ratelimit_asgi import pid_app
from tests.integration.apps.ratelimit_wsgi import pid_app as wsgi_pid_app
from tests.redis_support import RedisServer, unavailable
from tests.support import uvicorn_server, werkzeug_server
from tests.test_ratelimit_storage import Calls, hits_for

PREFIX = "faults"


def closing_on_shutdown(middleware: ASGIRateLimit) -> Any:
    """The middleware, plus a lifespan that closes its Redis client on the server's loop."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await middleware(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await middleware.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@contextmanager
def both_servers(settings: dict[str, Any]) -> Iterator[list[str]]:
    """The pid app behind RateLimitMiddleware on uvicorn (ASGI) and werkzeug (WSGI)."""
    asgi = ASGIRateLimit(pid_app, rate_limit=settings)
    wsgi = WSGIRateLimit(wsgi_pid_app, rate_limit=settings)
    with ExitStack() as stack:
        urls = [
            stack.enter_context(uvicorn_server(closing_on_shutdown(asgi), lifespan="on")),
            stack.enter_context(werkzeug_server(wsgi)),
        ]
        yield urls


def counted(server: RedisServer) -> int:
    """Units the servers charged in Redis so far (-1 when Redis does not answer)."""
    try:
        with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1) as client:
            return sum(int(client.get(key) or 0) for key in client.keys(f"{PREFIX}:*"))
    except redis.RedisError:
        return -1


def answered_by_policy(response: httpx.Response, policy: str) -> None:
    """What a request gets while Redis is unusable."""
    if policy == "deny":
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
    elif policy == "allow":
        assert response.status_code == 200
        assert "ratelimit" not in response.headers
    else:
        assert response.status_code == 200
        assert response.headers["ratelimit"].startswith('"default";r=')


def resumed(client: httpx.Client, url: str, server: RedisServer) -> None:
    """Send requests until one is counted in Redis (bounded: a few seconds at most)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        before = counted(server)
        response = client.get(url + "/work")
        assert response.status_code != 500
        if before >= 0 and counted(server) > before:
            assert response.status_code == 200
            assert "ratelimit" in response.headers
            return
        time.sleep(0.05)
    pytest.fail(f"limiting did not resume on Redis for {url}")


@pytest.mark.server
@pytest.mark.redis
@pytest.mark.parametrize("policy", ["memory", "allow", "deny"])
def test_redis_faults_follow_the_policy(redis_process: RedisServer, policy: str) -> None:
    """Refused at startup, slow, killed: answered per policy in time, then back on Redis."""
    events: list[audit.AuditEvent] = []
    audit.add_hook(events.append)
    settings = {
        "storage_uri": redis_process.url,
        "on_storage_error": policy,
        "strategy": "fixed-window",
        "default": "1000/minute",
        "key_prefix": PREFIX,
        "breaker_pause": 0.2,
        "connect_timeout": 0.2,
        "command_timeout": 0.2,
    }
    try:
        with both_servers(settings) as urls, httpx.Client(timeout=2) as client:
            # 1. Redis refuses connections: the apps started anyway; the policy answers.
            for url in urls:
                for _ in range(2):
                    answered_by_policy(client.get(url + "/work"), policy)
            redis_process.start()
            for url in urls:
                resumed(client, url, redis_process)

            # 2. Redis stalls for longer than the command timeout.
            with redis_process.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", 1000)
            for url in urls:
                answered_by_policy(client.get(url + "/work"), policy)
            for url in urls:
                resumed(client, url, redis_process)

            # 3. Redis is killed mid-run, then comes back on the same port.
            redis_process.kill()
            for url in urls:
                for _ in range(2):
                    answered_by_policy(client.get(url + "/work"), policy)
            redis_process.start()
            for url in urls:
                resumed(client, url, redis_process)
    finally:
        audit.remove_hook(events.append)
    names = [event.name for event in events if event.name.startswith("ratelimit.storage")]
    # Two apps, three outages: each app logs each outage once and each recovery once.
    assert names.count("ratelimit.storage_down") == 6
    assert names.count("ratelimit.storage_up") == 6


@pytest.mark.redis
def test_a_stalled_redis_never_holds_a_request_past_the_timeout(
    redis_process: RedisServer,
) -> None:
    """While Redis stalls, concurrent requests on a threaded server all finish within 2 s."""
    settings = {
        "storage_uri": redis_process.start().url,
        "on_storage_error": "deny",
        "key_prefix": PREFIX,
        "connect_timeout": 0.2,
        "command_timeout": 0.2,
    }
    app = WSGIRateLimit(wsgi_pid_app, rate_limit=settings)
    statuses: list[int] = []
    with werkzeug_server(app) as url:
        assert httpx.get(url + "/work", timeout=2).status_code == 200
        with redis_process.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", 1500)

        def request() -> None:
            statuses.append(httpx.get(url + "/work", timeout=2).status_code)

        threads = [threading.Thread(target=request) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
    assert statuses == [503] * 6


# -- the deadline, per node health, the fault suite's fast cases -----------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_deadline_covers_connect_and_command(redis_process: RedisServer, kind: str) -> None:
    """On a frozen Redis (SIGSTOP: connections are accepted, nothing answers) a storage call
    gives up at ``command_timeout``, whatever ``connect_timeout`` says, on a pooled connection
    and on a fresh one alike (before: connect plus command timeout on ASGI)."""
    settings = RateLimitSettings(
        storage_uri=redis_process.start().url,
        default="100/hour",
        on_storage_error="deny",
        connect_timeout=2.0,
        command_timeout=0.3,
        breaker_pause=0.01,
    )
    hits = hits_for(settings)
    calls = Calls(kind, settings)
    try:
        assert isinstance(calls.apply(hits), Outcome)
        assert redis_process.process is not None
        os.kill(redis_process.process.pid, signal.SIGSTOP)
        took = []
        try:
            for _ in range(3):  # the pooled connection, then fresh ones after a disconnect
                time.sleep(0.3)  # past the breaker's pause: every call is a probe
                started = time.monotonic()
                assert isinstance(calls.apply(hits), Deny)
                took.append(time.monotonic() - started)
        finally:
            os.kill(redis_process.process.pid, signal.SIGCONT)
    finally:
        calls.close()
    assert max(took) < 0.3 + 0.4  # the deadline, with a margin for a busy host


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A three-master Cluster of its own (a test kills one), full coverage not required."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are needed for a Cluster")
    topology = Cluster(tmp_path, replicas=False)
    try:
        yield topology
    finally:
        topology.stop()


def one_client_per_master(cluster: Cluster, settings: RateLimitSettings) -> tuple[Any, Any]:
    """The hits of a client whose keys live on one master, and of one on another."""
    clients = [hits_for(settings, client=f"198.51.100.{n}") for n in range(1, 64)]
    first = clients[0]
    owner = cluster.owner_of(first[0].key)
    return first, next(hits for hits in clients if cluster.owner_of(hits[0].key) != owner)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_dead_master_fails_only_its_keys(
    cluster: Cluster, kind: str, events: list[audit.AuditEvent]
) -> None:
    """Under ``deny``, with one master killed: its clients get 503s, the other master's clients
    are limited on Redis throughout, the dead master's breaker stays open through the others'
    successes (one ``storage_down``, no flapping), and it closes once, after the master is back.
    No node client is left unclosed."""
    settings = RateLimitSettings(
        storage_uri=cluster.url,
        default="1000/hour",
        on_storage_error="deny",
        breaker_pause=0.2,
        command_timeout=1.0,  # roomy: a busy test host must not time out a healthy master
    )
    doomed, healthy = one_client_per_master(cluster, settings)
    cluster.choose_victim_of(doomed[0].key)
    calls = Calls(kind, settings)
    answers: dict[str, list[str]] = {"doomed": [], "healthy": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            assert isinstance(calls.apply(doomed), Outcome)
            assert isinstance(calls.apply(healthy), Outcome)
            del events[:]
            cluster.inject("master", 0)
            for _ in range(20):
                for name, hits in (("doomed", doomed), ("healthy", healthy)):
                    answers[name].append(type(calls.apply(hits)).__name__)
                time.sleep(0.03)
            cluster.heal("master")
            back = time.monotonic() + 10
            while isinstance(calls.apply(doomed), Deny) and time.monotonic() < back:
                time.sleep(0.05)
        finally:
            calls.close()
            gc.collect()
    assert set(answers["healthy"]) == {"Outcome"}
    assert answers["doomed"] == ["Deny"] * 20
    stories = [(e.name, e.reason) for e in events if e.name.startswith("ratelimit.storage")]
    assert [name for name, _ in stories] == ["ratelimit.storage_down", "ratelimit.storage_up"]
    assert cluster.victim is not None
    assert f"node 127.0.0.1:{cluster.victim.port}" in stories[0][1]
    assert not [w for w in caught if "Unclosed" in str(w.message)]


QUICK = Timing(warm=0.5, fault=1.0, tail=0.3, threads=3, deadline=0.5, margin=0.75, recovery=3.0)
"""The fault suite's timing, short, with roomy margins for a busy test host."""


@pytest.mark.server
@pytest.mark.redis
@pytest.mark.parametrize(
    ("only", "server", "policy"),
    [
        ("single:kill", "uvicorn", "memory"),
        ("single:freeze", "gunicorn", "deny"),
        ("cluster", "uvicorn", "deny"),
    ],
)
def test_the_fault_suite_fast_cases(tmp_path: Path, only: str, server: str, policy: str) -> None:
    """``make faults``' fast experiments, short: Redis killed, frozen, a Cluster master killed,
    under two gunicorn workers; every check of the suite holds (no 5xx, the deadline, the
    bound, one down and one up per worker, recovery, exactness after it, nothing unclosed)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are needed")
    runs = suite(tmp_path, {only}, [server], [policy], QUICK)
    assert [(run.name, run.failures) for run in runs] == [(runs[0].name, [])]
    assert runs[0].figures["requests"] > 50
