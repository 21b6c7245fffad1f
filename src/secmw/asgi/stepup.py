"""``StepUpMiddleware`` for ASGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from secmw.asgi.driver import Driver
from secmw.auth.throttle import AsyncFailedAuthThrottle
from secmw.core.principal import Principal
from secmw.middleware import StepUpLayer

SecretLookup = Callable[[Principal], "str | Awaitable[str | None] | None"]


class StepUpMiddleware(Driver, StepUpLayer):
    """Requires ``X-TOTP-Code`` where ``totp.paths`` / ``totp.scopes`` say so.

    Install it inside ``AuthenticationMiddleware`` (it reads the principal that layer
    published). Answers: 401 ``totp_required`` when the code is missing, 401 ``invalid_totp``
    when it is wrong or already used, 429 once the principal or the address has no attempts left,
    403 ``totp_not_enrolled`` when the principal has no secret, 503 (with ``Retry-After``) when
    the secret lookup or the replay store fails, and 401 when nobody is authenticated.

    Args:
        app: The ASGI app to protect.
        secret_for: The principal's base32 TOTP secret, or None when not enrolled (may be async).
        settings: Settings to build from; default: the environment.
        step_up: A ready policy (overrides ``settings``).
        replay: Replay store (default: memory, or Redis with ``totp.redis_url``).
        throttle: Throttle of wrong codes; default: ``totp.failures`` per principal and
            per address, on the rate-limit storage (none only with ``totp.throttle=false``).
        **overrides: Settings sections, for example ``totp={"paths": ["/admin/**"]}``.
    """

    async def aclose(self) -> None:
        """Close the Redis client of the throttle this middleware built, if any."""
        if self._own_throttle and isinstance(self.throttle, AsyncFailedAuthThrottle):
            await self.throttle.aclose()
