"""Redis deployments the fault suite breaks: one server, a Cluster (with or without replicas), a
master watched by Sentinel. Real ``redis-server`` processes on free loopback ports.

Each deployment names its faults, injects one on the node holding a given client's keys, heals
it, and answers whether that client's keys are served again (the moment the outage ends for
them: the server is back, or a replica took over).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.redis_support import HOST, RedisServer, free_port

DEBUG = ("--enable-debug-command", "yes")  # DEBUG SLEEP is one of the faults
NODE_TIMEOUT_MS = 1000  # Cluster and Sentinel declare a silent master down after this


class FaultRedis(RedisServer):
    """A ``redis-server`` with ``DEBUG`` allowed and, in a cluster, a short node timeout and no
    full coverage required (a dead master takes down its own slots only)."""

    def __init__(self, workdir: Path, extra: list[str], *, cluster: bool = False) -> None:
        options = [*DEBUG, *extra]
        if cluster:
            options += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
            options += ["--cluster-require-full-coverage", "no"]
        super().__init__(workdir, cluster=cluster, extra=tuple(options))

    def start(self) -> FaultRedis:
        """Start and wait until it answers PING."""
        super().start()
        return self

    def signal(self, number: int) -> None:
        """Send a signal (SIGSTOP freezes it, SIGCONT resumes it)."""
        assert self.process is not None
        os.kill(self.process.pid, number)


def wait_for(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` every 50 ms until true, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(port: int, key: str) -> bool:
    """Whether the master on ``port`` accepts a write of ``key`` now."""
    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=0.2) as client:
            client.set("faults:probe:" + key, 1, px=1000)
        return True
    except redis.RedisError:
        return False


class Single:
    """One ``redis-server``: killed, frozen (SIGSTOP), paused (``CLIENT PAUSE``), or busy in a
    long command (``DEBUG SLEEP``)."""

    name = "single"
    faults = ("kill", "freeze", "pause", "sleep")

    def loses_counts(self, fault: str) -> bool:
        """Whether the fault empties Redis (no persistence: a killed server restarts empty)."""
        return fault == "kill"

    def __init__(self, workdir: Path) -> None:
        self.server = FaultRedis(workdir, []).start()
        self.url = self.server.url
        self._sleeper: threading.Thread | None = None

    def client_on_victim(self, name: str) -> bool:
        """Every client lives on the one server."""
        return True

    def inject(self, fault: str, seconds: float) -> None:
        """Start ``fault`` (pause and sleep end by themselves after ``seconds``)."""
        if fault == "kill":
            self.server.kill()
        elif fault == "freeze":
            self.server.signal(signal.SIGSTOP)
        elif fault == "pause":
            with self.server.client() as admin:
                admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        else:

            def sleep() -> None:
                with redis.Redis(host=HOST, port=self.server.port, socket_timeout=30) as admin:
                    admin.execute_command("DEBUG", "SLEEP", seconds)

            self._sleeper = threading.Thread(target=sleep, daemon=True)
            self._sleeper.start()

    def heal(self, fault: str) -> None:
        """End ``fault``."""
        if fault == "kill":
            self.server.start()
        elif fault == "freeze":
            self.server.signal(signal.SIGCONT)
        elif self._sleeper is not None:
            self._sleeper.join(30)
            self._sleeper = None

    def serves(self, name: str) -> bool:
        """Whether the server accepts writes again."""
        return answers(self.server.port, name)

    def stop(self) -> None:
        self.server.stop()


class Cluster:
    """Three masters (and a replica each, with ``replicas``), full slot coverage not required:
    a dead master takes down its own slots only. The fault kills the master of the victim's slot;
    healing restarts it on its port (it rejoins as a master, or as a replica of its successor)."""

    faults = ("master",)

    def loses_counts(self, fault: str) -> bool:
        """Whether counts can be lost: the killed master restarts empty, or the replica that
        takes over lacks the writes the (asynchronous) replication had not sent yet."""
        return True

    def __init__(self, workdir: Path, *, replicas: bool) -> None:
        cli = shutil.which("redis-cli") or "redis-cli"
        self.nodes = [
            FaultRedis(workdir, [], cluster=True).start() for _ in range(6 if replicas else 3)
        ]
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        create = [cli, "--cluster", "create", *addresses, "--cluster-yes"]
        create += ["--cluster-replicas", "1" if replicas else "0"]
        subprocess.run(create, check=True, capture_output=True, timeout=30)
        wait_for(self._ready, 20, "the cluster")
        self.url = "redis+cluster://" + ",".join(addresses[:3])
        self.victim: FaultRedis | None = None
        self.replicas = replicas
        self.name = "cluster+replicas" if replicas else "cluster"

    def _slots(self) -> list[tuple[int, int, int]]:
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                with node.client() as client:
                    slots = client.execute_command("CLUSTER", "SLOTS")
                return [(int(a), int(b), int(owner[1])) for a, b, owner, *_ in slots]
            except redis.RedisError:
                continue
        return []

    def _ready(self) -> bool:
        up = [node for node in self.nodes if node.process is not None]
        for node in up:
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
            if b"cluster_state:ok" not in info:
                return False
        return sum(b - a + 1 for a, b, _ in self._slots()) == 16384

    def owner(self, name: str) -> int:
        """The port of the master serving client ``name``'s keys now (the test apps key a
        client named by ``X-Client`` as ``{c:<name>}``)."""
        return self.owner_of(f"{{c:{name}}}")

    def owner_of(self, key: str) -> int:
        """The port of the master serving ``key`` now."""
        slot = key_slot(key.encode())
        return next(port for a, b, port in self._slots() if a <= slot <= b)

    def client_on_victim(self, name: str) -> bool:
        """Whether ``name``'s keys live on the master the fault kills."""
        assert self.victim is not None
        return self.owner(name) == self.victim.port

    def choose_victim(self, name: str) -> None:
        """The master of client ``name``'s keys is the one to kill."""
        self.choose_victim_of(f"{{c:{name}}}")

    def choose_victim_of(self, key: str) -> None:
        """The master of ``key`` is the one to kill."""
        port = self.owner_of(key)
        self.victim = next(node for node in self.nodes if node.port == port)

    def inject(self, fault: str, seconds: float) -> None:
        assert self.victim is not None
        self.victim.kill()

    def heal(self, fault: str) -> None:
        assert self.victim is not None
        self.victim.start()
        wait_for(self._ready, 20, "the cluster to heal")

    def serves(self, name: str) -> bool:
        """Whether some live master serves ``name``'s slot."""
        try:
            port = self.owner(name)
        except StopIteration:
            return False
        return answers(port, name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Sentinel:
    """A master, a replica and one Sentinel (quorum 1): the fault kills the master, Sentinel
    promotes the replica; healing restarts the old master, which Sentinel makes a replica."""

    name = "sentinel"
    faults = ("failover",)

    def loses_counts(self, fault: str) -> bool:
        """The promoted replica lacks the writes the (asynchronous) replication had not sent."""
        return True

    def __init__(self, workdir: Path) -> None:
        self.master = FaultRedis(workdir, []).start()
        self.replica = FaultRedis(workdir, ["--replicaof", HOST, str(self.master.port)]).start()
        self.port = free_port()
        config = workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind {HOST}\nprotected-mode no\ndir {workdir}\n"
            f"sentinel monitor mymaster {HOST} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds mymaster {NODE_TIMEOUT_MS}\n"
            "sentinel failover-timeout mymaster 2000\n",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [self.master.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis+sentinel://{HOST}:{self.port}/mymaster"
        wait_for(lambda: self._replicas() > 0, 20, "Sentinel to see the replica")

    def _ask(self, *command: str) -> object:
        with redis.Redis(host=HOST, port=self.port, socket_timeout=1) as client:
            return client.execute_command("SENTINEL", *command)

    def _replicas(self) -> int:
        try:
            found = self._ask("REPLICAS", "mymaster")
        except redis.RedisError:
            return 0
        return len(found) if isinstance(found, list) else 0

    def master_port(self) -> int:
        address = self._ask("GET-MASTER-ADDR-BY-NAME", "mymaster")
        assert isinstance(address, list | tuple)
        return int(address[1])

    def client_on_victim(self, name: str) -> bool:
        return True

    def inject(self, fault: str, seconds: float) -> None:
        port = self.master_port()
        self.master, self.replica = (
            (self.master, self.replica) if self.master.port == port else (self.replica, self.master)
        )
        self.master.kill()

    def heal(self, fault: str) -> None:
        wait_for(lambda: self.master_port() != self.master.port, 20, "the failover")
        # Back as a replica of the new master (as Sentinel would make it, in its own time).
        self.master.extra = (*DEBUG, "--replicaof", HOST, str(self.master_port()))
        self.master.start()
        # Sentinel may take its time to accept the old master back (seen once past 20 s).
        wait_for(lambda: self._replicas() > 0 and self._in_sync(), 60, "a replica again")

    def _in_sync(self) -> bool:
        try:
            with redis.Redis(host=HOST, port=self.master.port, socket_timeout=1) as client:
                return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def serves(self, name: str) -> bool:
        try:
            return answers(self.master_port(), name)
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.master.stop()
        self.replica.stop()
