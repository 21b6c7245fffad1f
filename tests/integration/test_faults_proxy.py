"""Network faults between the stack and Redis, through a TCP proxy on 127.0.0.1.

The proxy sits between ``secmw.asgi.SecurityStack`` and a real ``redis-server``. It forwards,
delays every chunk, stalls (stops reading, as during a partition: bytes wait in the kernel and
flow again on heal), or cuts (resets every connection, open ones included). For each
``on_storage_error`` policy, every request must get the policy's answer before the client's
timeout (well above ``connect_timeout + command_timeout``), never a 500, and limiting must be back
on Redis within a few seconds once the proxy heals, with as many ``storage_up`` events as
``storage_down`` ones. One run goes over uvicorn with concurrent clients.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
import redis

from secmw import audit
from secmw.asgi import SecurityStack
from secmw.auth.apikey import hash_api_key
from tests.redis_support import RedisServer
from tests.support import uvicorn_server

KEY = "faults-proxy-key-01"
CLIENT_TIMEOUT = 2.0  # the check: every answer before this; the stack's own deadline is 0.4 s
RECOVERY = 5.0  # seconds the stack may take to be back on Redis after the proxy heals
SLOW = 0.6  # a per-chunk delay past connect_timeout + command_timeout
TOLERABLE = 0.02  # a per-chunk delay well within the timeouts: Redis keeps being used


class FaultProxy:
    """A loopback TCP proxy that can forward, delay, stall or cut (threads, one per direction)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.delay = 0.0
        self.cutting = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        """The Redis URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def slow(self, delay: float) -> None:
        """Forward each chunk after ``delay`` seconds."""
        self.heal()
        self.delay = delay

    def stall(self) -> None:
        """Stop reading in both directions: connections stay open, nothing is answered."""
        self.heal()
        self._flowing.clear()

    def cut(self) -> None:
        """Reset every open connection, and every new one as soon as it is accepted."""
        self.heal()
        self.cutting = True
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)

    def heal(self) -> None:
        """Forward again, at once."""
        self.delay = 0.0
        self.cutting = False
        self._flowing.set()

    def close(self) -> None:
        """Stop accepting, drop every connection, join the threads."""
        self._closed.set()
        self._flowing.set()
        self.listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)
        for thread in list(self._threads):
            thread.join(5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cutting:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        source.settimeout(0.05)
        try:
            while not self._closed.is_set():
                if not self._flowing.wait(0.05):
                    continue  # stalled: leave the bytes in the kernel until the proxy heals
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while not self._flowing.wait(0.05):  # stalled while this chunk was read
                    if self._closed.is_set():
                        return
                if self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        except OSError:
            pass  # reset by cut(), or by the other side
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.close()


@pytest.fixture
def redis_behind_proxy(redis_process: RedisServer) -> Iterator[tuple[RedisServer, FaultProxy]]:
    """A dedicated redis-server and a proxy in front of it."""
    redis_process.start()
    proxy = FaultProxy(redis_process.port)
    try:
        yield redis_process, proxy
    finally:
        proxy.close()


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    """200 ok (and a lifespan that does nothing)."""
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def build_stack(proxy: FaultProxy, policy: str, prefix: str) -> SecurityStack:
    """The whole stack, its rate limits and failure throttle on Redis through the proxy."""
    return SecurityStack(
        ok_app,
        api_keys={"keys": [{"hash": hash_api_key(KEY), "id": "svc"}]},
        auth={"required": ["/**"]},
        rate_limit={
            "storage_uri": proxy.url,
            "on_storage_error": policy,
            "strategy": "fixed-window",
            "default": "100000/minute",
            "key_prefix": prefix,
            "breaker_pause": 0.2,
            "connect_timeout": 0.2,
            "command_timeout": 0.2,
        },
    )


async def close_stack(stack: SecurityStack) -> None:
    """Close every Redis client of the stack's layers, on the loop that used them."""
    layer: Any = getattr(stack, "_entry", None)
    while layer is not None and layer is not stack.app:
        if hasattr(layer, "aclose"):
            await layer.aclose()
        layer = getattr(layer, "app", None)
    if stack.throttle is not None:
        await stack.throttle.aclose()


def counted(server: RedisServer, prefix: str) -> int:
    """Units charged in Redis under ``prefix`` (read directly, not through the proxy)."""
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1) as client:
        return sum(int(client.get(key) or 0) for key in client.keys(f"{prefix}:*"))


def by_policy(response: httpx.Response, policy: str) -> None:
    """The documented answer while Redis cannot be used."""
    if policy == "deny":
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
    elif policy == "allow":
        assert response.status_code == 200
        assert "ratelimit" not in response.headers
    else:  # memory: limited in this process meanwhile
        assert response.status_code == 200
        assert response.headers["ratelimit"].startswith('"default";r=')


def storage_events(events: list[audit.AuditEvent]) -> tuple[int, int]:
    """(storage_down, storage_up) events so far."""
    names = [event.name for event in events]
    return names.count("ratelimit.storage_down"), names.count("ratelimit.storage_up")


Get = Callable[[], Awaitable[httpx.Response]]


async def recovered(get: Get, server: RedisServer, prefix: str, events: list[Any]) -> None:
    """Send requests until one is charged in Redis and every outage has its recovery event."""
    deadline = time.monotonic() + RECOVERY
    while time.monotonic() < deadline:
        before = counted(server, prefix)
        response = await get()
        assert response.status_code in (200, 503), response.text
        down, up = storage_events(events)
        if counted(server, prefix) > before and down == up:
            assert response.status_code == 200
            assert "ratelimit" in response.headers
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not back on Redis {RECOVERY}s after the proxy healed: {storage_events(events)}")


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["memory", "allow", "deny"])
def test_network_faults_follow_the_policy_in_process(
    redis_behind_proxy: tuple[RedisServer, FaultProxy],
    events: list[audit.AuditEvent],
    policy: str,
) -> None:
    """Slow, stalled, cut: answered per policy before the client timeout; healed: back on Redis."""
    server, proxy = redis_behind_proxy
    prefix = "fp" + uuid.uuid4().hex[:10]
    stack = build_stack(proxy, policy, prefix)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=stack)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def get() -> httpx.Response:
                request = client.get("/work", headers={"X-API-Key": KEY})
                return await asyncio.wait_for(request, CLIENT_TIMEOUT)

            assert (await get()).status_code == 200
            assert counted(server, prefix) == 1

            proxy.slow(TOLERABLE)  # slower, within the timeouts: still limited on Redis
            response = await get()
            assert response.status_code == 200
            assert counted(server, prefix) == 2
            assert storage_events(events) == (0, 0)

            for fault in (lambda: proxy.slow(SLOW), proxy.stall, proxy.cut):
                fault()
                for _ in range(3):
                    by_policy(await get(), policy)
                assert storage_events(events)[0] > storage_events(events)[1]
                proxy.heal()
                await recovered(get, server, prefix, events)
        await close_stack(stack)

    asyncio.run(scenario())
    down, up = storage_events(events)
    assert down == up >= 3  # each fault opened the breakers once, each heal closed them


def lifespan_closing(stack: SecurityStack) -> Any:
    """The stack, plus a lifespan that closes its Redis clients on the server's loop."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await stack(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_stack(stack)
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@pytest.mark.server
@pytest.mark.redis
def test_a_partition_over_uvicorn_answers_every_client_in_time(
    redis_behind_proxy: tuple[RedisServer, FaultProxy], events: list[audit.AuditEvent]
) -> None:
    """Eight concurrent clients during a stall all get 503 in time; after heal, 200 on Redis."""
    server, proxy = redis_behind_proxy
    prefix = "fp" + uuid.uuid4().hex[:10]
    stack = build_stack(proxy, "deny", prefix)

    async def scenario(url: str) -> None:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, limits=limits) as client:

            async def get() -> httpx.Response:
                return await client.get("/work", headers={"X-API-Key": KEY})

            assert (await get()).status_code == 200
            proxy.stall()
            for _ in range(2):
                responses = await asyncio.gather(*(get() for _ in range(8)))
                for response in responses:
                    by_policy(response, "deny")
            proxy.heal()
            await recovered(get, server, prefix, events)

    with uvicorn_server(lifespan_closing(stack), lifespan="on") as url:
        asyncio.run(scenario(url))
    down, up = storage_events(events)
    assert down == up >= 1
