"""Per-request cost of client resolution + IP policy with 1, 100 and 10,000 networks.

Run: ``.venv/bin/python -m benchmarks.bench_ipfilter`` (about 15 s). Each list (allow, deny,
trusted proxies) holds N random networks, half IPv4 and half IPv6. The request mix: a direct
client, one and three trusted proxies in X-Forwarded-For, an RFC 7239 Forwarded chain, a spoofed
header from an untrusted peer, and IPv6. The figure is the median, over interleaved repeats, of
the mean time per request of a batch. The same code with a list scanned front to back in place of
the sorted ranges (what a naive allowlist does) is timed beside it. Writes
``benchmarks/results/ipfilter.json`` and prints a Markdown table.
"""

from __future__ import annotations

import ipaddress
import json
import platform
import random
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.ip import filter as filter_module
from secmw.ip import forwarded
from secmw.ip.addresses import IPNetwork, NetworkSet
from secmw.ip.filter import IPFilter, IPPolicy
from secmw.ip.forwarded import ClientAddressResolver

SIZES = (1, 100, 10_000)
REPEATS = 9
BATCH = 3_000
LINEAR_BATCH = {1: 3_000, 100: 600, 10_000: 12}  # the linear scan is slow at 10,000
RESULTS = Path(__file__).parent / "results" / "ipfilter.json"


def random_networks(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct random networks, half IPv4 (/16-/28), half IPv6 (/32-/64)."""
    found: set[str] = set()
    while len(found) < count:
        if len(found) % 2:
            prefix = rng.randint(32, 64)
            value = rng.getrandbits(128) >> (128 - prefix) << (128 - prefix)
            found.add(str(ipaddress.IPv6Network((value, prefix))))
        else:
            prefix = rng.randint(16, 28)
            value = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            found.add(str(ipaddress.IPv4Network((value, prefix))))
    return sorted(found)


def requests(rng: random.Random, allow: list[str], proxy: str) -> list[RequestView]:
    """The request mix: clients inside allowed networks and random ones, direct and proxied."""

    def inside(index: int) -> str:
        network = ipaddress.ip_network(allow[index % len(allow)])
        return str(network.network_address + rng.randrange(network.num_addresses))

    def view(peer: str, *pairs: tuple[str, str], path: str = "/api/items") -> RequestView:
        return RequestView("GET", path, headers=Headers(pairs), peer=peer)

    stranger = str(ipaddress.IPv4Address(rng.getrandbits(32)))
    return [
        view(inside(0)),
        view(proxy, ("x-forwarded-for", inside(1))),
        view(proxy, ("x-forwarded-for", f"1.2.3.4, {inside(2)}, {proxy}, {proxy}")),
        view(proxy, ("forwarded", f'for="{inside(3)}";proto=https, for={proxy}')),
        view(stranger, ("x-forwarded-for", inside(4))),
        view(str(ipaddress.IPv6Address(rng.getrandbits(128))), path="/internal/status"),
    ]


class LinearSet(NetworkSet):
    """The baseline: the same interface, every network checked in turn."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self._networks = list(networks)
        super().__init__()

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        return any(address in network for network in self._networks)


Filters = tuple[IPFilter, IPFilter]


def build(size: int, rng: random.Random) -> tuple[Filters, Filters, list[RequestView], float]:
    """Filters (XFF and Forwarded; sorted ranges and the linear baseline), the requests, and
    the milliseconds it took to build the policy and resolvers."""
    allow, deny, trusted = (random_networks(rng, size) for _ in range(3))
    proxy = str(ipaddress.ip_network(trusted[0]).network_address)
    rules = {"/internal/*": {"allow": allow[: max(1, size // 10)]}}

    def filters() -> Filters:
        policy = IPPolicy(allow, deny, rules)
        return (
            IPFilter(ClientAddressResolver(trusted), policy),
            IPFilter(ClientAddressResolver(trusted, header="forwarded"), policy),
        )

    started = time.perf_counter()
    fast = filters()
    build_ms = (time.perf_counter() - started) * 1e3
    # same code, linear lookups
    filter_module.NetworkSet = forwarded.NetworkSet = LinearSet  # type: ignore[misc]
    try:
        linear = filters()
    finally:
        filter_module.NetworkSet = forwarded.NetworkSet = NetworkSet  # type: ignore[misc]
    return fast, linear, requests(rng, allow, proxy), build_ms


def time_filter(chosen: Filters, views: list[RequestView], batch: int) -> float:
    """Mean microseconds per request for resolution + policy (the state is reset each time)."""
    pairs = [(chosen[1] if "forwarded" in v.headers else chosen[0], v) for v in views]
    rounds = max(1, batch // len(pairs))
    start = time.perf_counter()
    for _ in range(rounds):
        for ip_filter, view in pairs:
            view.state.clear()
            ip_filter.check(view)
    return (time.perf_counter() - start) / (rounds * len(pairs)) * 1e6


def main() -> None:
    """Run every size, interleaved, and report."""
    rng = random.Random(20240607)
    setups = {size: build(size, rng) for size in SIZES}
    samples: dict[int, dict[str, list[float]]] = {s: {"secmw": [], "linear": []} for s in SIZES}
    for _ in range(REPEATS):
        for size, (fast, linear, views, _) in setups.items():
            samples[size]["secmw"].append(time_filter(fast, views, BATCH))
            samples[size]["linear"].append(time_filter(linear, views, LINEAR_BATCH[size]))
    rows = [
        {
            "networks_per_list": size,
            "secmw_us": round(statistics.median(samples[size]["secmw"]), 2),
            "linear_scan_us": round(statistics.median(samples[size]["linear"]), 2),
            "build_ms": round(setups[size][3], 1),
        }
        for size in SIZES
    ]
    report = {
        "benchmark": "ipfilter",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": REPEATS,
        "statistic": "median of interleaved repeats, microseconds per request",
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        "| networks per list | secmw resolve + policy (µs) | same, linear scan (µs) | build (ms) |"
    )
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['networks_per_list']:,} | {row['secmw_us']:.2f} "
            f"| {row['linear_scan_us']:.2f} | {row['build_ms']:.1f} |"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
