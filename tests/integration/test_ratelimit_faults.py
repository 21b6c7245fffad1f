"""Redis faults under each ``on_storage_error`` policy, through real servers on 127.0.0.1.

For ``memory``, ``allow`` and ``deny``, an ASGI app (uvicorn) and a WSGI app (werkzeug) share a
``redis-server`` that refuses connections at startup, then answers, then stalls (``CLIENT PAUSE``,
longer than the command timeout), then is killed and restarted. Every request must be answered as
the policy says, before the client's 2-second timeout, never with a 500; limiting must resume on
Redis after each fault; each outage is one ``storage_down`` and one ``storage_up`` event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import redis

from secmw import audit
from secmw.asgi.ratelimit import RateLimitMiddleware as ASGIRateLimit
from secmw.wsgi.ratelimit import RateLimitMiddleware as WSGIRateLimit
from tests.integration.apps.ratelimit_asgi import pid_app
from tests.integration.apps.ratelimit_wsgi import pid_app as wsgi_pid_app
from tests.redis_support import RedisServer
from tests.support import uvicorn_server, werkzeug_server

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
