"""Client address resolution behind trusted proxies, and the IP allow/deny policy."""

from __future__ import annotations

from secmw._config import Section


class IPSettings(Section):
    """Settings of this layer (``SECMW_IP__*``)."""
