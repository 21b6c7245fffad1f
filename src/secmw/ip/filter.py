"""The IP allow/deny policy, globally and per path.

Allow and deny lists of networks, deny wins, an empty allow list allows everything not denied, an
unknown client matches no allow list; a per-path rule's allow list (when given) replaces the
global one and its deny list adds to the global one.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from secmw.core.deny import Deny
from secmw.core.memo import remember
from secmw.core.paths import PathTable
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ip.addresses import IPAddress, NetworkSet, parse_network
from secmw.ip.forwarded import ClientAddressResolver, list_items, request_client_address
from secmw.ip.settings import IPSettings

DENIED = Deny(403, "Access from this address is not allowed.", "ip_not_allowed")


_ADMITTED_CAP = 4096  # peers remembered as allowed by IPFilter.admits


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
        self._allow = NetworkSet.parse(list_items(allow), "ip.allow")
        deny_networks = [parse_network(item, "ip.deny") for item in list_items(deny)]
        self._deny = NetworkSet(deny_networks)
        compiled = []
        for pattern, lists in (rules or {}).items():
            setting = f"ip.rules ({pattern})"
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
                        else NetworkSet.parse(list_items(rule_allow), setting),
                        NetworkSet(
                            deny_networks
                            + [
                                parse_network(i, setting)
                                for i in list_items(lists.get("deny") or ())
                            ]
                        ),
                    ),
                )
            )
        self._rules = PathTable(compiled, setting="ip.rules")

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
