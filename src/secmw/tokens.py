"""Token helpers for apps that issue their own tokens."""

from __future__ import annotations

from secmw._config import Section


class TokenSettings(Section):
    """Settings of this layer (``SECMW_TOKENS__*``)."""
