"""TOTP step-up (second factor)."""

from __future__ import annotations

from secmw._config import Section


class TOTPSettings(Section):
    """Settings of this layer (``SECMW_TOTP__*``)."""
