"""The parts both Redis storages share: the Lua script's arguments and reply, key groups per
cluster slot, and the client options read from the storage URI. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, Protocol

from secmw.core.memo import remember
from secmw.errors import ConfigurationError
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import STATE_WIDTH, LimitHit, Outcome, State, Strategy

LUA = resources.files("secmw.ratelimit").joinpath("ratelimit.lua").read_text(encoding="utf-8")
_URI = "rate_limit.storage_uri"
_PACKED_CAP = 1024  # packed script calls remembered (one per distinct set of keys and limits)


class StorageFailure(Exception):
    """The storage could not answer; the message names the cause's type only (never a URI)."""


class NodeFailure(Exception):
    """A call to one Cluster node failed: ``node`` names it (``host:port``), ``key`` is a key
    the call sent there, ``error`` is why."""

    def __init__(self, node: str, key: str, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.node = node
        self.key = key
        self.error = error


class RemoteNodes(Protocol):
    """What the breakers need of a Redis storage (sync or async): where a key lives."""

    clustered: bool

    def node(self, key: str) -> str:
        """The node ``key`` lives on (``""`` off a cluster)."""


class MapRefresh(Exception):
    """A cluster call ran out of time while the client was re-reading the slot map: no node is
    to blame (the call waited for the refresh, not for its node)."""


def refreshing(client: Any) -> bool:
    """Whether a redis-py asyncio cluster client has a slot-map refresh asked for or under way
    (its calls wait for it)."""
    return bool(getattr(client, "_initialize", False))


def node_of(client: Any, key: str, owners: dict[int, str]) -> str:
    """The ``host:port`` of the master a cluster client sends ``key`` to, from its slot map (no
    I/O). A slot no master serves (its master died and had no replica) keeps its last owner,
    remembered in ``owners``: its keys stay with that master's breaker until it is back.
    ``""`` while the map is unknown (the client has not read it yet)."""
    try:
        slot = client.keyslot(key)
        nodes = client.nodes_manager.slots_cache.get(slot)
    except Exception:  # the map is not read yet
        return ""
    if not nodes:
        return owners.get(slot, "")
    name = owners[slot] = str(nodes[0].name)
    return name


def script_call(
    strategy: Strategy, hits: Sequence[LimitHit], charging: bool
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``ratelimit.lua`` for these limits."""
    keys: list[str] = []
    args: list[Any] = ["1" if charging else "0", strategy]
    for hit in hits:
        if strategy == "sliding-window-counter":
            keys += [hit.key + ":p", hit.key + ":c"]
        else:
            keys.append(hit.key)
        args += [hit.amount, hit.window_ms, hit.cost]
    return keys, args


def refund_call(strategy: Strategy, hits: Sequence[LimitHit]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``ratelimit.lua`` giving back the units of these limits."""
    keys, args = script_call(strategy, hits, False)
    args[0] = "r"
    return keys, args


def carry_call(strategy: Strategy, hits: Sequence[LimitHit]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``ratelimit.lua`` charging these limits' costs whether or not they have
    room (the units a worker admitted from memory while Redis could not answer)."""
    keys, args = script_call(strategy, hits, False)
    args[0] = "a"
    return keys, args


Direct = tuple[Any, type[Exception]]
"""redis-py's plain client (one server, or Sentinel): its connection pool and NOSCRIPT error."""


def direct(client: Any) -> Direct | None:
    """What running the script as ``EVALSHA`` on a pooled connection takes, for redis-py's plain
    client (sync or asyncio); None for a cluster client or valkey's, which go through
    ``Script``."""
    import redis  # the redis extra: imported only when a Redis URI is configured
    import redis.asyncio

    if isinstance(client, redis.Redis | redis.asyncio.Redis):
        return client.connection_pool, redis.exceptions.NoScriptError
    return None


def clients_of(storage: Any, client: Any) -> list[Any]:
    """The clients to close: the one ``limits`` built for the script (``client``) and, with
    Sentinel, those of the Sentinels it asks where the master is (closing the master's client
    leaves theirs open)."""
    return [client, *getattr(getattr(storage, "sentinel", None), "sentinels", ())]


def packed_call(
    memo: dict[tuple[Any, ...], Any], connection: Any, sha: str, keys: list[str], args: list[Any]
) -> Any:
    """``EVALSHA`` of the script with these KEYS and ARGV, packed by a redis-py ``connection``
    (its encoder) and remembered in ``memo``: a client's calls repeat (the same keys and limits
    until its window or identity changes), and packing is the costly part of a call."""
    call = (*keys, *args)
    packed = memo.get(call)
    if packed is None:
        command = connection.pack_command("EVALSHA", sha, len(keys), *call)
        packed = remember(memo, _PACKED_CAP, call, command)
    return packed


def parse_reply(strategy: Strategy, hits: Sequence[LimitHit], reply: Any) -> Outcome:
    """The :class:`Outcome` in a script reply; StorageFailure when it has the wrong shape."""
    width = STATE_WIDTH[strategy]
    try:
        values = [int(value) for value in reply]
    except (TypeError, ValueError):
        raise StorageFailure("unexpected reply from the rate-limit script") from None
    if len(values) != 1 + width * len(hits):
        raise StorageFailure("unexpected reply from the rate-limit script")
    states = tuple(tuple(values[1 + i * width : 1 + (i + 1) * width]) for i in range(len(hits)))
    return Outcome(values[0] == 1, states)


def groups(hits: Sequence[LimitHit], clustered: bool) -> list[list[LimitHit]]:
    """One script call per hash tag in a cluster (keys of a call must share a slot), else one."""
    if not clustered:
        return [list(hits)]
    by_tag: dict[str, list[LimitHit]] = {}
    for hit in hits:
        by_tag.setdefault(hit.tag, []).append(hit)
    return list(by_tag.values())


def merge(parts: Iterable[tuple[list[LimitHit], Outcome]], hits: Sequence[LimitHit]) -> Outcome:
    """Put per-group outcomes back in the order of ``hits``."""
    found: dict[int, State] = {}
    admitted = True
    for group, outcome in parts:
        admitted = admitted and outcome.admitted
        for hit, state in zip(group, outcome.states, strict=True):
            found[id(hit)] = state
    return Outcome(admitted, tuple(found[id(hit)] for hit in hits))


def scheme_of(uri: str) -> str:
    """The URI scheme (``redis+cluster``), read without touching the credentials."""
    return uri.partition("://")[0].lower()


def redis_options(settings: RateLimitSettings, uri: str, *, asyncio: bool) -> dict[str, Any]:
    """Client options: no client-side retries (the breaker decides), and socket timeouts within
    the call's deadline (``command_timeout``, which covers the connect too)."""
    from redis.backoff import NoBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    deadline = settings.command_timeout
    options: dict[str, Any] = {
        "socket_connect_timeout": min(settings.connect_timeout, deadline),
        "socket_timeout": deadline,
        "retry": retry,
    }
    if scheme_of(uri).endswith("+sentinel"):
        options["sentinel_kwargs"] = {
            "socket_connect_timeout": min(settings.connect_timeout, deadline),
            "socket_timeout": deadline,
            "retry": retry,
        }
    if asyncio:
        options["implementation"] = "redispy"  # the same client family as the sync side
    return options


def limits_error(exc: Exception) -> ConfigurationError:
    """A ``limits`` configuration error (a missing client library...) naming the variable."""
    return ConfigurationError(f"{_URI}: {exc} (install `secmw[redis]`, or `valkey` for valkey://)")
