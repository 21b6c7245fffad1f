"""Which layers a ``SecurityStack`` runs, and in what order: decided once for both sides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings

Layer = Literal["rate_limit", "step_up", "auth", "ip", "headers", "metrics"]

ORDER: tuple[Layer, ...] = ("rate_limit", "step_up", "auth", "ip", "headers", "metrics")
"""Innermost first: rate limiting sees the principal, authentication sees the resolved client,
headers wrap every answer of the layers inside, metrics time all of it."""


def stack_layers(settings: SecuritySettings, *, step_up: bool) -> tuple[Layer, ...]:
    """The enabled layers, innermost first (``step_up``: a TOTP secret lookup was given)."""
    enabled = {
        "rate_limit": settings.rate_limit.enabled,
        "step_up": step_up,
        "auth": settings.auth.enabled,
        "ip": settings.ip.enabled,
        "headers": settings.headers.enabled,
        "metrics": settings.metrics.enabled,
    }
    return tuple(layer for layer in ORDER if enabled[layer])
