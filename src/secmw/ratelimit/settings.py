"""Settings of the rate-limit layer and their compiled form (rules, limits, overrides).

Everything here is checked when the settings are built or compiled, so a bad limit string, an
unknown strategy or an inconsistent shared bucket stops the app at start, naming the variable.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlparse

from limits import RateLimitItem, parse_many
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from secmw.core.principal import Principal
from secmw.core.section import Section, StrList
from secmw.errors import ConfigurationError
from secmw.ratelimit.windows import HeaderStyle, Strategy

KeyKind: TypeAlias = Literal["principal-or-ip", "ip", "apikey", "principal"]
StorageErrorPolicy: TypeAlias = Literal["memory", "allow", "deny"]
LimitMode: TypeAlias = Literal["exact", "leased"]

STORAGE_SCHEMES = frozenset(
    f"{server}{suffix}"
    for server in ("redis", "valkey")
    for suffix in ("", "s", "+unix", "+cluster", "+sentinel")
) | {"memory"}
_NAME = re.compile(r"[ -~]{1,64}")  # printable ASCII: a policy name is an RFC 9651 String
_SAFE = re.compile(r"[A-Za-z0-9._:@/-]{1,96}")  # key parts kept readable; anything else hashed


def _check_limit(value: str) -> str:
    if not parse_many(value):
        raise ValueError(f"no limit in {value!r}")
    return value


LimitString = Annotated[str, AfterValidator(_check_limit)]
"""Limits in ``limits`` notation: ``"100/minute"``, ``"10 per second;1000/day"``."""


class RateLimitOverride(Section):
    """Other limits for principals holding a scope (or a role): ``{"scope": "tier:premium",
    "limit": "1000/minute"}``. The first matching override wins."""

    scope: str | None = None
    role: str | None = None
    limit: LimitString

    @model_validator(mode="after")
    def _one_selector(self) -> RateLimitOverride:
        if (self.scope is None) == (self.role is None):
            raise ValueError("an override names exactly one of 'scope' or 'role'")
        return self


class RateLimitRule(Section):
    """One per-route rule (an item of ``rate_limit.rules``)."""

    path: str = Field(
        description="Path pattern (secmw.core.paths syntax): `/items/{id}`, `/api/*`."
    )
    methods: StrList = Field(default_factory=list, description="Methods; empty for all.")
    limit: LimitString | None = Field(None, description="Own limits; none: charge the default.")
    cost: int = Field(1, ge=1, le=1_000_000, description="Units per request.")
    name: str | None = Field(None, description="Policy name; default: methods and pattern.")
    bucket: str | None = Field(None, description="Shared bucket: rules naming it share a budget.")
    key: KeyKind | None = Field(None, description="Key for this rule; default: the global key.")
    per_path: bool = Field(False, description="One budget per concrete path, not per pattern.")
    include_default: bool = Field(True, description="Also charge the default limits.")
    overrides: list[RateLimitOverride] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [method.upper() for method in value]

    @field_validator("name", "bucket")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError("use 1 to 64 printable ASCII characters")
        return value


class RateLimitExempt(Section):
    """Requests never limited (``rate_limit.exempt``, a JSON object, or ``__PATHS`` ...)."""

    paths: StrList = Field(default_factory=list, description="Path patterns (`/health`).")
    networks: StrList = Field(default_factory=list, description="Client networks (`10.0.0.0/8`).")
    scopes: StrList = Field(default_factory=list, description="Principals holding any of these.")


class RateLimitSettings(Section):
    """The rate-limit layer (``rate_limit.*``).

    The default strategy is the moving window: it is exact (never more than the limit in any
    window-long span), at the price of one stored timestamp per unit. The fixed window stores one
    counter but admits up to twice the limit across a window boundary; the sliding window counter
    stores two counters and estimates. See ``docs/redis.md``.
    """

    enabled: bool = Field(True, description="Run the rate-limit layer.")
    storage_uri: SecretStr = Field(
        SecretStr("memory://"),
        description="`memory://`, `redis://`, `rediss://`, `redis+cluster://`, "
        "`redis+sentinel://`, `valkey://` ... (may hold a password: never logged).",
    )
    strategy: Strategy = Field("moving-window", description="Windowing strategy.")
    default: str = Field("100/minute", description="Default limits; empty for none.")
    overrides: list[RateLimitOverride] = Field(
        default_factory=list, description="Overrides of the default limits."
    )
    rules: list[RateLimitRule] = Field(
        default_factory=list, description="JSON list of rules, or an object of named rules."
    )
    key: KeyKind = Field("principal-or-ip", description="What a budget belongs to.")
    headers: HeaderStyle = Field("ietf", description="`ietf`, `legacy`, `both` or `none`.")
    on_storage_error: StorageErrorPolicy = Field(
        "memory", description="`memory` (per-process limits), `allow` or `deny` (503)."
    )
    exempt: RateLimitExempt = Field(default_factory=RateLimitExempt)
    mode: LimitMode = Field(
        "exact",
        description="On Redis: `exact` (Redis decides every request) or `leased` (each process"
        " takes slices of a budget and admits from them; bounded overshoot, see docs/redis.md).",
    )
    lease_slice: int = Field(
        10,
        ge=2,
        le=10_000,
        description="Units a process leases at once in `leased` mode; the overshoot bound grows"
        " with it (processes x (slice - 1)).",
    )
    auth_failures: LimitString = Field(
        "10/minute", description="Failed authentications allowed per client address."
    )
    auth_failures_per_user_address: LimitString = Field(
        "10/minute",
        description="Failed authentications allowed per user name from one client address.",
    )
    auth_failures_per_user: LimitString = Field(
        "100/hour",
        description="Failed authentications allowed per user name from all addresses together"
        " (a ceiling against distributed guessing; reaching it locks the user name out).",
    )
    connect_timeout: float = Field(
        0.25, gt=0, le=30, description="Redis connect timeout (s), within the command timeout."
    )
    command_timeout: float = Field(
        0.25, gt=0, le=30, description="Deadline of one storage call, connect included (s)."
    )
    breaker_pause: float = Field(
        5.0, gt=0, le=3600, description="Seconds without calling a failed storage."
    )
    ipv6_prefix: int = Field(64, ge=8, le=128, description="IPv6 clients are keyed by prefix.")
    cors_preflight_exempt: bool = Field(
        True, description="CORS preflights (OPTIONS with Origin) are not limited."
    )
    key_prefix: str = Field("secmw", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    memory_max_keys: int = Field(
        50_000,
        ge=100,
        description="Cap on keys in the in-memory store (the least recently used go past it).",
    )

    @field_validator("default")
    @classmethod
    def _default_limits(cls, value: str) -> str:
        return _check_limit(value) if value.strip() else ""

    @field_validator("storage_uri")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlparse(value.get_secret_value()).scheme
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"unsupported storage scheme {scheme!r}")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _named_rules(cls, value: Any) -> Any:
        if isinstance(value, dict):  # {"login": {...}}: the keys name the rules
            return [{"name": name, **rule} for name, rule in value.items()]
        return value


# -- compiled form ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """One parsed limit: the ``limits`` item, its policy name and its part of the storage key."""

    item: RateLimitItem
    policy: str
    slug: str


@dataclass(frozen=True, slots=True)
class LimitSet:
    """A rule's limits and, per scope or role, the limits that replace them."""

    base: tuple[Limit, ...]
    overrides: tuple[tuple[str, str, tuple[Limit, ...]], ...]

    def for_principal(self, principal: Principal | None) -> tuple[Limit, ...]:
        """The limits for this principal: the first matching override's, else the base."""
        if self.overrides and principal is not None and principal.is_authenticated:
            for kind, value, limits in self.overrides:
                held = principal.scopes if kind == "scope" else principal.roles
                if value in held:
                    return limits
        return self.base


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match: its policy name, key namespace and limits (None: the default's)."""

    name: str
    namespace: str
    limits: LimitSet | None
    cost: int
    key: KeyKind | None
    per_path: bool
    include_default: bool


def digest(text: str) -> str:
    """128 bits of SHA-256, in hex: how long or unusual key parts are stored."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def bounded(text: str) -> str:
    """``text`` when short and plain, else its digest: a key part can never blow up storage."""
    return text if _SAFE.fullmatch(text) else "h:" + digest(text)


def compile_limits(
    limit: str, overrides: Iterable[RateLimitOverride], name: str, setting: str
) -> LimitSet:
    """Parse ``limit`` and its overrides; policies are named ``name`` (``name-<window>s`` when
    there are several limits)."""

    def items_of(text: str) -> tuple[Limit, ...]:
        items = parse_many(text)
        limits: list[Limit] = []
        for index, item in enumerate(items):
            policy = name if len(items) == 1 else f"{name}-{item.get_expiry()}s"
            if any(existing.policy == policy for existing in limits):
                policy = f"{policy}-{index}"
            slug = f"{item.amount}/{item.multiples}{item.GRANULARITY.name}"
            limits.append(Limit(item, policy, slug))
        return tuple(limits)

    try:
        base = items_of(limit)
        selected = []
        for override in overrides:
            kind, value = ("scope", override.scope) if override.scope else ("role", override.role)
            selected.append((kind, value or "", items_of(override.limit)))
        return LimitSet(base, tuple(selected))
    except ValueError as exc:
        raise ConfigurationError(f"{setting}: {exc}") from None


def var(*loc: str) -> str:
    """The environment variable of a rate-limit setting: ``var("rules")``."""
    return "rate_limit." + ".".join(loc)


def compile_rules(
    rules: list[RateLimitRule], default: LimitSet | None
) -> list[tuple[RateLimitRule, CompiledRule]]:
    """Compile the rules in order; shared buckets take their limits from the rule declaring them.

    Raises:
        ConfigurationError: duplicate names, a rule without any limit to charge, or rules sharing
            a bucket with different limits.
    """
    setting = var("rules")
    owners: dict[str, RateLimitRule] = {}  # bucket -> the first rule declaring its limit
    for rule in rules:
        if rule.bucket is None or rule.limit is None:
            continue
        owner = owners.setdefault(rule.bucket, rule)
        if (rule.limit, rule.overrides) != (owner.limit, owner.overrides):
            raise ConfigurationError(
                f"{setting}: rules sharing bucket {rule.bucket!r} must declare the same limit"
                " and overrides (or leave them to one rule)"
            )
    compiled: list[tuple[RateLimitRule, CompiledRule]] = []
    names: set[str] = set()
    for rule in rules:
        name = rule.bucket or rule.name or _auto_name(rule)
        if rule.bucket is None and name in names:
            raise ConfigurationError(f"{setting}: two rules are named {name!r}")
        names.add(name)
        owner = owners.get(rule.bucket, rule) if rule.bucket else rule
        if owner.limit is None and (rule.bucket is not None or default is None):
            raise ConfigurationError(
                f"{setting}: rule {name!r} has no limit"
                + (" (nor does its bucket)" if rule.bucket else " and there is no default")
            )
        limits = (
            compile_limits(owner.limit, owner.overrides, name, setting) if owner.limit else None
        )
        namespace = ("b:" if rule.bucket else "r:") + bounded(name)
        compiled.append(
            (
                rule,
                CompiledRule(
                    name,
                    namespace,
                    limits,
                    rule.cost,
                    rule.key,
                    rule.per_path,
                    rule.include_default,
                ),
            )
        )
    return compiled


def _auto_name(rule: RateLimitRule) -> str:
    name = " ".join([*rule.methods, rule.path])
    return name if _NAME.fullmatch(name) else "rule-" + digest(name)[:12]
