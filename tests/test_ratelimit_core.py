"""The pure core of the rate-limit layer: settings, rules, keys, window arithmetic, fields."""

from __future__ import annotations

from typing import Any

import pytest
from limits import parse

from secmw import ConfigurationError, Principal, SecuritySettings
from secmw.auth.throttle import FailureBudgets, failure_plan
from secmw.core.request import RequestView
from secmw.ratelimit.plan import UNIDENTIFIED, Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import (
    LimitHit,
    Outcome,
    admits,
    charge,
    ietf_fields,
    legacy_fields,
    rate_limit_fields,
    wait_ms,
    window_stats,
)


def policy(**values: Any) -> RateLimitPolicy:
    """A compiled policy from rate-limit settings given as keywords."""
    return RateLimitPolicy(RateLimitSettings(**values))


def request(
    path: str = "/",
    method: str = "GET",
    client: str | None = "203.0.113.7",
    principal: Principal | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> RequestView:
    """A request view with a client address and, optionally, a principal."""
    from secmw.core.fields import Headers

    view = RequestView(method, path, peer=client, headers=Headers(headers or []))
    if principal is not None:
        view.state["principal"] = principal
    return view


def plan_of(pol: RateLimitPolicy, view: RequestView) -> Plan:
    """The plan, asserted to be one."""
    found = pol.plan(view)
    assert isinstance(found, Plan), found
    return found


# -- settings ----------------------------------------------------------------------------------


def test_defaults_are_closed_and_documented() -> None:
    """Enabled, 100/minute, moving window, memory, IETF fields, memory fallback, /64."""
    s = RateLimitSettings()
    assert (s.enabled, s.default, s.strategy, s.key, s.headers) == (
        True,
        "100/minute",
        "moving-window",
        "principal-or-ip",
        "ietf",
    )
    assert s.storage_uri.get_secret_value() == "memory://"
    assert (s.on_storage_error, s.auth_failures, s.ipv6_prefix) == ("memory", "10/minute", 64)


def test_environment_json_rules_and_nested_exempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rules come as JSON (a list or an object of named rules); exempt takes nested variables."""
    monkeypatch.setenv(
        "SECMW_RATE_LIMIT__RULES",
        '{"login": {"path": "/login", "methods": "POST", "limit": "5/minute"}}',
    )
    monkeypatch.setenv("SECMW_RATE_LIMIT__EXEMPT__PATHS", "/health,/metrics")
    monkeypatch.setenv("SECMW_RATE_LIMIT__STRATEGY", "fixed-window")
    s = SecuritySettings().rate_limit
    assert s.rules[0].name == "login"
    assert s.rules[0].methods == ["POST"]
    assert s.exempt.paths == ["/health", "/metrics"]
    assert s.strategy == "fixed-window"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("SECMW_RATE_LIMIT__DEFAULT", "lots/minute", id="default"),
        pytest.param("SECMW_RATE_LIMIT__STRATEGY", "token-bucket", id="strategy"),
        pytest.param("SECMW_RATE_LIMIT__AUTH_FAILURES", "ten", id="auth-failures"),
        pytest.param("SECMW_RATE_LIMIT__HEADERS", "draft", id="headers"),
        pytest.param("SECMW_RATE_LIMIT__ON_STORAGE_ERROR", "retry", id="storage-error"),
        pytest.param("SECMW_RATE_LIMIT__KEY", "cookie", id="key"),
        pytest.param("SECMW_RATE_LIMIT__RULES", '[{"path": "/a", "limit": "x"}]', id="rule-limit"),
        pytest.param("SECMW_RATE_LIMIT__RULES", '[{"path": "/a", "cost": 0}]', id="rule-cost"),
        pytest.param(
            "SECMW_RATE_LIMIT__OVERRIDES", '[{"limit": "1/second"}]', id="override-without-selector"
        ),
        pytest.param("SECMW_RATE_LIMIT__IPV6_PREFIX", "200", id="ipv6-prefix"),
    ],
)
def test_bad_values_fail_at_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """An unparseable limit, an unknown strategy or policy fails when settings load."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        SecuritySettings()


def test_storage_uri_error_never_shows_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsupported scheme is refused without echoing the URI (it may hold a password)."""
    monkeypatch.setenv("SECMW_RATE_LIMIT__STORAGE_URI", "mongodb://u:hunter2@db/0")
    with pytest.raises(ConfigurationError, match="SECMW_RATE_LIMIT__STORAGE_URI") as caught:
        SecuritySettings()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(RateLimitSettings(storage_uri="redis://:hunter2@h:6379/0"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"rules": [{"path": "/a", "cost": 5}], "default": "3/minute"}, "costs 5", id="cost"
        ),
        pytest.param(
            {
                "rules": [
                    {"path": "/a", "limit": "1/second"},
                    {"path": "/b", "limit": "1/second", "name": "/a"},
                ]
            },
            "two rules",
            id="duplicate-name",
        ),
        pytest.param({"rules": [{"path": "/a"}], "default": ""}, "no limit", id="no-limit"),
        pytest.param(
            {
                "rules": [
                    {"path": "/a", "bucket": "x", "limit": "1/second"},
                    {"path": "/b", "bucket": "x", "limit": "2/second"},
                ]
            },
            "bucket",
            id="bucket-mismatch",
        ),
        pytest.param({"rules": [{"path": "/a", "bucket": "x"}]}, "bucket", id="bucket-no-limit"),
        pytest.param({"rules": [{"path": "a*b", "limit": "1/second"}]}, "RULES", id="bad-pattern"),
        pytest.param({"exempt": {"networks": ["10.0.0.1/8"]}}, "EXEMPT__NETWORKS", id="network"),
    ],
)
def test_inconsistent_rules_fail_at_construction(values: dict[str, Any], message: str) -> None:
    """Rules that could never work are refused when the policy is compiled."""
    with pytest.raises(ConfigurationError, match=message):
        policy(**values)


# -- plans and keys ----------------------------------------------------------------------------


def test_default_limits_key_on_the_client_address() -> None:
    """Anonymous requests are keyed by address, namespaced as the default policy."""
    hits = plan_of(policy(), request()).hits
    assert [h.policy for h in hits] == ["default"]
    assert hits[0].key == "secmw:{ip:203.0.113.7}:d:100/1minute:mw"
    assert hits[0].tag == "ip:203.0.113.7"


def test_authenticated_principal_is_the_default_key() -> None:
    """An authenticated principal is keyed by id, wherever it connects from."""
    user = Principal.create("alice", "bearer")
    a = plan_of(policy(), request(principal=user, client="198.51.100.1")).hits[0]
    b = plan_of(policy(), request(principal=user, client="198.51.100.2")).hits[0]
    assert a.key == b.key
    assert a.tag == "p:alice"


@pytest.mark.parametrize(
    "path",
    ["/items/1", "/items/2", "/Items/3", "//items/4/", "/items/./5", "/x/../items/6"],
)
def test_a_rule_keys_on_its_pattern_not_the_url(path: str) -> None:
    """Every concrete URL (any case, slashes, dot segments) shares the pattern's budget."""
    pol = policy(rules=[{"path": "/items/{id}", "limit": "5/minute", "include_default": False}])
    key = plan_of(pol, request(path)).hits[0].key
    assert key == plan_of(pol, request("/items/1")).hits[0].key
    # The pattern's braces are hashed away: only the identity is a Redis Cluster hash tag.
    assert key.startswith("secmw:{ip:203.0.113.7}:r:h:")
    assert key.count("{") == 1


def test_per_path_rules_split_by_normalized_path() -> None:
    """``per_path`` gives each concrete path its own budget; case and trailing slash do not."""
    pol = policy(
        rules=[{"path": "/f/*", "limit": "5/minute", "per_path": True, "include_default": 0}]
    )
    keys = {plan_of(pol, request(p)).hits[0].key for p in ("/f/a", "/F/A/", "/f//a")}
    assert len(keys) == 1
    assert plan_of(pol, request("/f/b")).hits[0].key not in keys


def test_hostile_paths_keep_keys_bounded() -> None:
    """A huge or odd path cannot blow up storage: key parts are hashed past a bound."""
    pol = policy(rules=[{"path": "/f/*", "limit": "5/minute", "per_path": True}])
    hits = plan_of(pol, request("/f/" + "\u00e9%00{}" * 5000)).hits
    assert all(len(h.key) < 200 for h in hits)
    assert all("{}" not in h.key for h in hits)


def test_rules_never_share_counters_by_accident() -> None:
    """Two rules for one client use different namespaces; a shared bucket uses one."""
    pol = policy(
        rules=[
            {"path": "/a", "limit": "5/minute"},
            {"path": "/b", "limit": "5/minute"},
            {"path": "/c", "bucket": "search", "limit": "9/minute"},
            {"path": "/d", "bucket": "search"},
        ]
    )
    own = [plan_of(pol, request(p)).hits[-1].key for p in ("/a", "/b")]
    shared = [plan_of(pol, request(p)).hits[-1] for p in ("/c", "/d")]
    assert own[0] != own[1]
    assert shared[0].key == shared[1].key
    assert shared[0].policy == "search"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        pytest.param("POST", ["default", "login"], id="post"),
        pytest.param("GET", ["default", "GET /login"], id="get"),
        pytest.param("HEAD", ["default", "GET /login"], id="head-follows-get"),
        pytest.param("DELETE", ["default"], id="other"),
        pytest.param("PROPFIND", ["default"], id="unknown-method"),
    ],
)
def test_rules_match_by_method(method: str, expected: list[str]) -> None:
    """The first rule for the method wins; HEAD is limited like GET."""
    pol = policy(
        rules=[
            {"name": "login", "path": "/login", "methods": ["POST"], "limit": "5/minute"},
            {"path": "/login", "methods": ["GET"], "limit": "50/minute"},
        ]
    )
    assert [h.policy for h in plan_of(pol, request("/login", method)).hits] == expected


def test_cost_is_charged_to_every_limit_and_rules_without_limits_draw_on_default() -> None:
    """``cost`` applies to the rule's limits and the default; a rule may only set a cost."""
    pol = policy(
        rules=[
            {"path": "/upload", "methods": ["POST"], "cost": 5},
            {"path": "/bulk", "limit": "50/minute", "cost": 10, "include_default": False},
        ]
    )
    upload = plan_of(pol, request("/upload", "POST")).hits
    bulk = plan_of(pol, request("/bulk")).hits
    assert [(h.policy, h.cost) for h in upload] == [("default", 5)]
    assert [(h.policy, h.cost) for h in bulk] == [("/bulk", 10)]


@pytest.mark.parametrize(
    ("principal", "amount"),
    [
        pytest.param(None, 10, id="anonymous"),
        pytest.param(Principal.create("u", "bearer"), 10, id="plain"),
        pytest.param(Principal.create("u", "bearer", scopes=["tier:premium"]), 1000, id="scope"),
        pytest.param(Principal.create("u", "bearer", roles=["partner"]), 500, id="role"),
        pytest.param(
            Principal.create("u", "bearer", scopes=["tier:premium"], roles=["partner"]),
            1000,
            id="first-wins",
        ),
    ],
)
def test_overrides_by_scope_or_role(principal: Principal | None, amount: int) -> None:
    """Principals holding a scope or role get the override's limit, the first match winning."""
    pol = policy(
        default="10/minute",
        overrides=[
            {"scope": "tier:premium", "limit": "1000/minute"},
            {"role": "partner", "limit": "500/minute"},
        ],
    )
    assert plan_of(pol, request(principal=principal)).hits[0].amount == amount


@pytest.mark.parametrize(
    ("view", "exempt"),
    [
        pytest.param(request("/health"), True, id="path"),
        pytest.param(request("/HEALTH/"), True, id="path-case"),
        pytest.param(request(client="10.1.2.3"), True, id="network"),
        pytest.param(request(client="::ffff:10.1.2.3"), True, id="mapped-network"),
        pytest.param(
            request(principal=Principal.create("m", "bearer", scopes=["ops"])), True, id="scope"
        ),
        pytest.param(request("/healthz"), False, id="other-path"),
        pytest.param(request(client="11.0.0.1"), False, id="other-network"),
    ],
)
def test_exemptions(view: RequestView, exempt: bool) -> None:
    """Exempt paths, networks and scopes are not limited at all."""
    pol = policy(exempt={"paths": ["/health"], "networks": ["10.0.0.0/8"], "scopes": ["ops"]})
    assert (pol.plan(view) is None) is exempt


def test_ipv6_clients_are_keyed_by_prefix() -> None:
    """Addresses in one /64 share a budget; the next /64 does not; the prefix is configurable."""
    pol = policy()
    a = plan_of(pol, request(client="2001:db8:1:2::1")).hits[0].tag
    b = plan_of(pol, request(client="2001:db8:1:2:ffff::9")).hits[0].tag
    c = plan_of(pol, request(client="2001:db8:1:3::1")).hits[0].tag
    assert a == b == "ip:2001:db8:1:2::/64"
    assert c != a
    exact = policy(ipv6_prefix=128)
    assert plan_of(exact, request(client="2001:db8::1")).hits[0].tag == "ip:2001:db8::1"


def test_unknown_clients_never_share_a_bucket() -> None:
    """No address and no principal: refused with 403, never charged to a common bucket."""
    assert policy().plan(request(client=None)) is UNIDENTIFIED
    assert policy(key="principal").plan(request()) is UNIDENTIFIED
    user = Principal.create("bob", "bearer")
    assert isinstance(policy().plan(request(client=None, principal=user)), Plan)


def test_api_keys_are_hashed_and_only_used_when_they_authenticated() -> None:
    """``key=apikey`` stores a SHA-256 of the key, only for a request the key authenticated."""
    pol = policy(key="apikey")
    owner = Principal.create("svc", "apikey")
    with_key = request(principal=owner, headers=[("X-API-Key", "sk_live_secret_value")])
    hit = plan_of(pol, with_key).hits[0]
    assert "sk_live_secret_value" not in hit.key
    assert hit.tag.startswith("k:")
    unauthenticated = request(headers=[("X-API-Key", "random-guess")])
    assert plan_of(pol, unauthenticated).hits[0].tag == "ip:203.0.113.7"


def test_custom_key_function() -> None:
    """A key function replaces the global key; None from it means unidentified."""
    pol = RateLimitPolicy(RateLimitSettings(), key_func=lambda r: r.headers.get("x-tenant"))
    assert plan_of(pol, request(headers=[("X-Tenant", "acme")])).hits[0].tag == "c:acme"
    assert pol.plan(request()) is UNIDENTIFIED


def test_failure_plan_keys_address_user_address_and_hashed_user_name() -> None:
    """The auth-failure budgets belong to the address, to the user name from that address and
    to the user name from anywhere; user names are case-folded and hashed."""
    pol = policy(auth_failures="3/minute")
    hits = plan_of_failure(pol, request(), "Alice")
    assert [h.policy for h in hits] == [
        "auth-failures",
        "auth-failures-user-address",
        "auth-failures-user",
    ]
    assert not any("alice" in h.key.lower() for h in hits)
    elsewhere = plan_of_failure(pol, request(client="198.51.100.9"), "ALICE")
    assert hits[2].key == elsewhere[2].key  # the ceiling is shared by every address
    assert hits[1].key != elsewhere[1].key  # the per-address budgets are not
    assert (hits[2].amount, hits[2].window) == (100, 3600)
    no_one = failure_plan(
        pol, FailureBudgets.for_authentication(pol.settings), request(client=None), None
    )
    assert no_one is None


def plan_of_failure(pol: RateLimitPolicy, view: RequestView, user: str | None) -> list[LimitHit]:
    """The hits of a failure plan."""
    found = failure_plan(pol, FailureBudgets.for_authentication(pol.settings), view, user)
    assert found is not None
    return list(found.hits)


# -- window arithmetic -------------------------------------------------------------------------


def hit(limit: str = "3/minute", cost: int = 1) -> LimitHit:
    """A hit on ``limit``."""
    return LimitHit("p", parse(limit), "k", "t", cost)


@pytest.mark.parametrize(
    ("strategy", "state", "cost", "fits", "after"),
    [
        pytest.param("fixed-window", (0, 0), 1, True, (1, 60000), id="fixed-empty"),
        pytest.param("fixed-window", (2, 5000), 1, True, (3, 5000), id="fixed-last"),
        pytest.param("fixed-window", (2, 5000), 2, False, None, id="fixed-cost"),
        pytest.param("moving-window", (0, 0), 3, True, (3, 0), id="moving-empty"),
        pytest.param("moving-window", (3, 100), 1, False, None, id="moving-full"),
        pytest.param("sliding-window-counter", (0, 0, 0, 0), 1, True, (0, 0, 1, 120000), id="s0"),
        # previous 3 with half a window left weighs 1.5 -> 1; plus 1 current: 2 used.
        pytest.param(
            "sliding-window-counter", (3, 30000, 1, 90000), 1, True, None, id="s-weighted"
        ),
        pytest.param("sliding-window-counter", (3, 50000, 1, 110000), 1, False, None, id="s-full"),
    ],
)
def test_admits_and_charge(
    strategy: Any, state: tuple[int, ...], cost: int, fits: bool, after: tuple[int, ...] | None
) -> None:
    """Each strategy's fit test and the state after a charge."""
    assert admits(strategy, hit(cost=cost), state) is fits
    if after is not None:
        assert charge(strategy, hit(cost=cost), state) == after


@pytest.mark.parametrize(
    ("strategy", "state", "need", "wait"),
    [
        pytest.param("fixed-window", (3, 12345), 1, 12345, id="fixed"),
        pytest.param("fixed-window", (1, 12345), 1, 0, id="fixed-room"),
        pytest.param("moving-window", (3, 45000), 1, 15000, id="moving"),
        # floor(3 * (30000 - t) / 60000) + 1 <= 2 once t > 10000.
        pytest.param("sliding-window-counter", (3, 30000, 1, 90000), 2, 10001, id="sliding-prev"),
        # current 3 must first rotate (30 s), then floor(3 * (60000 - s) / 60000) <= 2: s > 0.
        pytest.param("sliding-window-counter", (0, 0, 3, 90000), 1, 30001, id="sliding-rotate"),
    ],
)
def test_wait_until_units_fit(strategy: Any, state: tuple[int, ...], need: int, wait: int) -> None:
    """Milliseconds until ``need`` units fit, per strategy."""
    assert wait_ms(strategy, hit(), state, need) == wait


def test_window_stats_round_up_and_report_retry_only_when_refused() -> None:
    """Times are whole seconds rounded up; a refused limit reports at least one second."""
    stats = window_stats("fixed-window", hit(), (3, 1001), refused=True)
    assert (stats.remaining, stats.reset, stats.retry_after) == (0, 2, 2)
    assert window_stats("fixed-window", hit(), (1, 1001), refused=False).retry_after == 0


def test_ietf_fields_one_member_per_limit() -> None:
    """draft-ietf-httpapi-ratelimit-headers-11: quoted names, integer parameters, one per limit."""
    pol = policy(default="100/minute;1000/hour", strategy="fixed-window")
    found = plan_of(pol, request())
    states = ((58, 17000), (58, 3000000))
    fields = pol.conclude(found, Outcome(True, states))
    assert fields == [
        ("ratelimit-policy", '"default-60s";q=100;w=60, "default-3600s";q=1000;w=3600'),
        ("ratelimit", '"default-60s";r=42;t=17, "default-3600s";r=942;t=3000'),
    ]
    single = window_stats("fixed-window", hit("100/minute"), (58, 17000), refused=False)
    assert ietf_fields([single]) == [
        ("ratelimit-policy", '"p";q=100;w=60'),
        ("ratelimit", '"p";r=42;t=17'),
    ]


def test_legacy_fields_describe_the_tightest_limit() -> None:
    """The X-RateLimit trio reports the limit with the fewest units left; Reset is Unix time."""
    loose = window_stats("fixed-window", hit("100/minute"), (10, 5000), refused=False)
    tight = window_stats("fixed-window", hit("5/second"), (4, 400), refused=False)
    assert legacy_fields([loose, tight], now=1000.2) == [
        ("x-ratelimit-limit", "5"),
        ("x-ratelimit-remaining", "1"),
        ("x-ratelimit-reset", "1002"),
    ]


@pytest.mark.parametrize(
    ("style", "names"),
    [
        pytest.param("ietf", ["ratelimit-policy", "ratelimit"], id="ietf"),
        pytest.param("legacy", ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]),
        pytest.param("both", ["ratelimit-policy", "ratelimit", "x-ratelimit-limit"], id="both"),
        pytest.param("none", [], id="none"),
    ],
)
def test_header_styles(style: Any, names: list[str]) -> None:
    """``SECMW_RATE_LIMIT__HEADERS`` picks the IETF fields, the legacy trio, both or none."""
    stats = [window_stats("fixed-window", hit(), (1, 1000), refused=False)]
    produced = [name for name, _ in rate_limit_fields(style, stats, 0.0)]
    assert produced[: len(names)] == names
    assert style != "none" or produced == []


def test_conclude_refusal_is_429_with_retry_after_and_fields() -> None:
    """A refused request gets 429 problem details, Retry-After and the fields."""
    settings = RateLimitSettings(default="3/minute", strategy="fixed-window")
    pol = RateLimitPolicy(settings, clock=lambda: 0.0)
    found = plan_of(pol, request())
    deny = pol.conclude(found, Outcome(False, ((3, 20500),)))
    assert not isinstance(deny, list)
    assert deny.status == 429
    assert deny.code == "rate_limited"
    assert deny.headers[0] == ("retry-after", "21")
    assert ("ratelimit", '"default";r=0;t=21') in deny.headers
