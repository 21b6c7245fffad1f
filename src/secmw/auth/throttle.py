"""Failed-attempt throttling: an attempt is charged before it is checked, refunded unless it fails.

A guess costs the attacker nothing until its check ends, so a throttle that is only told of
failures afterwards lets every guess already in flight through (sixty concurrent wrong codes,
sixty checks). Here each attempt first takes one unit from its budgets, atomically with the test
that they have room (one storage call: ``ratelimit.lua`` on Redis, one lock in memory); the check
runs only when it got one, and the unit is given back (:meth:`Attempt.refund`) when the attempt
did not fail. However many requests run at once, no more attempts are checked than the budgets
hold, and only failures stay counted.

Budgets (:class:`FailureBudgets`), for the authentication layer and the token endpoint
(``rate_limit.*``):

- ``auth_failures`` (``10/minute``): per client address (IPv6 by prefix), every user name
  together: one address guessing many accounts.
- ``auth_failures_per_user_address`` (``10/minute``): per user name from one address, so that
  an address shared by many people (NAT) can be given a larger ``auth_failures`` while each
  account's guessing from it stays slow.
- ``auth_failures_per_user`` (``100/hour``): per user name, all addresses together: a ceiling
  against guessing one account from many addresses. Reaching it refuses the user name to
  everyone, its owner included, until the window frees; it is set high so that strangers'
  failures at the per-address rate cannot lock an owner out, and only many addresses guessing
  together reach it.

User names are case-folded and hashed; a client whose address is unknown is budgeted by user
name alone, never in a bucket shared with other such clients. Step-up codes have budgets of their
own (:meth:`FailedAuthThrottle.for_step_up`). Storage, strategy and failure policy are the
rate-limit layer's (``rate_limit.*``).

    throttle = AsyncFailedAuthThrottle()
    app = AuthenticationMiddleware(app, throttle=throttle)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from secmw.auth.base import Credential
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.core.section import settings_or_environment
from secmw.ratelimit.astorage import AsyncLimiter
from secmw.ratelimit.plan import Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import Limit, RateLimitSettings, compile_limits, digest, var
from secmw.ratelimit.storage import Limiter
from secmw.ratelimit.windows import LimitHit, Outcome

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings

_DETAIL = "Too many failed authentication attempts."
_CODE = "too_many_failures"


@dataclass(frozen=True, slots=True)
class FailureBudgets:
    """The budgets one attempt is charged to; an empty tuple is no budget of that kind.

    Attributes:
        namespace: Part of every key: budgets of different kinds never share a counter.
        per_address: Per client address, whatever the user name.
        per_user_address: Per user name from one client address.
        per_user: Per user name, all addresses together.
    """

    namespace: str
    per_address: tuple[Limit, ...]
    per_user_address: tuple[Limit, ...]
    per_user: tuple[Limit, ...]

    @classmethod
    def for_authentication(cls, settings: RateLimitSettings) -> FailureBudgets:
        """The budgets of passwords and other credentials (``rate_limit.auth_failures*``)."""

        def limits(name: str, setting: str) -> tuple[Limit, ...]:
            return compile_limits(getattr(settings, setting), (), name, var(setting)).base

        return cls(
            "auth",
            limits("auth-failures", "auth_failures"),
            limits("auth-failures-user-address", "auth_failures_per_user_address"),
            limits("auth-failures-user", "auth_failures_per_user"),
        )

    @classmethod
    def for_step_up(cls, limit: str, setting: str) -> FailureBudgets:
        """Step-up codes: ``limit`` per client address and per principal. The principal is
        already authenticated, so only the holder of its first factor can spend its budget."""
        per_address = compile_limits(limit, (), "totp-failures", setting).base
        per_user = compile_limits(limit, (), "totp-failures-principal", setting).base
        return cls("totp", per_address, (), per_user)


def failure_plan(
    policy: RateLimitPolicy, budgets: FailureBudgets, request: RequestView, username: str | None
) -> Plan | None:
    """The budgets an attempt from ``request`` for ``username`` is charged to; None when neither
    the address nor a user name is known."""
    address = policy.address_identity(request)
    user = "u:" + digest(username.casefold()) if username else None
    parts: list[tuple[str, tuple[Limit, ...]]] = []
    if address is not None:
        parts.append((address, budgets.per_address))
    if user is not None:
        # An unknown address is one more "address" of this user name only.
        parts.append(("ua:" + digest(f"{user}\n{address or ''}"), budgets.per_user_address))
        parts.append((user, budgets.per_user))
    hits = tuple(
        LimitHit(
            limit.policy,
            limit.item,
            policy.storage_key(tag, budgets.namespace, limit.slug),
            tag,
            1,
        )
        for tag, limits in parts
        for limit in limits
    )
    return Plan(hits, f"{budgets.namespace}-failures") if hits else None


def _verdict(policy: RateLimitPolicy, plan: Plan, result: Outcome | Deny | None) -> Deny | bool:
    """The refusal, else whether a unit was taken (not while the storage is down under
    ``on_storage_error=allow``)."""
    if result is None:
        return False
    if isinstance(result, Deny):
        return result  # 503 under on_storage_error=deny: closed
    if result.admitted:
        return True
    refused = policy.conclude(plan, result, detail=_DETAIL, code=_CODE)
    return refused if isinstance(refused, Deny) else False


class Attempt:
    """An attempt :meth:`FailedAuthThrottle.charge` let through: check it, then call
    :meth:`refund` unless it failed. A failed attempt needs nothing more: it stays counted."""

    __slots__ = ("_hits", "_limiter")

    def __init__(self, limiter: Limiter | None, hits: tuple[LimitHit, ...] = ()) -> None:
        self._limiter = limiter
        self._hits = hits

    def refund(self) -> None:
        """Give the attempt's units back (it succeeded, or could not be checked); once only."""
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.refund(self._hits)


class AsyncAttempt:
    """The async twin of :class:`Attempt`."""

    __slots__ = ("_hits", "_limiter")

    def __init__(self, limiter: AsyncLimiter | None, hits: tuple[LimitHit, ...] = ()) -> None:
        self._limiter = limiter
        self._hits = hits

    async def refund(self) -> None:
        """Give the attempt's units back (it succeeded, or could not be checked); once only."""
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            await limiter.refund(self._hits)


_Throttle = TypeVar("_Throttle", bound="_Budgeted")


class _Budgeted:
    """What the sync and async throttles share: the policy (keys, 429s), the budgets, and how
    they are built; each twin names its storage edge (``limiter_type``)."""

    limiter_type: Callable[[RateLimitSettings], Any]

    def __init__(
        self,
        *,
        settings: SecuritySettings | None = None,
        budgets: FailureBudgets | None = None,
        **overrides: Any,
    ) -> None:
        limits = settings_or_environment(settings, overrides).rate_limit
        self.settings = limits
        self.policy = RateLimitPolicy(limits)
        self.budgets = budgets or FailureBudgets.for_authentication(limits)
        self.limiter = self.limiter_type(limits)

    @classmethod
    def for_step_up(cls: type[_Throttle], settings: SecuritySettings) -> _Throttle:
        """The throttle of wrong step-up codes (``totp.failures``)."""
        limit = settings.totp.failures
        return cls(settings=settings, budgets=FailureBudgets.for_step_up(limit, _TOTP_FAILURES))

    def plan(self, request: RequestView, credential: Credential) -> Plan | None:
        """The budgets this attempt is charged to (None: nothing to key them on)."""
        return failure_plan(self.policy, self.budgets, request, credential.username)


class FailedAuthThrottle(_Budgeted):
    """The sync :class:`~secmw.auth.base.FailureThrottle`, for ``secmw.wsgi``.

    Args:
        settings: Settings to build from; default: the environment.
        budgets: The budgets to charge; default: ``rate_limit.auth_failures*``.
        **overrides: Settings sections, for example ``rate_limit={"auth_failures": "5/minute"}``.
    """

    limiter_type = Limiter
    limiter: Limiter

    def charge(self, request: RequestView, credential: Credential) -> Deny | Attempt:
        """Take one attempt from the budgets before the check: a 429 (with ``Retry-After``)
        when one has none left, else the :class:`Attempt` to refund unless it fails."""
        plan = self.plan(request, credential)
        if plan is None:
            return Attempt(None)
        verdict = _verdict(self.policy, plan, self.limiter.apply(plan.hits))
        if isinstance(verdict, Deny):
            return verdict
        return Attempt(self.limiter if verdict else None, plan.hits)

    def close(self) -> None:
        """Close the Redis client, if any."""
        self.limiter.close()


class AsyncFailedAuthThrottle(_Budgeted):
    """The async :class:`~secmw.auth.base.AsyncFailureThrottle`, for ``secmw.asgi``; same
    arguments as :class:`FailedAuthThrottle`."""

    limiter_type = AsyncLimiter
    limiter: AsyncLimiter

    async def charge(self, request: RequestView, credential: Credential) -> Deny | AsyncAttempt:
        """Async twin of :meth:`FailedAuthThrottle.charge`."""
        plan = self.plan(request, credential)
        if plan is None:
            return AsyncAttempt(None)
        verdict = _verdict(self.policy, plan, await self.limiter.apply(plan.hits))
        if isinstance(verdict, Deny):
            return verdict
        return AsyncAttempt(self.limiter if verdict else None, plan.hits)

    async def aclose(self) -> None:
        """Close the Redis client, if any."""
        await self.limiter.aclose()


_TOTP_FAILURES = "totp.failures"
