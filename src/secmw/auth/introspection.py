"""Opaque-token introspection (RFC 7662)."""

from __future__ import annotations

from secmw._config import Section


class IntrospectionSettings(Section):
    """Settings of this layer (``SECMW_INTROSPECTION__*``)."""
