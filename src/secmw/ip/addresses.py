"""IP addresses and networks: parsing, text form, and network sets searched by binary search.

Networks are kept as merged, sorted integer ranges per IP version, so a lookup is one binary
search, O(log n) in the number of networks; building is O(n log n), memory O(n). An IPv4-mapped
IPv6 address or network is compared as IPv4.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import TypeAlias

from secmw.errors import ConfigurationError

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

_MAX_ENTRY = 128  # a quoted, bracketed IPv6 address with a zone id and a port fits easily
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 §6: port / obfport
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 6874 §2: a zone id is unreserved characters
_QUOTED = re.compile(r'(?:[^"\\]|\\.)*', re.DOTALL)  # RFC 9110 §5.6.4 quoted-string body


_MAPPED = IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """One address as a server or proxy writes it; None for anything else (memoized: the same
    peers and proxies come back request after request).

    Accepts ``10.0.0.1``, ``10.0.0.1:8080``, ``2001:db8::1``, ``[2001:db8::1]:443``,
    ``fe80::1%eth0`` (the zone id is dropped) and RFC 7239 quoted forms (``"[2001:db8::1]"``).
    IPv4-mapped IPv6 (``::ffff:10.0.0.1``) becomes its IPv4 address, so one client has one form;
    the deprecated IPv4-compatible form (``::10.0.0.1``, RFC 4291 §2.5.5.1) stays IPv6. ``unknown``
    and obfuscated identifiers (``_hidden``, RFC 7239 §6.3) are never addresses.
    """
    text = text.strip(" \t")
    if len(text) > _MAX_ENTRY or not text.isascii():
        return None
    try:  # the common case first: a bare IPv4 address
        return IPv4Address(inet_pton(AF_INET, text))
    except (OSError, ValueError):
        pass
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        body = text[1:-1]
        if not _QUOTED.fullmatch(body):
            return None
        text = re.sub(r"\\(.)", r"\1", body) if "\\" in body else body
    if text.startswith("["):
        host, closed, port = text[1:].partition("]")
        if not closed or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return None
        return _ipv6(host)
    if text.count(":") == 1:  # only IPv4 takes a port without brackets
        host, _, port = text.partition(":")
        return _ipv4(host) if _PORT.fullmatch(port) else None
    return _ipv6(text) if ":" in text else _ipv4(text)


# inet_pton is a pure conversion (no I/O), strict like ipaddress (no leading zeros, no
# shorthand like inet_aton's "10.1"), and cheaper than ipaddress's string parser on a path every
# request takes.


def _ipv4(text: str) -> IPAddress | None:
    try:
        return IPv4Address(inet_pton(AF_INET, text))
    except (OSError, ValueError):
        return None


def _ipv6(text: str) -> IPAddress | None:
    text, percent, zone = text.partition("%")
    if percent and not _ZONE.fullmatch(zone):
        return None
    try:
        packed = inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed.startswith(_MAPPED_PREFIX):
        return IPv4Address(packed[12:])
    return IPv6Address(packed)


def address_text(address: IPAddress) -> str:
    """The canonical text of an address (RFC 5952 for IPv6), as ``request.client`` holds it."""
    packed = address.packed
    if len(packed) == 4:
        return inet_ntop(AF_INET, packed)
    if packed.startswith(bytes(12)):  # C libraries differ on ::/96 (dotted or not): use Python's
        return str(address)
    return inet_ntop(AF_INET6, packed)


def parse_network(text: str, setting: str) -> IPNetwork:
    """A configured network (``10.0.0.0/8``, ``2001:db8::/32``) or address (a /32 or /128).

    Raises:
        ConfigurationError: naming ``setting`` for a bad value or host bits set (``10.0.0.1/8``).
    """
    try:
        return strict_network(text)
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None


def strict_network(text: str) -> IPNetwork:
    text = text.strip()
    try:
        if "%" in text:
            raise ValueError("zone ids are not allowed")
        network = ip_network(text[1:-1] if text.startswith("[") else text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network ({exc})") from None
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        # Mapped addresses resolve to IPv4, so a mapped network must be compared as IPv4 too.
        return IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


class NetworkSet:
    """Networks as merged integer ranges, sorted per IP version; membership by binary search."""

    __slots__ = ("_empty", "_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for network in networks:
            start = int(network.network_address)
            spans[network.version].append((start, start + network.num_addresses - 1))
        self._v4 = _merge(spans[4])
        self._v6 = _merge(spans[6])
        self._empty = not (spans[4] or spans[6])

    def __bool__(self) -> bool:
        return not self._empty

    def __contains__(self, address: object) -> bool:
        if isinstance(address, IPv4Address):
            starts, ends = self._v4
        elif isinstance(address, IPv6Address):
            starts, ends = self._v6
        else:
            return False
        value = int(address)
        index = bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]

    @classmethod
    def parse(cls, items: Iterable[str], setting: str) -> NetworkSet:
        """Build from configured strings; ConfigurationError naming ``setting`` on a bad one."""
        return cls(parse_network(item, setting) for item in items)


def _merge(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted(spans):
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends
