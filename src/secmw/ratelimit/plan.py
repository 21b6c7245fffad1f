"""What one request is charged against, and the refusals the rate-limit layer answers."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from secmw import audit
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.ratelimit.windows import (
    LimitHit,
    policy_field,
)

UNIDENTIFIED = Deny(
    403, "The client cannot be identified for rate limiting.", "client_unidentified"
)


def announce_refusal(request: RequestView, plan: Plan, refusal: Deny) -> None:
    """Audit a request a limit refused (429, ``ratelimit.exceeded``) or the storage could not
    decide (503, ``ratelimit.unavailable``); the adapters call it with what they answer."""
    audit.emit(
        "ratelimit.exceeded" if refusal.status == 429 else "ratelimit.unavailable",
        refusal.detail,
        request=request,
        rule=plan.rule,
        denial=refusal,
        level=logging.INFO,
    )


def storage_unavailable(retry_after: float) -> Deny:
    """503 while the storage is down under ``on_storage_error=deny`` (fail closed, RFC 9110
    §15.6.4)."""
    seconds = str(max(1, math.ceil(retry_after)))
    return Deny(
        503, "Rate limiting is unavailable.", "rate_limit_unavailable", (("retry-after", seconds),)
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """The limits one request is charged against, in a fixed order."""

    hits: tuple[LimitHit, ...]
    rule: str
    policy_field: str = field(init=False, repr=False, compare=False)
    """The ``RateLimit-Policy`` value (plans are reused, so it is rendered once)."""
    raw_policy_field: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = policy_field(self.hits)
        object.__setattr__(self, "policy_field", value)
        object.__setattr__(self, "raw_policy_field", value.encode("latin-1"))
