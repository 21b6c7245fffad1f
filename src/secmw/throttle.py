"""Failed-authentication throttling: 429 before any password hash or signature is computed.

The authentication layer reports each failed attempt (``failed``) and asks before verifying the
next one (``blocked``). Budgets (``SECMW_RATE_LIMIT__AUTH_FAILURES``, default ``10/minute``)
belong to the client address (IPv6 by prefix) and, when the credential names one (HTTP Basic, a
login form), to the user name, hashed and case-folded: guessing one account's password from
many addresses is throttled as well as one address guessing many accounts. A client whose address
is unknown is throttled by user name only, never in a bucket shared with other such clients.

Storage, strategy and failure policy are the rate-limit layer's (``SECMW_RATE_LIMIT__*``).

    throttle = AsyncFailedAuthThrottle()
    app = AuthenticationMiddleware(app, throttle=throttle)
"""

from __future__ import annotations

from typing import Any

from secmw._astorage import AsyncLimiter
from secmw._ratewindow import Outcome
from secmw._storage import Limiter
from secmw.auth.base import Credential
from secmw.problems import Deny
from secmw.ratelimit import Plan, RateLimitPolicy
from secmw.request import RequestView
from secmw.settings import SecuritySettings, resolve_settings

_DETAIL = "Too many failed authentication attempts."
_CODE = "too_many_failures"


def _verdict(policy: RateLimitPolicy, plan: Plan, result: Outcome | Deny | None) -> Deny | None:
    if result is None or isinstance(result, Deny):
        return result  # allow while the storage is down, or 503 under on_storage_error=deny
    if result.admitted:
        return None
    refused = policy.conclude(plan, result, detail=_DETAIL, code=_CODE)
    return refused if isinstance(refused, Deny) else None


class FailedAuthThrottle:
    """The sync :class:`~secmw.auth.base.FailureThrottle`, for ``secmw.wsgi``.

    Args:
        settings: Settings to build from; default: the environment.
        **overrides: Settings sections, for example ``rate_limit={"auth_failures": "5/minute"}``.
    """

    def __init__(self, *, settings: SecuritySettings | None = None, **overrides: Any) -> None:
        limits = resolve_settings(settings, overrides).rate_limit
        self.policy = RateLimitPolicy(limits)
        self.limiter = Limiter(limits)

    def blocked(self, request: RequestView, credential: Credential) -> Deny | None:
        """429 with ``Retry-After`` once this address or user name has no failures left."""
        plan = self.policy.failure_plan(request, credential.username)
        if plan is None:
            return None
        return _verdict(self.policy, plan, self.limiter.apply(plan.hits, charging=False))

    def failed(self, request: RequestView, credential: Credential) -> None:
        """Count one failed attempt against the address and the user name."""
        plan = self.policy.failure_plan(request, credential.username)
        if plan is not None:
            self.limiter.apply(plan.hits)

    def close(self) -> None:
        """Close the Redis client, if any."""
        self.limiter.close()


class AsyncFailedAuthThrottle:
    """The async :class:`~secmw.auth.base.AsyncFailureThrottle`, for ``secmw.asgi``; same
    arguments as :class:`FailedAuthThrottle`."""

    def __init__(self, *, settings: SecuritySettings | None = None, **overrides: Any) -> None:
        limits = resolve_settings(settings, overrides).rate_limit
        self.policy = RateLimitPolicy(limits)
        self.limiter = AsyncLimiter(limits)

    async def blocked(self, request: RequestView, credential: Credential) -> Deny | None:
        """429 with ``Retry-After`` once this address or user name has no failures left."""
        plan = self.policy.failure_plan(request, credential.username)
        if plan is None:
            return None
        return _verdict(self.policy, plan, await self.limiter.apply(plan.hits, charging=False))

    async def failed(self, request: RequestView, credential: Credential) -> None:
        """Count one failed attempt against the address and the user name."""
        plan = self.policy.failure_plan(request, credential.username)
        if plan is not None:
            await self.limiter.apply(plan.hits)

    async def aclose(self) -> None:
        """Close the Redis client, if any."""
        await self.limiter.aclose()
