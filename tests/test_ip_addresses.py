"""Client address resolution and the IP policy (core, no server)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmw.config.settings import SecuritySettings
from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ip.addresses import NetworkSet, address_text, parse_address, parse_network
from secmw.ip.filter import IPFilter, IPPolicy
from secmw.ip.forwarded import (
    MAX_HOPS,
    ClientAddressResolver,
    request_client_address,
    resolve_request_client,
)
from secmw.ip.settings import IPSettings

PROPERTY = settings(max_examples=200, derandomize=True, deadline=None)
TRUSTED = ["10.0.0.0/8", "fd00::/8"]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Shorthand for an expected address."""
    return ipaddress.ip_address(text)


def headers(*pairs: tuple[str, str]) -> Headers:
    """Headers from (name, value) pairs, repeated names kept in order."""
    return Headers(pairs)


# -- parsing one address -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4"),
        pytest.param(" 192.0.2.1\t", "192.0.2.1", id="ipv4-spaces"),
        pytest.param("192.0.2.1:8080", "192.0.2.1", id="ipv4-port"),
        pytest.param("2001:db8::1", "2001:db8::1", id="ipv6-bare"),
        pytest.param("2001:DB8:0:0::1", "2001:db8::1", id="ipv6-upper-long"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="ipv6-brackets"),
        pytest.param("[2001:db8::1]:443", "2001:db8::1", id="ipv6-brackets-port"),
        pytest.param("fe80::1%eth0", "fe80::1", id="ipv6-zone"),
        pytest.param("[fe80::1%eth0]:80", "fe80::1", id="ipv6-zone-brackets-port"),
        pytest.param("::ffff:10.0.0.1", "10.0.0.1", id="mapped-dotted"),
        pytest.param("::ffff:a00:1", "10.0.0.1", id="mapped-hex"),
        pytest.param("[::ffff:10.0.0.1]:80", "10.0.0.1", id="mapped-brackets-port"),
        pytest.param("::10.0.0.1", "::a00:1", id="compatible-stays-ipv6"),
        pytest.param('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17", id="rfc7239-quoted"),
        pytest.param('"192.0.2.43"', "192.0.2.43", id="quoted-ipv4"),
        pytest.param('"192.0.2.4\\3"', "192.0.2.43", id="quoted-pair"),
        pytest.param("[2001:db8::1]:_port", "2001:db8::1", id="obfuscated-port"),
        pytest.param("unknown", None, id="unknown"),
        pytest.param("_hidden", None, id="obfuscated"),
        pytest.param('"_SEVKISEK"', None, id="obfuscated-quoted"),
        pytest.param("abc", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param("999.1.1.1", None, id="octet-too-big"),
        pytest.param("010.0.0.1", None, id="leading-zero"),
        pytest.param("1.2.3", None, id="three-octets"),
        pytest.param("1.2.3.4:", None, id="empty-port"),
        pytest.param("1.2.3.4:http", None, id="named-port"),
        pytest.param("1.2.3.4:123456", None, id="port-too-long"),
        pytest.param("[1.2.3.4]", None, id="ipv4-in-brackets"),
        pytest.param("[2001:db8::1", None, id="unclosed-bracket"),
        pytest.param("[2001:db8::1]443", None, id="port-without-colon"),
        pytest.param("fe80::1%", None, id="empty-zone"),
        pytest.param("fe80::1%a b", None, id="bad-zone"),
        pytest.param("1.2.3.4%eth0", None, id="zone-on-ipv4"),
        pytest.param('"1.2.3.4', None, id="unbalanced-quote"),
        pytest.param('"1.2"3.4"', None, id="inner-quote"),
        pytest.param("\u0661.2.3.4", None, id="non-ascii-digit"),
        pytest.param("1" * 200, None, id="too-long"),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    """Addresses in every written form parse; anything else is None."""
    assert parse_address(text) == (None if expected is None else ip(expected))


@given(st.text(max_size=80))
@PROPERTY
def test_parse_address_never_raises(text: str) -> None:
    """Arbitrary text gives an address or None, never an exception."""
    result = parse_address(text)
    assert result is None or isinstance(result, ipaddress.IPv4Address | ipaddress.IPv6Address)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
@PROPERTY
def test_parse_address_agrees_with_ipaddress(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Every way of writing an address parses to it, and its text is Python's canonical form."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    expected: ipaddress.IPv4Address | ipaddress.IPv6Address = mapped or address
    forms = [str(address), address.exploded, str(address).upper()]
    if address.version == 6:
        forms += [f"[{address}]", f"[{address.exploded}]:65535", f'"[{address}]:_p"']
    else:
        forms += [f"{address}:80", f'"{address}:443"', f"::ffff:{address}"]
    for form in forms:
        assert parse_address(form) == expected, form
    assert address_text(expected) == str(expected)


# -- configured networks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.0/8", "10.0.0.0/8", id="ipv4-cidr"),
        pytest.param("127.0.0.1", "127.0.0.1/32", id="ipv4-host"),
        pytest.param("2001:db8::/32", "2001:db8::/32", id="ipv6-cidr"),
        pytest.param("[::1]", "::1/128", id="ipv6-brackets"),
        pytest.param("::ffff:10.0.0.0/104", "10.0.0.0/8", id="mapped-net-as-ipv4"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    """Networks and single addresses are accepted; mapped networks compare as IPv4."""
    assert parse_network(text, "SECMW_IP__ALLOW") == ipaddress.ip_network(expected)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("10.0.0.1/8", id="host-bits"),
        pytest.param("10.0.0.0/33", id="prefix-too-long"),
        pytest.param("example.com", id="hostname"),
        pytest.param("fe80::/64%eth0", id="zone"),
        pytest.param("", id="empty"),
    ],
)
def test_parse_network_rejects(text: str) -> None:
    """A bad network raises ConfigurationError naming the setting."""
    with pytest.raises(ConfigurationError, match="SECMW_IP__DENY"):
        parse_network(text, "SECMW_IP__DENY")


_V4_NETS = st.builds(
    lambda value, prefix: ipaddress.IPv4Network((value, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
_V6_NETS = st.builds(
    lambda value, prefix: ipaddress.IPv6Network((value, prefix), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
_ADDRESSES = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@given(st.lists(st.one_of(_V4_NETS, _V6_NETS), max_size=30), st.lists(_ADDRESSES, max_size=20))
@PROPERTY
def test_network_set_matches_linear_scan(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    """Binary search over merged ranges agrees with checking every network."""
    found = NetworkSet(networks)
    for network in networks:  # both ends of every range are inside
        addresses += [network.network_address, network.broadcast_address]
    for address in addresses:
        assert (address in found) == any(address in net for net in networks)


def test_network_set_rejects_non_address() -> None:
    """Only address objects can be members."""
    assert "10.0.0.1" not in NetworkSet([ipaddress.ip_network("10.0.0.0/8")])


# -- resolution ----------------------------------------------------------------------------

XFF = "x-forwarded-for"


@pytest.mark.parametrize(
    ("peer", "values", "expected"),
    [
        pytest.param("203.0.113.9", ["1.2.3.4"], "203.0.113.9", id="untrusted-peer-spoof"),
        pytest.param("10.0.0.2", [], "10.0.0.2", id="trusted-peer-no-header"),
        pytest.param("10.0.0.2", ["198.51.100.7"], "198.51.100.7", id="one-proxy"),
        pytest.param("10.0.0.2", ["1.1.1.1, 198.51.100.7"], "198.51.100.7", id="spoofed-left"),
        pytest.param("10.0.0.2", ["198.51.100.7, 10.0.0.3"], "198.51.100.7", id="two-proxies"),
        pytest.param("10.0.0.2", ["1.1.1.1", "198.51.100.7"], "198.51.100.7", id="two-lines"),
        pytest.param("10.0.0.2", ["198.51.100.7", "10.0.0.3"], "198.51.100.7", id="lines-order"),
        pytest.param("10.0.0.2", ["10.0.0.9, 10.0.0.3"], "10.0.0.9", id="all-trusted-leftmost"),
        pytest.param("10.0.0.2", ["198.51.100.7:5555"], "198.51.100.7", id="entry-port"),
        pytest.param("10.0.0.2", ["[2001:db8::7]:443"], "2001:db8::7", id="entry-ipv6-port"),
        pytest.param("10.0.0.2", ["2001:db8::7"], "2001:db8::7", id="entry-ipv6-bare"),
        pytest.param("10.0.0.2", ["::ffff:198.51.100.7"], "198.51.100.7", id="entry-mapped"),
        pytest.param("10.0.0.2", ["::ffff:10.0.0.3, 1.1.1.1"], "1.1.1.1", id="mapped-proxy"),
        pytest.param("::ffff:10.0.0.2", ["198.51.100.7"], "198.51.100.7", id="mapped-peer"),
        pytest.param("fd00::2", ["198.51.100.7"], "198.51.100.7", id="ipv6-peer"),
        pytest.param("10.0.0.2", ["1.1.1.1, garbage, 10.0.0.3"], None, id="garbage-ends-walk"),
        pytest.param("10.0.0.2", ["1.1.1.1, unknown"], None, id="unknown-entry"),
        pytest.param("10.0.0.2", ["abc"], None, id="abc"),
        pytest.param("10.0.0.2", ["999.1.1.1"], None, id="bad-octet"),
        pytest.param("10.0.0.2", ["1.1.1.1,"], None, id="empty-item"),
        pytest.param("10.0.0.2", [",,,"], None, id="only-commas"),
        pytest.param("10.0.0.2", [""], None, id="empty-header"),
        pytest.param("10.0.0.2", ["garbage, 198.51.100.7"], "198.51.100.7", id="garbage-left"),
        pytest.param("10.0.0.2", ['"1.1.1.1, 198.51.100.7'], "198.51.100.7", id="quote-left"),
        pytest.param(None, ["198.51.100.7"], None, id="no-peer"),
        pytest.param("", ["198.51.100.7"], None, id="empty-peer"),
        pytest.param("testclient", ["198.51.100.7"], None, id="peer-not-an-address"),
    ],
)
def test_resolve_x_forwarded_for(peer: str | None, values: list[str], expected: str | None) -> None:
    """X-Forwarded-For is read right to left, and only from a trusted peer."""
    resolver = ClientAddressResolver(TRUSTED)
    found = resolver.resolve(peer, headers(*((XFF, value) for value in values)))
    assert found == (None if expected is None else ip(expected))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["for=198.51.100.7"], "198.51.100.7", id="plain"),
        pytest.param(["For=198.51.100.7"], "198.51.100.7", id="mixed-case-name"),
        pytest.param(["FOR=198.51.100.7;PROTO=https"], "198.51.100.7", id="upper-with-proto"),
        pytest.param(['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17", id="quoted-ipv6"),
        pytest.param(["for=[2001:db8::17]"], "2001:db8::17", id="unquoted-brackets"),
        pytest.param(['for="198.51.100.7:80"'], "198.51.100.7", id="quoted-port"),
        pytest.param(["proto=http;for=198.51.100.7;by=10.0.0.2"], "198.51.100.7", id="params"),
        pytest.param(['by="a,b";for=198.51.100.7'], "198.51.100.7", id="comma-in-quotes"),
        pytest.param(['by="a\\"b";for=198.51.100.7'], "198.51.100.7", id="escaped-quote"),
        pytest.param(["for=1.1.1.1, for=198.51.100.7"], "198.51.100.7", id="two-elements"),
        pytest.param(["for=198.51.100.7, for=10.0.0.3"], "198.51.100.7", id="skip-proxy"),
        pytest.param(["for=1.1.1.1", "for=198.51.100.7"], "198.51.100.7", id="two-lines"),
        pytest.param(['for="', "for=198.51.100.7"], "198.51.100.7", id="unbalanced-left"),
        pytest.param(["for=unknown"], None, id="for-unknown"),
        pytest.param(["for=_hidden"], None, id="for-obfuscated"),
        pytest.param(['for="_hidden:_port"'], None, id="for-obfuscated-quoted"),
        pytest.param(["proto=https"], None, id="no-for"),
        pytest.param(["for=1.1.1.1;for=198.51.100.7"], None, id="duplicate-for"),
        pytest.param(["for=198.51.100.7;;"], None, id="empty-pair"),
        pytest.param(["for 198.51.100.7"], None, id="no-equals"),
        pytest.param(['for="198.51.100.7'], None, id="unterminated"),
        pytest.param(["198.51.100.7"], None, id="xff-syntax"),
    ],
)
def test_resolve_forwarded(values: list[str], expected: str | None) -> None:
    """RFC 7239 Forwarded: quoted values, parameter case, unknown and obfuscated nodes."""
    resolver = ClientAddressResolver(TRUSTED, header="Forwarded")
    found = resolver.resolve("10.0.0.2", headers(*(("forwarded", value) for value in values)))
    assert found == (None if expected is None else ip(expected))


def test_header_choice_ignores_the_other_header() -> None:
    """Only the configured header is read; with ``none`` the peer is the client."""
    both = headers((XFF, "198.51.100.1"), ("forwarded", "for=198.51.100.2"))
    assert ClientAddressResolver(TRUSTED).resolve("10.0.0.2", both) == ip("198.51.100.1")
    forwarded = ClientAddressResolver(TRUSTED, header="forwarded")
    assert forwarded.resolve("10.0.0.2", both) == ip("198.51.100.2")
    none = ClientAddressResolver(TRUSTED, header="none")
    assert none.resolve("10.0.0.2", both) == ip("10.0.0.2")


@pytest.mark.parametrize(
    ("depth", "value", "expected"),
    [
        pytest.param(1, "1.1.1.1, 2.2.2.2, 3.3.3.3", "3.3.3.3", id="depth-1"),
        pytest.param(2, "1.1.1.1, 2.2.2.2, 3.3.3.3", "2.2.2.2", id="depth-2"),
        pytest.param(3, "1.1.1.1, 2.2.2.2, 3.3.3.3", "1.1.1.1", id="depth-3"),
        pytest.param(4, "1.1.1.1, 2.2.2.2, 3.3.3.3", None, id="too-few-entries"),
        pytest.param(2, "1.1.1.1, 10.0.0.5, 10.0.0.6", "10.0.0.5", id="trust-not-consulted"),
        pytest.param(2, "1.1.1.1, garbage, 3.3.3.3", None, id="garbage-at-depth"),
        pytest.param(1, "garbage, 3.3.3.3", "3.3.3.3", id="garbage-beyond-depth"),
    ],
)
def test_resolve_depth(depth: int, value: str, expected: str | None) -> None:
    """A fixed depth takes the N-th entry from the right, as Traefik's ipStrategy.depth."""
    resolver = ClientAddressResolver(TRUSTED, depth=depth)
    found = resolver.resolve("10.0.0.2", headers((XFF, value)))
    assert found == (None if expected is None else ip(expected))


def test_depth_needs_a_trusted_peer() -> None:
    """A fixed depth is ignored when the peer is not a trusted proxy."""
    resolver = ClientAddressResolver(TRUSTED, depth=1)
    assert resolver.resolve("203.0.113.9", headers((XFF, "1.1.1.1"))) == ip("203.0.113.9")


def test_depth_without_header_is_unknown() -> None:
    """With a fixed depth, a trusted peer sending no header has fewer entries than the depth."""
    assert ClientAddressResolver(TRUSTED, depth=1).resolve("10.0.0.2", headers()) is None
    assert ClientAddressResolver(TRUSTED).resolve("10.0.0.2", headers()) == ip("10.0.0.2")


def test_string_lists_are_comma_separated() -> None:
    """Python callers may pass lists as comma-separated strings, as in the environment."""
    resolver = ClientAddressResolver("10.0.0.0/8, fd00::/8")
    assert resolver.resolve("fd00::1", headers((XFF, "198.51.100.7"))) == ip("198.51.100.7")
    policy = IPPolicy("10.0.0.0/8", "10.9.0.0/16", {"/a": {"allow": "127.0.0.1", "deny": ""}})
    assert policy.check(ip("10.1.1.1"), "/") is None
    assert policy.check(ip("10.9.1.1"), "/") is not None
    assert policy.check(ip("127.0.0.1"), "/a") is None


def test_unix_socket_peer_trusted_only_when_configured() -> None:
    """A connection without a peer address is untrusted unless ``unix`` is configured."""
    forwarded = headers((XFF, "198.51.100.7"))
    assert ClientAddressResolver(TRUSTED).resolve(None, forwarded) is None
    unix = ClientAddressResolver(["unix"])
    assert unix.resolve(None, forwarded) == ip("198.51.100.7")
    assert unix.resolve("", forwarded) == ip("198.51.100.7")
    assert unix.resolve("127.0.0.1", forwarded) == ip("127.0.0.1")


_PATHOLOGICAL = [
    pytest.param(", ".join(["1.1.1.1"] * 10_000), id="10000-entries"),
    pytest.param("9" * 65_536, id="64k-digits"),
    pytest.param('"' * 65_536, id="64k-quotes"),
    pytest.param('\\"' * 30_000, id="escaped-quotes"),
    pytest.param("\\" * 65_536 + '"a"', id="backslashes"),
    pytest.param("for=" + "a;" * 20_000, id="many-pairs"),
    pytest.param('"a,b"' * 20_000, id="quoted-commas"),
]


@pytest.mark.parametrize("value", _PATHOLOGICAL)
@pytest.mark.parametrize(
    ("header", "entry"), [("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=1.1.1.1")]
)
def test_huge_headers_cannot_hide_the_client(header: str, entry: str, value: str) -> None:
    """Huge or pathological text left of a client entry changes nothing; nor from an untrusted
    peer."""
    resolver = ClientAddressResolver(TRUSTED, header=header)
    assert resolver.resolve("10.0.0.2", headers((header, f"{value}, {entry}"))) == ip("1.1.1.1")
    assert resolver.resolve("203.0.113.9", headers((header, value))) == ip("203.0.113.9")


@pytest.mark.parametrize("value", _PATHOLOGICAL)
@pytest.mark.parametrize(
    ("header", "proxy"), [("x-forwarded-for", "10.0.0.7"), ("forwarded", "for=10.0.0.7")]
)
def test_huge_headers_behind_trusted_hops_are_unknown(header: str, proxy: str, value: str) -> None:
    """Pathological text reached through trusted hops is an unknown client, never an error."""
    resolver = ClientAddressResolver(TRUSTED, header=header)
    found = resolver.resolve("10.0.0.2", headers((header, f"{value}, {proxy}, {proxy}")))
    # Only the list of 10,000 plain addresses holds a valid X-Forwarded-For entry there.
    expected = ip("1.1.1.1") if header == XFF and value.startswith("1.1.1.1, ") else None
    assert found == expected


def test_trusted_chain_longer_than_max_hops_is_unknown() -> None:
    """A chain of more trusted hops than MAX_HOPS resolves to unknown, not a left entry."""
    resolver = ClientAddressResolver(TRUSTED)
    short = ", ".join(["198.51.100.7"] + ["10.0.0.7"] * (MAX_HOPS - 1))
    assert resolver.resolve("10.0.0.2", headers((XFF, short))) == ip("198.51.100.7")
    long = ", ".join(["198.51.100.7"] + ["10.0.0.7"] * MAX_HOPS)
    assert resolver.resolve("10.0.0.2", headers((XFF, long))) is None


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        pytest.param({"trusted_proxies": ["10.0.0.1/8"]}, "SECMW_IP__TRUSTED_PROXIES", id="cidr"),
        pytest.param({"header": "x-real-ip"}, "SECMW_IP__PROXY_HEADER", id="header"),
        pytest.param({"depth": 0}, "SECMW_IP__DEPTH", id="depth-zero"),
        pytest.param({"depth": MAX_HOPS + 1}, "SECMW_IP__DEPTH", id="depth-huge"),
    ],
)
def test_resolver_configuration_errors(kwargs: dict[str, object], variable: str) -> None:
    """A bad resolver argument raises ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=variable):
        ClientAddressResolver(**kwargs)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------

_UNTRUSTED_V4 = st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8"))


def _untrusted_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Outside fd00::/8 and not an IPv4-mapped address (which would compare as IPv4)."""
    return isinstance(address, ipaddress.IPv6Address) and not (
        address in ipaddress.ip_network("fd00::/8") or address.ipv4_mapped
    )


_UNTRUSTED_V6 = st.ip_addresses(v=6).filter(_untrusted_v6)
_UNTRUSTED = st.one_of(_UNTRUSTED_V4, _UNTRUSTED_V6)
_TRUSTED_V4 = st.integers(0, 2**24 - 1).map(lambda n: ipaddress.IPv4Address(0x0A000000 + n))
_TRUSTED_V6 = st.integers(0, 2**120 - 1).map(lambda n: ipaddress.IPv6Address((0xFD << 120) + n))
_HEADER_TEXT = st.text(alphabet=st.characters(codec="latin-1"), max_size=200)


def _written(address: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str, form: int) -> str:
    """One way a proxy may write ``address`` in ``header`` (plain, port, quoted, more params)."""
    if address.version == 4:
        text = [str(address), f"{address}:{form + 1}", f"::ffff:{address}"][form % 3]
    else:
        text = [str(address), f"[{address}]", f"[{address}]:{form + 1}"][form % 3]
    if header == "forwarded":
        quoted = f'"{text}"' if ":" in text or form % 2 else text
        return (
            f'for={quoted};by="[2001:db8::1],x";proto=https' if form % 4 == 3 else f"For={quoted}"
        )
    return text


@given(
    peer=_UNTRUSTED,
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    values=st.lists(_HEADER_TEXT, max_size=3),
)
@PROPERTY
def test_property_untrusted_peer_ignores_headers(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str, values: list[str]
) -> None:
    """From an untrusted peer, no header value changes the resolved address."""
    resolver = ClientAddressResolver(TRUSTED, header=header)
    sent = headers(*((name, value) for value in values for name in (XFF, "forwarded")))
    assert resolver.resolve(str(peer), sent) == peer


@given(
    peer=st.one_of(_TRUSTED_V4, _TRUSTED_V6),
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    proxies=st.lists(st.one_of(_TRUSTED_V4, _TRUSTED_V6), max_size=8),
    client=_UNTRUSTED,
    left=_HEADER_TEXT,
    forms=st.lists(st.integers(0, 11), min_size=9, max_size=9),
    split_lines=st.booleans(),
)
@settings(
    max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
def test_property_trusted_chain_yields_next_entry(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address,
    header: str,
    proxies: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    left: str,
    forms: list[int],
    split_lines: bool,
) -> None:
    """Trusted peer + k trusted right-most entries: the (k+1)-th from the right is the client,
    whatever the entries to its left say."""
    resolver = ClientAddressResolver(TRUSTED, header=header)
    chain = [_written(client, header, forms[0])]
    chain += [
        _written(proxy, header, form) for proxy, form in zip(proxies, forms[1:], strict=False)
    ]
    if split_lines:  # the client's own text and each proxy's entry on separate field lines
        sent = headers((header, left), *((header, entry) for entry in chain))
    else:
        sent = headers((header, ", ".join([left, *chain])))
    assert resolver.resolve(str(peer), sent) == client


@given(
    entries=st.lists(_UNTRUSTED, min_size=1, max_size=8),
    offset=st.integers(0, 7),
    left=_HEADER_TEXT,
)
@PROPERTY
def test_property_depth_takes_nth_from_right(
    entries: list[ipaddress.IPv4Address | ipaddress.IPv6Address], offset: int, left: str
) -> None:
    """With a fixed depth N, the N-th entry from the right is the client, whatever is left of it."""
    depth = 1 + offset % len(entries)
    resolver = ClientAddressResolver(TRUSTED, depth=depth)
    sent = headers((XFF, left), (XFF, ", ".join(map(str, entries))))
    assert resolver.resolve("10.0.0.2", sent) == entries[-depth]


@given(peer=st.text(max_size=50), value=_HEADER_TEXT)
@PROPERTY
def test_property_resolution_never_raises(peer: str, value: str) -> None:
    """Any peer text and header value resolve to an address or None."""
    for header in ("x-forwarded-for", "forwarded"):
        resolver = ClientAddressResolver(["0.0.0.0/0", "::/0", "unix"], header=header)
        resolver.resolve(peer, headers((header, value)))


# -- the request view ----------------------------------------------------------------------


def test_request_client_is_resolved_once() -> None:
    """The first resolution sticks: later calls (even with other resolvers) reuse it."""
    request = RequestView(
        "GET", "/", headers=headers((XFF, "::ffff:198.51.100.7")), peer="10.0.0.2"
    )
    assert resolve_request_client(request, ClientAddressResolver(TRUSTED)) == "198.51.100.7"
    assert request.client == "198.51.100.7"
    assert request.state["secmw.client_resolved"] is True
    assert request.state["secmw.client_forwarded"] is True
    assert resolve_request_client(request, ClientAddressResolver()) == "198.51.100.7"
    assert request_client_address(request, ClientAddressResolver()) == ip("198.51.100.7")


def test_request_client_unknown_is_none() -> None:
    """An unparseable peer leaves ``request.client`` None."""
    request = RequestView("GET", "/", peer="testclient")
    assert resolve_request_client(request, ClientAddressResolver(TRUSTED)) is None
    assert request.client is None
    assert request.state["secmw.client_forwarded"] is False


# -- policy --------------------------------------------------------------------------------

RULES: dict[str, dict[str, list[str]]] = {
    "/internal/*": {"allow": ["10.0.0.0/8", "127.0.0.1"]},
    "/open/*": {"allow": []},
    "/partners/{name}": {"deny": ["198.51.100.0/24"]},
}


@pytest.mark.parametrize(
    ("allow", "deny", "address", "path", "refused"),
    [
        pytest.param([], [], "203.0.113.1", "/", None, id="empty-lists-allow-all"),
        pytest.param([], [], None, "/", None, id="empty-lists-allow-unknown"),
        pytest.param(["10.0.0.0/8"], [], "10.1.2.3", "/", None, id="allowed"),
        pytest.param(["10.0.0.0/8"], [], "11.0.0.1", "/", "not in allow", id="not-allowed"),
        pytest.param(["10.0.0.0/8"], [], None, "/", "unknown", id="unknown-never-allowed"),
        pytest.param([], ["10.0.0.0/8"], "10.1.2.3", "/", "deny list", id="denied"),
        pytest.param([], ["10.0.0.0/8"], "11.0.0.1", "/", None, id="not-denied"),
        pytest.param(["10.0.0.0/8"], ["10.9.0.0/16"], "10.9.1.1", "/", "deny", id="deny-wins"),
        pytest.param(["2001:db8::/32"], [], "2001:db8::5", "/", None, id="ipv6-allowed"),
        pytest.param(["2001:db8::/32"], [], "2001:db9::5", "/", "allow", id="ipv6-not-allowed"),
        pytest.param(["0.0.0.0/0"], [], "2001:db8::5", "/", "allow", id="v4-list-no-v6"),
        pytest.param([], [], "11.0.0.1", "/internal/x", "allow", id="rule-allow-only"),
        pytest.param([], [], "127.0.0.1", "/internal/x", None, id="rule-allows"),
        pytest.param([], [], "127.0.0.1", "/INTERNAL", None, id="rule-case-insensitive"),
        pytest.param([], [], None, "/internal", "unknown", id="rule-unknown"),
        pytest.param(["10.0.0.0/8"], [], "11.0.0.1", "/open/x", None, id="rule-empty-allow"),
        pytest.param(["10.0.0.0/8"], [], "11.0.0.1", "/partners/a", "allow", id="rule-inherits"),
        pytest.param([], [], "198.51.100.9", "/partners/a", "deny", id="rule-adds-deny"),
        pytest.param([], ["11.0.0.0/8"], "11.0.0.1", "/open/x", "deny", id="global-deny-in-rule"),
    ],
)
def test_policy(
    allow: list[str], deny: list[str], address: str | None, path: str, refused: str | None
) -> None:
    """Allow, deny, deny wins, empty allow list, unknown clients and per-path rules."""
    policy = IPPolicy(allow, deny, RULES)
    found = policy.check(None if address is None else ip(address), path)
    if refused is None:
        assert found is None
    else:
        assert found is not None
        assert refused in found.reason


def test_policy_reports_the_rule() -> None:
    """A refusal names the matching path pattern, or ``*`` for the global lists."""
    policy = IPPolicy(["10.0.0.0/8"], [], RULES)
    assert policy.check(ip("11.0.0.1"), "/internal/a") is not None
    assert policy.check(ip("11.0.0.1"), "/internal/a").rule == "/internal/*"  # type: ignore[union-attr]
    assert policy.check(ip("11.0.0.1"), "/x").rule == "*"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        pytest.param({"allow": ["10.0.0.1/8"]}, "SECMW_IP__ALLOW", id="allow"),
        pytest.param({"deny": ["nope"]}, "SECMW_IP__DENY", id="deny"),
        pytest.param({"rules": {"/a": {"allow": ["1.1.1.1/8"]}}}, "SECMW_IP__RULES", id="rule-net"),
        pytest.param({"rules": {"/a": {"alow": []}}}, "SECMW_IP__RULES", id="rule-key"),
        pytest.param({"rules": {"a": {}}}, "SECMW_IP__RULES", id="rule-pattern"),
    ],
)
def test_policy_configuration_errors(kwargs: dict[str, object], variable: str) -> None:
    """A bad policy argument raises ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=variable):
        IPPolicy(**kwargs)  # type: ignore[arg-type]


# -- settings ------------------------------------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists take JSON or commas; rules take a JSON object; the header name is case-folded."""
    monkeypatch.setenv("SECMW_IP__ALLOW", "10.0.0.0/8, ::1")
    monkeypatch.setenv("SECMW_IP__DENY", '["10.9.0.0/16"]')
    monkeypatch.setenv("SECMW_IP__TRUSTED_PROXIES", "unix,192.0.2.1")
    monkeypatch.setenv("SECMW_IP__PROXY_HEADER", "Forwarded")
    monkeypatch.setenv("SECMW_IP__DEPTH", "2")
    monkeypatch.setenv("SECMW_IP__RULES", '{"/internal/*": {"allow": "127.0.0.1,::1"}}')
    monkeypatch.setenv("SECMW_IP__REWRITE_CLIENT", "false")
    section = SecuritySettings().ip
    assert section.allow == ["10.0.0.0/8", "::1"]
    assert section.deny == ["10.9.0.0/16"]
    assert section.trusted_proxies == ["unix", "192.0.2.1"]
    assert section.proxy_header == "forwarded"
    assert section.depth == 2
    assert section.rules["/internal/*"].allow == ["127.0.0.1", "::1"]
    assert section.rewrite_client is False
    built = IPFilter.from_settings(section)
    assert built.resolver.header == "forwarded"
    assert built.resolver.depth == 2
    assert built.rewrite_client is False


def test_settings_defaults_are_closed() -> None:
    """By default no proxy is trusted, so no header is ever read."""
    section = IPSettings()
    assert section.trusted_proxies == []
    resolver = IPFilter.from_settings(section).resolver
    assert resolver.resolve("127.0.0.1", headers((XFF, "10.0.0.1"))) == ip("127.0.0.1")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("SECMW_IP__ALLOW", "10.0.0.1/8", id="allow-host-bits"),
        pytest.param("SECMW_IP__ALLOW", "[not json", id="allow-bad-json"),
        pytest.param("SECMW_IP__DENY", "10.0.0.0/40", id="deny-prefix"),
        pytest.param("SECMW_IP__TRUSTED_PROXIES", "10.0.0.0/8,proxy.local", id="proxy-name"),
        pytest.param("SECMW_IP__PROXY_HEADER", "x-real-ip", id="header"),
        pytest.param("SECMW_IP__DEPTH", "0", id="depth"),
        pytest.param("SECMW_IP__RULES", "{not json", id="rules-json"),
        pytest.param("SECMW_IP__RULES", '["/a"]', id="rules-not-object"),
        pytest.param("SECMW_IP__RULES", '{"/a": {"allow": ["1.1.1.1/8"]}}', id="rules-net"),
        pytest.param("SECMW_IP__RULES", '{"/a": {"alow": []}}', id="rules-typo"),
        pytest.param("SECMW_IP__RULES", '{"a": {}}', id="rules-pattern"),
    ],
)
def test_settings_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A malformed variable fails when settings are built, naming that variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=f"{variable}:"):
        SecuritySettings()
