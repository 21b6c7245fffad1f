"""Server-side sessions from a cookie."""

from __future__ import annotations

from secmw._config import Section


class SessionSettings(Section):
    """Settings of this layer (``SECMW_SESSION__*``)."""
