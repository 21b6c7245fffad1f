"""Fuzz client address resolution: ``X-Forwarded-For`` and RFC 7239 ``Forwarded`` behind proxies.

Properties: the result is an address or None (unknown); a peer that is not a trusted proxy is
always the client, whatever its headers say; the resolver reads at most 64 hops.

    python tests/fuzz/fuzz_forwarded.py -runs=100000 -seed=1
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import atheris

with atheris.instrument_imports(include=["secmw.ip.forwarded", "secmw.ip.addresses"]):
    import _common

    from secmw.core.fields import Headers
    from secmw.ip.addresses import parse_address
    from secmw.ip.forwarded import ClientAddressResolver

TRUSTED = ("10.0.0.0/8", "2001:db8::/32", "unix")
RESOLVERS = [
    ClientAddressResolver(TRUSTED, header="x-forwarded-for"),
    ClientAddressResolver(TRUSTED, header="forwarded"),
    ClientAddressResolver(TRUSTED, header="x-forwarded-for", depth=2),
]
PIECES = (
    ",", ", ", '"', "\\", ";", "=", "for=", "For=", "by=", "proto=https", "[", "]", ":", "%eth0",
    "10.0.0.7", "203.0.113.9", "2001:db8::1", "::ffff:10.1.2.3", "unknown", "_hidden", "1.2.3.4:80",
)  # fmt: skip


def header_value(fdp: atheris.FuzzedDataProvider) -> str:
    """Raw latin-1 text, or a value assembled from the grammar's pieces."""
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400)).decode("latin-1")
    count = fdp.ConsumeIntInRange(0, 40)
    return "".join(PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)] for _ in range(count))


def test_one_input(data: bytes) -> None:
    """Resolution yields an address or None and never believes an untrusted peer's header."""
    fdp = atheris.FuzzedDataProvider(data)
    resolver = RESOLVERS[fdp.ConsumeIntInRange(0, len(RESOLVERS) - 1)]
    peer = ("10.0.0.1", "203.0.113.5", "2001:db8::7", None, "garbage")[fdp.ConsumeIntInRange(0, 4)]
    name = resolver.header
    headers = Headers((name, header_value(fdp)) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    address, forwarded = resolver.resolve_with_source(peer, headers)
    if address is not None and not isinstance(address, IPv4Address | IPv6Address):
        raise AssertionError(f"not an address: {address!r}")
    peer_address = parse_address(peer) if peer else None
    untrusted = (peer and peer_address is None) or not resolver.is_trusted(peer_address)
    if untrusted and (forwarded or address != peer_address):
        raise AssertionError(f"an untrusted peer's header was read: {peer!r}")
    parse_address(fdp.ConsumeUnicodeNoSurrogates(60))


if __name__ == "__main__":
    _common.fuzz(test_one_input)
