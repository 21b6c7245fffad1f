"""The client address behind trusted proxies.

The TCP peer is the client unless it is a configured trusted proxy. Only then is
``X-Forwarded-For`` or RFC 7239 ``Forwarded`` read, from the right: each proxy appends the address
it received the request from, so the right-most entries are the only ones written by machines we
trust, and the left-most entry is whatever the client typed. The walk skips trusted proxies and
stops at the first untrusted address; an entry that is not an address (``unknown``, an obfuscated
``_name``, garbage) ends it with an unknown client (None).

The header is read lazily from the right and the walk stops at the first untrusted entry, at most
``MAX_HOPS`` entries of at most 1 KiB each: what a client puts on the left costs at most a scan of
the header, never Python work per entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, TypeAlias

from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ip.addresses import IPAddress, NetworkSet, address_text, parse_address

ProxyHeader: TypeAlias = Literal["x-forwarded-for", "forwarded", "none"]


UNIX = "unix"
"""Trusted-proxy entry for connections without a peer address (a proxy on a unix socket)."""
MAX_HOPS = 64
"""The walk reads at most this many header entries; a client further left is unknown."""
RESOLVED_KEY = "secmw.client_resolved"
ADDRESS_KEY = "secmw.client_address"
FORWARDED_KEY = "secmw.client_forwarded"


_MAX_ELEMENT = 1024  # a longer list item is garbage, whatever it holds: bounds the work per hop
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 7239 §4 forwarded-pair; ':' and brackets are tolerated unquoted (some proxies omit quotes).
_PAIR = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;," \t]*)[ \t]*')


def _split_right(value: str) -> Iterator[str]:
    """Comma-separated items, right-most first; commas inside quoted strings do not split.

    Scanning from the right means nothing a client wrote on the left (an unbalanced quote, say)
    can change how the entries that proxies appended to its right are split. An item that would
    be longer than ``_MAX_ELEMENT`` ends the scan (it is garbage), so each hop costs O(1) work.
    """
    end = pos = len(value)
    floor = max(end - _MAX_ELEMENT - 1, 0)
    comma = value.rfind(",", 0, pos)
    while True:
        if comma >= pos:  # the last comma seen was inside a quoted string: look further left
            comma = value.rfind(",", 0, pos)
        quote = value.rfind('"', comma + 1, pos)
        if quote >= 0:  # a quoted string ends here: jump to its opening quote
            pos = quote
            while True:
                pos = value.rfind('"', floor, pos)
                if pos < 0 or not _escaped(value, pos, floor):
                    break
            if pos < 0:  # unbalanced or oversized: one bad item, and nothing left of it
                yield value[floor:end]
                return
            continue
        if comma < 0:
            yield value[:end]
            return
        yield value[comma + 1 : end]
        end = pos = comma
        floor = max(end - _MAX_ELEMENT - 1, 0)
        comma = value.rfind(",", 0, pos)


def _escaped(value: str, index: int, floor: int) -> bool:
    """Whether the quote at ``index`` follows an odd run of backslashes (a quoted-pair)."""
    run = index
    while run > floor and value[run - 1] == "\\":
        run -= 1
    return (index - run) % 2 == 1


def _forwarded_for(element: str) -> str | None:
    """The ``for`` value of one RFC 7239 forwarded-element; None if malformed or absent."""
    found: str | None = None
    pos, size = 0, len(element)
    while True:
        pair = _PAIR.match(element, pos)
        if pair is None:
            return None
        if pair.group(1).lower() == "for":  # parameter names are case-insensitive (§4)
            if found is not None:
                return None  # §4: a parameter MUST NOT occur more than once per element
            found = pair.group(2)
        pos = pair.end()
        if pos == size:
            return found
        if element[pos] != ";":
            return None
        pos += 1


class ClientAddressResolver:
    """Finds the client address from the peer and, behind trusted proxies, a forwarding header.

    Args:
        trusted_proxies: Addresses and networks of proxies whose header entries are believed;
            ``"unix"`` also trusts a connection without a peer address (a unix socket).
        header: ``"x-forwarded-for"``, ``"forwarded"`` (RFC 7239) or ``"none"``.
        depth: Take the ``depth``-th entry from the right instead of walking past trusted proxies
            (Traefik's ``ipStrategy.depth``); fewer entries, or no header, means an unknown client.

    Raises:
        ConfigurationError: for a bad network, header name or depth, naming the variable.
    """

    __slots__ = ("_trust_unix", "_trusted", "depth", "header")

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        *,
        header: str = "x-forwarded-for",
        depth: int | None = None,
    ) -> None:
        entries = list_items(trusted_proxies)
        self._trust_unix = UNIX in entries
        self._trusted = NetworkSet.parse(
            (item for item in entries if item != UNIX), "ip.trusted_proxies"
        )
        self.header = header.strip().lower()
        if self.header not in ("x-forwarded-for", "forwarded", "none"):
            raise ConfigurationError(f"ip.proxy_header: unknown header {header!r}")
        if depth is not None and not 1 <= depth <= MAX_HOPS:
            raise ConfigurationError(f"ip.depth: must be between 1 and {MAX_HOPS}")
        self.depth = depth

    def reads_header(self, address: IPAddress | None) -> bool:
        """Whether the forwarding header can change the client of a peer at ``address``."""
        return self.header != "none" and self.is_trusted(address)

    def is_trusted(self, address: IPAddress | None) -> bool:
        """Whether ``address`` is a trusted proxy (None: a peer without an address)."""
        return self._trust_unix if address is None else address in self._trusted

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> IPAddress | None:
        """The client address, or None when unknown."""
        return self.resolve_with_source(peer, headers)[0]

    def resolve_with_source(
        self, peer: str | None, headers: Mapping[str, str]
    ) -> tuple[IPAddress | None, bool]:
        """The client address and whether it was read from the proxy header."""
        address = parse_address(peer) if peer else None
        if self.header == "none" or (peer and address is None) or not self.is_trusted(address):
            return address, False  # never read a header an untrusted peer could have written
        if self.header not in headers:
            # Walking: the proxy itself is the client (a health check, say). With a fixed depth
            # there are fewer entries than the depth: unknown.
            return (address if self.depth is None else None), False
        value = headers[self.header]
        entries = (self._entry(item) for item in _split_right(value))
        if self.depth is not None:
            for index, entry in enumerate(entries, 1):
                if index == self.depth:
                    return entry, True
            return None, True
        last: IPAddress | None = None
        for hops, entry in enumerate(entries):
            if entry is None or hops == MAX_HOPS:
                return None, True
            if entry not in self._trusted:
                return entry, True
            last = entry
        return last, True  # every hop is trusted: the left-most was written by a trusted proxy

    def _entry(self, item: str) -> IPAddress | None:
        if len(item) > _MAX_ELEMENT:
            return None
        if self.header == "forwarded":
            value = _forwarded_for(item)
            return None if value is None else parse_address(value)
        return parse_address(item)


def request_client_address(
    request: RequestView, resolver: ClientAddressResolver
) -> IPAddress | None:
    """Resolve the request's client once; later calls return the first answer.

    Sets ``request.client`` (the canonical text form, or None when unknown) and records the result
    in ``request.state`` so every layer, and the app, sees one client address.
    """
    state = request.state
    if state.get(RESOLVED_KEY):
        found: IPAddress | None = state.get(ADDRESS_KEY)
        return found
    address, forwarded = resolver.resolve_with_source(request.peer, request.headers)
    request.client = None if address is None else address_text(address)
    state[ADDRESS_KEY] = address
    state[FORWARDED_KEY] = forwarded
    state[RESOLVED_KEY] = True
    return address


def resolve_request_client(request: RequestView, resolver: ClientAddressResolver) -> str | None:
    """:func:`request_client_address` as text: the value of ``request.client``."""
    request_client_address(request, resolver)
    return request.client


def list_items(values: Iterable[str]) -> list[str]:
    """A list argument; a string is comma-separated, as in the environment."""
    if isinstance(values, str):
        values = values.split(",")
    return [item.strip() for item in values if item.strip()]
