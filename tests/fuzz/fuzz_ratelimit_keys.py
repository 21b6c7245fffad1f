"""Fuzz rate-limit key building: any client, principal, path and API key give a bounded key.

Properties: a plan is None, a 403 (client unidentifiable) or limits whose keys are at most 200
characters and never contain the presented API key.

    python tests/fuzz/fuzz_ratelimit_keys.py -runs=100000 -seed=1
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(
    include=[
        "secmw.ratelimit.policy",
        "secmw.ratelimit.plan",
        "secmw.ratelimit.settings",
        "secmw.auth.throttle",
    ]
):
    import _common

    from secmw.auth.throttle import FailureBudgets, failure_plan
    from secmw.core.deny import Deny
    from secmw.core.fields import Headers
    from secmw.core.principal import Principal
    from secmw.core.request import RequestView
    from secmw.ratelimit.policy import RateLimitPolicy
    from secmw.ratelimit.settings import RateLimitSettings

RULES = [
    {"path": "/items/{id}", "limit": "5/minute", "per_path": True},
    {"path": "/login", "methods": ["POST"], "limit": "3/minute", "key": "ip"},
]
POLICIES = [
    RateLimitPolicy(RateLimitSettings(key=kind, rules=RULES))
    for kind in ("principal-or-ip", "ip", "apikey", "principal")
]
BUDGETS = FailureBudgets.for_authentication(RateLimitSettings())
CLIENTS = ("203.0.113.5", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "", "unix:/run/x")


def test_one_input(data: bytes) -> None:
    """Keys stay bounded and credential-free."""
    fdp = atheris.FuzzedDataProvider(data)
    policy = POLICIES[fdp.ConsumeIntInRange(0, len(POLICIES) - 1)]
    if fdp.ConsumeBool():
        client: str | None = CLIENTS[fdp.ConsumeIntInRange(0, len(CLIENTS) - 1)]
    else:
        client = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200)) or None
    key = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 100)).decode("latin-1") + _common.CANARY
    method = ("GET", "POST", "HEAD", "BREW")[fdp.ConsumeIntInRange(0, 3)]
    path = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 400))
    view = RequestView(method, path, headers=Headers([("x-api-key", key)]), peer=client)
    if fdp.ConsumeBool():
        scheme = "apikey" if fdp.ConsumeBool() else "bearer"
        view.state["principal"] = Principal(fdp.ConsumeUnicodeNoSurrogates(300), scheme)
    plan = policy.plan(view)
    if isinstance(plan, Deny):
        _common.check_decision(plan)
        return
    hits = list(plan.hits) if plan is not None else []
    username = fdp.ConsumeUnicodeNoSurrogates(100) or None
    failures = failure_plan(policy, BUDGETS, view, username)
    hits += failures.hits if failures is not None else ()
    for hit in hits:
        if len(hit.key) > 200 or _common.CANARY in hit.key:
            raise AssertionError(f"unbounded or revealing key: {hit.key!r}")


if __name__ == "__main__":
    _common.fuzz(test_one_input)
