"""Authorization helpers: roles, permissions with wildcards, ownership."""

from __future__ import annotations

from secmw._config import Section


class AuthzSettings(Section):
    """Settings of this layer (``SECMW_AUTHZ__*``)."""
