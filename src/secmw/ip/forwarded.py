"""Client address resolution behind trusted proxies, and the IP allow/deny policy.

Resolution (:class:`ClientAddressResolver`): the TCP peer is the client unless it is a configured
trusted proxy. Only then is ``X-Forwarded-For`` or RFC 7239 ``Forwarded`` read, from the right:
each proxy appends the address it received the request from, so the right-most entries are the
only ones written by machines we trust, and the left-most entry is whatever the client typed. The
walk skips trusted proxies and stops at the first untrusted address; an entry that is not an
address (``unknown``, an obfuscated ``_name``, garbage) ends it with an unknown client (None).

Policy (:class:`IPPolicy`): allow and deny lists of networks, deny wins, an empty allow list
allows everything not denied, an unknown client matches no allow list; a per-path rule's allow
list (when given) replaces the global one and its deny list adds to the global one.

Scaling: networks are kept as merged, sorted integer ranges per IP version, so a lookup is one
binary search, O(log n) in the number of networks (10,000 networks cost about 14 comparisons);
building is O(n log n), memory O(n). Resolution reads the header lazily from the right and stops
at the first untrusted entry, at most ``MAX_HOPS`` entries of at most 1 KiB each: what a client
puts on the left costs at most a C-level scan of the header, never Python work per entry.
"""

from __future__ import annotations

import functools
import json
import re
from bisect import bisect_right
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_settings import NoDecode

from secmw.core.deny import Deny
from secmw.core.memo import remember
from secmw.core.paths import PathTable
from secmw.core.request import RequestView
from secmw.core.section import Section, StrList
from secmw.errors import ConfigurationError

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
ProxyHeader: TypeAlias = Literal["x-forwarded-for", "forwarded", "none"]

UNIX = "unix"
"""Trusted-proxy entry for connections without a peer address (a proxy on a unix socket)."""
MAX_HOPS = 64
"""The walk reads at most this many header entries; a client further left is unknown."""
RESOLVED_KEY = "secmw.client_resolved"
ADDRESS_KEY = "secmw.client_address"
FORWARDED_KEY = "secmw.client_forwarded"
DENIED = Deny(403, "Access from this address is not allowed.", "ip_not_allowed")

_ADMITTED_CAP = 4096  # peers remembered as allowed by IPFilter.admits
_MAX_ENTRY = 128  # a quoted, bracketed IPv6 address with a zone id and a port fits easily
_MAX_ELEMENT = 1024  # a longer list item is garbage, whatever it holds: bounds the work per hop
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 §6: port / obfport
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 6874 §2: a zone id is unreserved characters
_QUOTED = re.compile(r'(?:[^"\\]|\\.)*', re.DOTALL)  # RFC 9110 §5.6.4 quoted-string body
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 7239 §4 forwarded-pair; ':' and brackets are tolerated unquoted (some proxies omit quotes).
_PAIR = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;," \t]*)[ \t]*')
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
# shorthand like inet_aton's "10.1") and several times faster than ipaddress's string parser.


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
        return _network(text)
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None


def _network(text: str) -> IPNetwork:
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
        entries = _items(trusted_proxies)
        self._trust_unix = UNIX in entries
        self._trusted = NetworkSet.parse(
            (item for item in entries if item != UNIX), "SECMW_IP__TRUSTED_PROXIES"
        )
        self.header = header.strip().lower()
        if self.header not in ("x-forwarded-for", "forwarded", "none"):
            raise ConfigurationError(f"SECMW_IP__PROXY_HEADER: unknown header {header!r}")
        if depth is not None and not 1 <= depth <= MAX_HOPS:
            raise ConfigurationError(f"SECMW_IP__DEPTH: must be between 1 and {MAX_HOPS}")
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


def _items(values: Iterable[str]) -> list[str]:
    """A list argument; a string is comma-separated, as in the environment."""
    if isinstance(values, str):
        values = values.split(",")
    return [item.strip() for item in values if item.strip()]


@dataclass(frozen=True, slots=True)
class IPRefusal:
    """Why a client was refused (for the audit log only: the response gives no hint)."""

    reason: str
    rule: str


class IPPolicy:
    """Allow and deny networks, globally and per path; deny wins.

    A non-empty allow list refuses every address it does not contain (and an unknown client);
    an empty one allows all but the deny list. A path matching a rule (``secmw.core.paths``
    patterns, first match wins) uses the rule's ``allow`` instead of the global one when the rule
    gives one, and the global ``deny`` plus the rule's. Each check is one or two binary searches.

    Raises:
        ConfigurationError: for a bad network or path pattern, naming the variable.
    """

    __slots__ = ("_allow", "_deny", "_rules")

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        rules: Mapping[str, Mapping[str, Iterable[str] | None]] | None = None,
    ) -> None:
        self._allow = NetworkSet.parse(_items(allow), "SECMW_IP__ALLOW")
        deny_networks = [parse_network(item, "SECMW_IP__DENY") for item in _items(deny)]
        self._deny = NetworkSet(deny_networks)
        compiled = []
        for pattern, lists in (rules or {}).items():
            setting = f"SECMW_IP__RULES ({pattern})"
            unknown = set(lists) - {"allow", "deny"}
            if unknown:
                raise ConfigurationError(f"{setting}: unknown key(s) {', '.join(sorted(unknown))}")
            rule_allow = lists.get("allow")
            compiled.append(
                (
                    pattern,
                    (
                        None
                        if rule_allow is None
                        else NetworkSet.parse(_items(rule_allow), setting),
                        NetworkSet(
                            deny_networks
                            + [parse_network(i, setting) for i in _items(lists.get("deny") or ())]
                        ),
                    ),
                )
            )
        self._rules = PathTable(compiled, setting="SECMW_IP__RULES")

    @property
    def has_rules(self) -> bool:
        """Whether some path has lists of its own."""
        return bool(self._rules)

    def check(self, address: IPAddress | None, path: str) -> IPRefusal | None:
        """None to let ``address`` reach ``path`` (a normalized path), else the refusal."""
        rule, allow, deny = "*", self._allow, self._deny
        matched = self._rules.match(path) if self._rules else None
        if matched is not None:
            rule, (rule_allow, deny) = matched
            allow = allow if rule_allow is None else rule_allow
        if address is None:
            return IPRefusal("client address unknown", rule) if allow else None
        if address in deny:
            return IPRefusal("address in deny list", rule)
        if allow and address not in allow:
            return IPRefusal("address not in allow list", rule)
        return None


class IPFilter:
    """The IP layer: resolve the client once, then apply the policy. Shared by both adapters.

    Peers that were allowed, whose address is the client itself (no forwarding header can speak
    for them) and that need no rewriting are remembered when the policy has no per-path rules:
    ``peer in admitted_peers`` then answers for the next request of that peer without parsing
    anything. The memory is bounded (cleared when full: a flood of new addresses only costs the
    full check).
    """

    __slots__ = ("_admitted", "_memo", "enabled", "policy", "resolver", "rewrite_client")

    def __init__(
        self,
        resolver: ClientAddressResolver | None = None,
        policy: IPPolicy | None = None,
        *,
        enabled: bool = True,
        rewrite_client: bool = True,
    ) -> None:
        self.resolver = resolver or ClientAddressResolver()
        self.policy = policy or IPPolicy()
        self.enabled = enabled
        self.rewrite_client = rewrite_client
        self._memo = not self.policy.has_rules
        self._admitted: dict[str, bool] = {}

    def admits(self, peer: str | None, path: str) -> bool:
        """True when ``peer`` is known to be allowed on every path as its own client and ``path``
        has no ``/.`` (which could be a dot segment, refused by every layer): nothing else to
        check, nothing to rewrite."""
        return peer is not None and peer in self._admitted and "/." not in path

    @property
    def admitted_peers(self) -> Container[str]:
        """Peers known to be allowed on every path as their own client (see the class)."""
        return self._admitted

    @classmethod
    def from_settings(cls, settings: IPSettings) -> IPFilter:
        """Build from ``SecuritySettings().ip``."""
        return cls(
            ClientAddressResolver(
                settings.trusted_proxies, header=settings.proxy_header, depth=settings.depth
            ),
            IPPolicy(
                settings.allow,
                settings.deny,
                {pattern: rule.model_dump() for pattern, rule in settings.rules.items()},
            ),
            enabled=settings.enabled,
            rewrite_client=settings.rewrite_client,
        )

    def check(self, request: RequestView) -> IPRefusal | None:
        """Resolve ``request.client`` (once per request) and decide."""
        address = request_client_address(request, self.resolver)
        refusal = self.policy.check(address, request.normalized_path)
        peer = request.peer
        if (
            self._memo
            and refusal is None
            and peer is not None
            and request.client == peer
            and not self.resolver.reads_header(address)
        ):
            remember(self._admitted, _ADMITTED_CAP, peer, True)
        return refusal


def _check_networks(values: list[str], *, unix: bool = False) -> list[str]:
    for value in values:
        if not (unix and value.strip() == UNIX):
            _network(value)  # pydantic reports the ValueError under the variable's name
    return values


class IPRule(Section):
    """Per-path lists: ``allow`` (when given) replaces the global allow list, ``deny`` adds."""

    allow: StrList | None = Field(None, description="Networks allowed on this path.")
    deny: StrList = Field(default_factory=list, description="Networks refused on this path.")


class IPSettings(Section):
    """IP allowlisting and client address resolution (``SECMW_IP__*``)."""

    enabled: bool = Field(True, description="Run the IP layer.")
    allow: StrList = Field(
        default_factory=list,
        description="Allowed networks or addresses; empty allows all but `deny`.",
    )
    deny: StrList = Field(
        default_factory=list, description="Refused networks or addresses (deny wins)."
    )
    trusted_proxies: StrList = Field(
        default_factory=list,
        description="Proxies whose forwarding header is read; `unix`: a peerless socket.",
    )
    proxy_header: Annotated[ProxyHeader, BeforeValidator(lambda v: str(v).strip().lower())] = Field(
        "x-forwarded-for", description="`x-forwarded-for`, `forwarded` or `none`."
    )
    depth: int | None = Field(
        None,
        ge=1,
        le=MAX_HOPS,
        description="Take the N-th header entry from the right (fixed proxy chain).",
    )
    rules: Annotated[dict[str, IPRule], NoDecode] = Field(
        default_factory=dict,
        description='Path pattern to {"allow": [...], "deny": [...]}; allow replaces, deny adds.',
    )
    rewrite_client: bool = Field(
        True, description='Write the client to ASGI scope["client"] / WSGI REMOTE_ADDR.'
    )

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return _check_networks(value, unix=True)

    @field_validator("rules", mode="wrap")
    @classmethod
    def _rules(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, IPRule]:
        if isinstance(value, str):  # NoDecode: parsed here so a JSON error names the variable
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        try:
            rules: dict[str, IPRule] = handler(value)
        except ValidationError as exc:  # report under SECMW_IP__RULES, not a path-shaped name
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        for pattern, rule in rules.items():
            PathTable([(pattern, None)], setting=f"rule {pattern!r}")
            for item in [*(rule.allow or ()), *rule.deny]:
                try:
                    _network(item)
                except ValueError as exc:
                    raise ValueError(f"rule {pattern!r}: {exc}") from None
        return rules
