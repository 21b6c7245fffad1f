"""Rate-limit rules and keys: the pure core of the rate-limit layer, and the audit of a refusal
that both adapters announce alike.

A request is charged against the **default** limits (``rate_limit.default``) and against
the first **rule** whose path pattern and method match it. A rule may carry its own limits, a
**cost** (units per request, charged to every limit the request is under), a shared **bucket**
several rules draw from, a **key** choice, and **overrides** that give principals holding a scope
or a role other limits. Exempt paths, networks and scopes are not limited at all.

Keys never leak or collide: each is ``<prefix>:{<identity>}:<namespace>:<limit>``, where the
namespace is the rule (or bucket) and never the concrete URL unless the rule asks (``per_path``),
so ``/items/1`` and ``/items/2`` share one budget. Identities are the principal id, the client
address (IPv6 clients by prefix, /64 by default, so one host cannot rotate through its addresses)
or the SHA-256 of the API key (never the key itself); long or unusual parts are hashed, so a key
stays under 200 characters whatever the request holds. Rules match the normalized path,
case-insensitively, so ``//Login/`` meets the rule for ``/login``.

There is never a shared bucket for clients nobody can identify: a request under a limit whose key
cannot be built (no client address and no principal) is refused with 403 ``client_unidentified``
rather than charged to a bucket every such client would share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from typing import TypeAlias

from secmw.core.deny import Deny
from secmw.core.memo import remember
from secmw.core.paths import PathSet, PathTable
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ip.addresses import IPAddress, NetworkSet, parse_address
from secmw.ratelimit.plan import UNIDENTIFIED, Plan
from secmw.ratelimit.settings import (
    CompiledRule,
    KeyKind,
    Limit,
    RateLimitRule,
    RateLimitSettings,
    bounded,
    compile_limits,
    compile_rules,
    digest,
    var,
)
from secmw.ratelimit.windows import (
    LimitHit,
    Outcome,
    Strategy,
    admits,
    current_field,
    rate_limit_fields,
    window_stats,
)

__all__ = ["KeyFunc", "RateLimitPolicy"]

KeyFunc: TypeAlias = Callable[[RequestView], "str | None"]
Fields: TypeAlias = list[tuple[str, str]]
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WEBSOCKET")


class RateLimitPolicy:
    """The compiled rules: which limits a request is charged against, under which keys.

    Pure: it builds plans and turns a storage :class:`Outcome` into a 429 or response fields; the
    adapters do the storage I/O in between.

    Args:
        settings: The rate-limit settings.
        key_func: Custom key: request -> identity (None when it cannot tell); replaces the
            global ``key`` (rules naming a key keep theirs).
        apikey_header: Header carrying API keys (for ``key="apikey"``).
        apikey_query: Query parameter carrying API keys.
        clock: Wall clock for ``X-RateLimit-Reset`` (Unix seconds).
    """

    def __init__(
        self,
        settings: RateLimitSettings,
        *,
        key_func: KeyFunc | None = None,
        apikey_header: str | None = "X-API-Key",
        apikey_query: str | None = "api_key",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.strategy: Strategy = settings.strategy
        self.key_func = key_func
        self._apikey_header = apikey_header
        self._apikey_query = apikey_query
        self._clock = clock
        # The strategy is part of every key: switching it on a live Redis must not meet keys of
        # the other layout (a list where a counter is expected is a WRONGTYPE error).
        self._suffix = {"fixed-window": "fw", "moving-window": "mw"}.get(self.strategy, "sw")
        self._prefix = settings.key_prefix
        self._default = (
            compile_limits(settings.default, settings.overrides, "default", var("default"))
            if settings.default
            else None
        )
        rules = compile_rules(settings.rules, self._default)
        self._check_costs(rules)
        self._tables = {
            method: PathTable(
                [(r.path, c) for r, c in rules if not r.methods or _covers(r.methods, method)],
                setting=var("rules"),
            )
            for method in {*_METHODS, *(m for r, _ in rules for m in r.methods)}
        }
        self._other = PathTable([(r.path, c) for r, c in rules if not r.methods])
        exempt = settings.exempt
        self._exempt_paths = PathSet(exempt.paths, setting=var("exempt", "paths"))
        self._exempt_networks = NetworkSet.parse(exempt.networks, var("exempt", "networks"))
        self._any_exempt_path = bool(self._exempt_paths)
        self._any_exempt_network = bool(self._exempt_networks)
        # client string -> identity; addresses repeat request after request, parsing them does
        # not need to. Bounded: cleared when full (a flood of new addresses only costs parsing).
        self._identities: dict[str, str] = {}
        self._principals: dict[str, str] = {}  # principal id -> identity, bounded alike
        self._plans: dict[tuple[object, ...], Plan] = {}
        self._decisions: dict[tuple[object, ...], Plan | Deny | None] = {}
        # Only the method, path, client and principal decide a plan unless a key function or an
        # API-key key reads more of the request.
        self._by_request = key_func is None and "apikey" not in {
            settings.key,
            *(rule.key for rule in settings.rules),
        }
        self._key = settings.key
        self._preflight_exempt = settings.cors_preflight_exempt
        self._ietf = settings.headers == "ietf"
        self._exempt_scopes = frozenset(exempt.scopes)

    def _check_costs(self, rules: list[tuple[RateLimitRule, CompiledRule]]) -> None:
        for _, rule in rules:
            sets = [rule.limits or self._default]
            if rule.include_default and rule.limits:
                sets.append(self._default)
            for limit_set in sets:
                if limit_set is None:
                    continue
                for limits in (limit_set.base, *(o[2] for o in limit_set.overrides)):
                    if any(rule.cost > limit.item.amount for limit in limits):
                        raise ConfigurationError(
                            f"{var('rules')}: rule {rule.name!r} costs {rule.cost}, more than"
                            " one of its limits allows: no request could ever pass"
                        )

    # -- per request ---------------------------------------------------------------------

    def plan(self, request: RequestView) -> Plan | Deny | None:
        """The limits ``request`` is under; None when exempt or unlimited; 403 when the client
        cannot be identified.

        The answer depends only on the method, the path, the client and the principal's id,
        scheme, scopes and roles (unless a key function or an API-key key reads more of the
        request, or the method is ``OPTIONS``), so it is remembered per such request and a
        client's next request reuses it; plans are also shared between requests with the same
        rule, limits and identities. Both memories are bounded (cleared when full), and long
        paths or ids are never remembered.
        """
        principal = request.state.get("principal")
        if principal is not None and not isinstance(principal, Principal):
            principal = None
        method, path, client = request.method, request.normalized_path, request.client
        if (
            not self._by_request
            or method == "OPTIONS"
            or len(path) > _MEMO_TEXT
            or (client is not None and len(client) > _MEMO_TEXT)
        ):
            return self._plan(request, principal)
        if principal is None:
            memo: tuple[object, ...] = (method, path, client)
        elif len(principal.id) > _MEMO_TEXT:
            return self._plan(request, principal)
        else:
            p = principal
            memo = (method, path, client, p.id, p.scheme, p.scopes, p.roles)
        known = self._decisions.get(memo, _UNKNOWN)
        if known is _UNKNOWN:
            known = remember(self._decisions, _PLAN_CACHE, memo, self._plan(request, principal))
        return known  # type: ignore[return-value]

    def _plan(self, request: RequestView, principal: Principal | None) -> Plan | Deny | None:
        path = request.normalized_path
        if self._any_exempt_path and path in self._exempt_paths:
            return None
        if self._preflight_exempt and request.method == "OPTIONS" and request.is_cors_preflight:
            return None  # the browser's own check before a cross-origin call, never the call
        if (
            principal is not None
            and self._exempt_scopes
            and not self._exempt_scopes.isdisjoint(principal.scopes)
        ):
            return None
        if self._any_exempt_network and self._address(request) in self._exempt_networks:
            return None
        table = self._tables.get(request.method)
        found = (self._other if table is None else table).match(path)
        rule = found[1] if found else None
        base: tuple[Limit, ...] = ()
        own: tuple[Limit, ...] = ()
        if self._default is not None and (rule is None or rule.include_default or not rule.limits):
            base = self._default.for_principal(principal)
        if rule is not None and rule.limits is not None:
            own = rule.limits.for_principal(principal)
        if not base and not own:
            return None
        tag = self._identity(None, request, principal)
        own_tag = tag
        if own and rule is not None and rule.key is not None:
            own_tag = self._identity(rule.key, request, principal)
        if (base and tag is None) or (own and own_tag is None):
            return UNIDENTIFIED
        space = None
        if own and rule is not None and rule.per_path:
            space = bounded(path.lower().rstrip("/") or "/")
        shared = (id(rule), id(base), id(own), tag, own_tag, space)
        plan = self._plans.get(shared)
        if plan is None:
            plan = remember(
                self._plans, _PLAN_CACHE, shared, self._build(rule, base, own, tag, own_tag, space)
            )
        return plan

    def _build(
        self,
        rule: CompiledRule | None,
        base: tuple[Limit, ...],
        own: tuple[Limit, ...],
        tag: str | None,
        own_tag: str | None,
        space: str | None,
    ) -> Plan:
        cost = rule.cost if rule else 1
        hits = []
        for namespace, limits, identity in (
            ("d", base, tag),
            (rule.namespace if rule else "", own, own_tag),
        ):
            if space is not None and limits is own:
                namespace += ":" + space
            for limit in limits:
                key = f"{self._prefix}:{{{identity}}}:{namespace}:{limit.slug}:{self._suffix}"
                hits.append(LimitHit(limit.policy, limit.item, key, identity or "", cost))
        return Plan(tuple(hits), rule.name if rule else "default")

    def conclude(
        self,
        plan: Plan,
        outcome: Outcome,
        *,
        detail: str = "Rate limit exceeded.",
        code: str = "rate_limited",
    ) -> Deny | Fields:
        """A 429 with ``Retry-After`` when refused, else the rate-limit fields to add."""
        if outcome.admitted and self._ietf:  # the common case, without the per-limit records
            current = current_field(self.strategy, plan.hits, outcome.states)
            return [("ratelimit-policy", plan.policy_field), ("ratelimit", current)]
        stats = [
            window_stats(
                self.strategy,
                hit,
                state,
                not outcome.admitted and not admits(self.strategy, hit, state),
            )
            for hit, state in zip(plan.hits, outcome.states, strict=True)
        ]
        fields = rate_limit_fields(self.settings.headers, stats, self._clock())
        if outcome.admitted:
            return fields
        retry = max((s.retry_after for s in stats), default=1) or 1
        return Deny(429, detail, code, (("retry-after", str(retry)), *fields))

    def conclude_raw(self, plan: Plan, outcome: Outcome) -> Deny | list[tuple[bytes, bytes]]:
        """``conclude`` with the fields as ASGI's byte pairs.

        The admitted case, the one on every request, is rendered here straight to bytes rather
        than by encoding ``conclude``'s strings (docs/performance.md)."""
        if outcome.admitted and self._ietf:
            current = current_field(self.strategy, plan.hits, outcome.states)
            return [(b"ratelimit-policy", plan.raw_policy_field), (b"ratelimit", current.encode())]
        verdict = self.conclude(plan, outcome)
        if isinstance(verdict, Deny):
            return verdict
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in verdict]

    def storage_key(self, identity: str, namespace: str, slug: str) -> str:
        """The key of a budget outside the rules (the failure throttles'), laid out as theirs."""
        return f"{self._prefix}:{{{identity}}}:{namespace}:{slug}:{self._suffix}"

    def address_identity(self, request: RequestView) -> str | None:
        """The client address as budgets are keyed on it (IPv6 by prefix); None when unknown."""
        return self._address_identity(request)

    # -- keys ----------------------------------------------------------------------------

    def _identity(
        self, kind: KeyKind | None, request: RequestView, principal: Principal | None
    ) -> str | None:
        if kind is None:
            if self.key_func is not None:
                value = self.key_func(request)
                return bounded("c:" + value) if value else None
            kind = self._key
        if principal is None:
            return None if kind == "principal" else self._address_identity(request)
        known = principal.is_authenticated and principal.id
        if kind == "apikey" and known and principal.scheme == "apikey":
            presented = self._api_key(request)
            if presented:
                return "k:" + digest(presented)  # never the key itself
        if kind in ("principal", "principal-or-ip", "apikey") and known:
            return self._principal_identity(principal.id)
        if kind == "principal":
            return None
        return self._address_identity(request)

    def _principal_identity(self, principal_id: str) -> str:
        known = self._principals.get(principal_id)
        if known is None:
            known = remember(
                self._principals, _IDENTITY_CACHE, principal_id, bounded("p:" + principal_id)
            )
        return known

    def _address(self, request: RequestView) -> IPAddress | None:
        return parse_address(request.client) if request.client else None

    def _address_identity(self, request: RequestView) -> str | None:
        client = request.client
        if not client:
            return None
        known = self._identities.get(client)
        if known is not None:
            return known
        return remember(self._identities, _IDENTITY_CACHE, client, self._parse_identity(request))

    def _parse_identity(self, request: RequestView) -> str:
        assert request.client is not None
        address = self._address(request)
        if address is None:  # a server that reports something else (a socket path, a name)
            return bounded("a:" + request.client)
        if isinstance(address, IPv6Address) and self.settings.ipv6_prefix < 128:
            network = IPv6Network((address, self.settings.ipv6_prefix), strict=False)
            return "ip:" + str(network)
        return "ip:" + str(address)

    def _api_key(self, request: RequestView) -> str | None:
        if self._apikey_header and (value := request.headers.get(self._apikey_header)):
            return value
        if self._apikey_query and (values := request.query_params(self._apikey_query)):
            return values[0]
        return None


_IDENTITY_CACHE = 4096
_PLAN_CACHE = 4096
_MEMO_TEXT = 256  # longer paths, addresses or ids are planned afresh, never remembered
_UNKNOWN = object()


def _covers(methods: list[str], method: str) -> bool:
    # A rule for GET covers HEAD too: servers answer HEAD with the GET handler (RFC 9110 §9.3.2).
    return method in methods or (method == "HEAD" and "GET" in methods)
