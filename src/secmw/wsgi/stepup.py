"""``StepUpMiddleware`` for WSGI apps: a TOTP code on the requests that need a second factor."""

from __future__ import annotations

from collections.abc import Callable

from secmw.auth.throttle import FailedAuthThrottle
from secmw.core.principal import Principal
from secmw.middleware import StepUpLayer
from secmw.wsgi.driver import Driver

SecretLookup = Callable[[Principal], "str | None"]


class StepUpMiddleware(Driver, StepUpLayer):
    """Requires ``X-TOTP-Code`` where ``totp.paths`` / ``totp.scopes`` say so.

    Wrap it inside ``AuthenticationMiddleware``; same arguments and answers as the ASGI twin
    (``secret_for`` is synchronous here).
    """

    def close(self) -> None:
        """Close the Redis client of the throttle this middleware built, if any."""
        if self._own_throttle and isinstance(self.throttle, FailedAuthThrottle):
            self.throttle.close()
