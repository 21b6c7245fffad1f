"""Security header policy and the CSP builder."""

from __future__ import annotations

from secmw._config import Section


class HeadersSettings(Section):
    """Settings of this layer (``SECMW_HEADERS__*``)."""
