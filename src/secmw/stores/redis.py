"""One Redis client factory for every store that keeps state (denylist, sessions, TOTP replay,
single-use tokens and refresh grants), with the URL schemes the rate limiter accepts:

- ``redis://``, ``rediss://``, ``unix://`` (and ``redis+unix://``): one server;
- ``redis+cluster://[user:password@]host:port,host:port``: a Cluster, found from any of the
  listed nodes (``rediss+cluster://`` with TLS);
- ``redis+sentinel://[user:password@]host:port,host:port/service``: the master Sentinel names
  ``service`` (the password is the master's; Sentinels are asked without one);
- ``valkey://``, ``valkeys://``, ``valkey+cluster://``...: the same with a Valkey server, which
  speaks the Redis protocol, through redis-py.

:func:`sync_client` and :func:`async_client` are twins: same URL, same timeouts (``timeout`` on
connect and on every call; no retries, a stalled server fails the request). Stores keep every
multi-key operation inside one hash slot, or split it, so each works on a Cluster.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from secmw.errors import ConfigurationError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

try:  # the redis extra: a store without it never meets these
    from redis.exceptions import RedisClusterException, RedisError

    REDIS_ERRORS: tuple[type[Exception], ...] = (
        RedisError,
        RedisClusterException,  # not a RedisError: a cluster with no node for a slot
        OSError,
        asyncio.TimeoutError,
    )
except ImportError:  # pragma: no cover - redis is an optional extra
    REDIS_ERRORS = (OSError, asyncio.TimeoutError)
"""What a Redis client raises when the server cannot answer (a store turns it into a 503)."""

SCHEMES = frozenset(
    f"{server}{tls}{suffix}"
    for server in ("redis", "valkey")
    for tls in ("", "s")
    for suffix in ("", "+cluster", "+sentinel")
) | {"unix", "redis+unix", "valkey+unix"}


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed store URL: ``kind`` is ``single``, ``cluster`` or ``sentinel``."""

    kind: str
    url: str = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def parse_url(url: str, setting: str = "storage URL") -> RedisURL:
    """What kind of deployment ``url`` names.

    Raises:
        ConfigurationError: an unknown scheme or a malformed node list (the URL is not echoed:
            it may hold a password).
    """
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES or "://" not in url:
        raise ConfigurationError(
            f"{setting}: unsupported scheme (use {', '.join(sorted(SCHEMES))})"
        )
    base = scheme.replace("valkey", "redis")
    if base.endswith("unix"):
        return RedisURL("single", "unix" + url[len(scheme) :])
    if base in ("redis", "rediss"):
        return RedisURL("single", base + url[len(scheme) :])
    parts = urlsplit("redis" + url[len(scheme) :])
    kind = "cluster" if base.endswith("+cluster") else "sentinel"
    hosts = parts.netloc.rpartition("@")[2]
    try:
        nodes = tuple(_node(item) for item in hosts.split(",") if item)
    except ValueError:
        raise ConfigurationError(f"{setting}: malformed host:port list") from None
    service = parts.path.strip("/").partition("/")[0]
    if not nodes or (kind == "sentinel" and not service):
        raise ConfigurationError(f"{setting}: name the nodes (and, for Sentinel, the service)")
    username, password = _credentials(parts.netloc)
    return RedisURL(kind, url, nodes, service, username, password, base.startswith("rediss"))


def _node(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return (host.strip("[]") or "localhost", int(port)) if host else (item, 6379)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    user, colon, password = netloc.rpartition("@")[0].partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def sync_client(url: str, timeout: float, setting: str = "storage URL") -> Any:
    """A redis-py client (``Redis`` or ``RedisCluster``) for ``url``.

    Imported here, not at module level, so that secmw imports without the ``redis`` extra.
    """
    import redis
    import redis.cluster
    import redis.sentinel

    target = parse_url(url, setting)
    options = _options(target, timeout)
    if target.kind == "single":
        return redis.Redis.from_url(target.url, **options)
    cluster: Any = redis.cluster  # parts of redis-py are untyped
    if target.kind == "cluster":
        nodes = [cluster.ClusterNode(host, port) for host, port in target.nodes]
        return cluster.RedisCluster(startup_nodes=nodes, ssl=target.tls, **options)
    sentinels: Any = redis.sentinel
    sentinel = sentinels.Sentinel(list(target.nodes), **_sentinel_options(timeout))
    return sentinel.master_for(target.service, **options)


def async_client(url: str, timeout: float, setting: str = "storage URL") -> Any:
    """The ``redis.asyncio`` twin of :func:`sync_client`."""
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    target = parse_url(url, setting)
    options = _options(target, timeout)
    if target.kind == "single":
        return redis.asyncio.Redis.from_url(target.url, **options)
    cluster: Any = redis.asyncio.cluster  # parts of redis-py are untyped
    if target.kind == "cluster":
        nodes = [cluster.ClusterNode(host, port) for host, port in target.nodes]
        return cluster.RedisCluster(startup_nodes=nodes, ssl=target.tls, **options)
    sentinels: Any = redis.asyncio.sentinel
    sentinel = sentinels.Sentinel(list(target.nodes), **_sentinel_options(timeout))
    return sentinel.master_for(target.service, **options)


def _options(target: RedisURL, timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.kind != "single":  # a single server's URL carries its own credentials
        options.update(username=target.username, password=target.password)
    if target.kind == "sentinel" and target.tls:
        options["ssl"] = True
    return options


def _sentinel_options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "sentinel_kwargs": {"socket_timeout": timeout, "socket_connect_timeout": timeout},
    }


def client_pair(
    url: str, timeout: float, setting: str = "storage URL"
) -> tuple[redis.Redis, redis.asyncio.Redis]:
    """A sync and an async client for ``url`` (:func:`sync_client`, :func:`async_client`);
    a URL they cannot use is a ConfigurationError naming ``setting``."""
    return sync_client(url, timeout, setting), async_client(url, timeout, setting)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Cluster (multi-key commands must share a hash slot)."""
    return type(client).__name__ == "RedisCluster"


__all__ = [
    "REDIS_ERRORS",
    "SCHEMES",
    "RedisURL",
    "async_client",
    "client_pair",
    "is_cluster",
    "parse_url",
    "sync_client",
]
