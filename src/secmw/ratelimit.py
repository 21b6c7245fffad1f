"""Rate-limit rules, keys and response headers (the limits glue lives at the edge)."""

from __future__ import annotations

from secmw._config import Section


class RateLimitSettings(Section):
    """Settings of this layer (``SECMW_RATE_LIMIT__*``)."""
