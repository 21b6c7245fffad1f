"""The rate-limit layer's gate: plan the request's limits, charge them, judge the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secmw import audit
from secmw.core.deny import Deny
from secmw.core.gate import PASS, Headers, Need, Plain, Raised, Verdict
from secmw.core.request import RequestView
from secmw.ratelimit.leasing import use_leases
from secmw.ratelimit.plan import Plan, announce_refusal
from secmw.ratelimit.policy import KeyFunc, RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.windows import Outcome

FIELDS = "secmw.ratelimit_fields"
"""``view.state`` key of the rate-limit fields the response start gets."""


class RateLimitGate(Plain):
    """429 (``Retry-After``) over a limit, 503 when the storage is down under
    ``on_storage_error=deny``, 403 for a client it cannot identify; else the rate-limit fields
    go on the response.

    Args:
        policy: Which limits a request is charged against.
        limiter: The storage edge of the side: ``Limiter`` (WSGI) or ``AsyncLimiter`` (ASGI),
            whose ``apply(hits)`` the driver calls or awaits. A memory storage is charged here,
            with no I/O to wait on.
        raw: Fields as ASGI byte pairs, else WSGI strings.
    """

    __slots__ = ("_memory", "limiter", "policy", "raw")

    def __init__(self, policy: RateLimitPolicy, limiter: Any, *, raw: bool) -> None:
        self.policy = policy
        self.limiter = limiter
        self.raw = raw
        self._memory = limiter.memory if limiter.remote is None else None

    def check(self, view: RequestView) -> Verdict:
        plan = self.policy.plan(view)
        if plan is None:
            return PASS
        if isinstance(plan, Deny):
            audit.emit("ratelimit.unidentified", plan.detail, request=view, denial=plan)
            return plan
        memory = self._memory
        if memory is not None:
            return self._judge(view, plan, memory.apply(plan.hits))
        need = Need(self.limiter.apply, (plan.hits,))
        need.flow = (view, plan)
        return need

    def resume(self, need: Need, answer: Any) -> Verdict:
        if answer.__class__ is Raised:
            raise answer.error  # the limiter answers storage failures itself
        view, plan = need.flow
        return self._judge(view, plan, answer)

    def _judge(self, view: RequestView, plan: Plan, result: Outcome | Deny | None) -> Verdict:
        if result is None:  # storage down, on_storage_error=allow
            return PASS
        if isinstance(result, Deny):
            verdict: Deny | list[Any] = result
        elif self.raw:
            verdict = self.policy.conclude_raw(plan, result)
        else:
            verdict = self.policy.conclude(plan, result)
        if isinstance(verdict, Deny):
            announce_refusal(view, plan, verdict)
            return verdict
        if verdict:
            view.state[FIELDS] = verdict
        return PASS

    def fields(self, view: RequestView, status: int, headers: Headers) -> Headers:
        queued = view.state.get(FIELDS)
        return [*headers, *queued] if queued else headers


def rate_limit_gate(
    settings: RateLimitSettings,
    api_keys: Any,
    *,
    key_func: KeyFunc | None,
    limiter: Callable[[RateLimitSettings], Any],
    raw: bool,
) -> RateLimitGate:
    """The gate for the ``rate_limit`` section (``api_keys`` names where keys travel, for
    limits keyed on them), on the side's storage edge (``Limiter`` or ``AsyncLimiter``)."""
    policy = RateLimitPolicy(
        settings,
        key_func=key_func,
        apikey_header=api_keys.header,
        apikey_query=api_keys.query_param,
    )
    return RateLimitGate(policy, use_leases(limiter(settings), settings), raw=raw)
