"""Real Redis for tests: a ``redis-server`` (or a cluster of three) on free loopback ports.

``redis_url`` uses ``SECMW_TEST_REDIS_URL`` when set, else starts ``redis-server``. Without a
binary the Redis tests skip with a reason, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

HOST = "127.0.0.1"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, where every Redis test must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: Redis tests must run)")
    pytest.skip(reason)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, bus: bool = False) -> int:
    """A free loopback port (and, for a cluster node, its bus port ``port + 10000``)."""
    for _ in range(200):
        port = random.randint(20000, 29999) if bus else random.randint(30000, 59999)
        if _port_free(port) and (not bus or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port")


class RedisServer:
    """One ``redis-server`` process on loopback: start, kill, start again on the same port."""

    def __init__(
        self,
        workdir: Path,
        *,
        cluster: bool = False,
        port: int | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary: str = shutil.which("redis-server") or "redis-server"
        self.workdir = workdir
        self.cluster = cluster
        self.extra = extra  # more options, after the defaults (a later one wins)
        self.port = port or free_port(bus=cluster)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client to this node."""
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start and wait until it answers PING (a few hundred milliseconds at most)."""
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            args += ["--cluster-config-file", f"nodes-{self.port}.conf"]
        args += self.extra
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """Terminate and wait."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None


def _require_binary() -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH (or set SECMW_TEST_REDIS_URL)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL: ``SECMW_TEST_REDIS_URL``, else a session-wide ``redis-server``."""
    external = os.environ.get("SECMW_TEST_REDIS_URL")
    if external:
        yield external
        return
    _require_binary()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisServer]:
    """A dedicated, not yet started ``redis-server`` the test may start, kill and restart."""
    _require_binary()
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three cluster-mode ``redis-server`` processes joined by ``redis-cli --cluster create``."""
    _require_binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        unavailable("redis-cli is not on PATH")
        return
    workdir = tmp_path_factory.mktemp("cluster")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            nodes.append(RedisServer(workdir, cluster=True).start())
        addresses = [f"{HOST}:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while not all(_cluster_ok(node) for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not become ready")
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[str]:
    """A master ``redis-server`` and one Sentinel watching it as ``mymaster``: the
    ``redis+sentinel://`` URI of the pair."""
    _require_binary()
    master = RedisServer(tmp_path).start()
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind {HOST}\nprotected-mode no\ndir {tmp_path}\n"
        f"sentinel monitor mymaster {HOST} {master.port} 1\n",
        encoding="utf-8",
    )
    sentinel = subprocess.Popen(
        [master.binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(host=HOST, port=port, socket_timeout=5) as client:
                    if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
                        break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline or sentinel.poll() is not None:
                raise RuntimeError("redis-server --sentinel did not start")
            time.sleep(0.02)
        yield f"redis+sentinel://{HOST}:{port}/mymaster"
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        master.stop()


def cluster_url(nodes: list[RedisServer]) -> str:
    """The ``redis+cluster://`` URI of a cluster fixture."""
    return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in nodes)


def _cluster_ok(node: RedisServer) -> bool:
    with node.client() as client:
        info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def connected_clients(client: redis.Redis) -> int:
    """How many clients the server behind ``client`` has connected (``client`` included)."""
    return int(client.info("clients")["connected_clients"])


def clients_after_closing(client: redis.Redis, expected: int, timeout: float = 5.0) -> int:
    """``connected_clients`` once it is down to ``expected`` or ``timeout`` has passed: the
    server notices closed sockets on its next event loop turn, not at once."""
    deadline = time.monotonic() + timeout
    while (count := connected_clients(client)) > expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count
