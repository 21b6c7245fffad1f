"""Route-level policy: decorators that mark a view, compiled into per-path rules at startup.

::

    from secmw import route

    @route.limit("5/minute", key="ip")
    @route.requires("items:read")
    async def read_item(request): ...

See ``docs/routes.md``.
"""

from __future__ import annotations

from secmw.route.marks import (
    Marks,
    exempt,
    headers,
    limit,
    marks_of,
    public,
    requires,
    requires_auth,
)

__all__ = [
    "Marks",
    "exempt",
    "headers",
    "limit",
    "marks_of",
    "public",
    "requires",
    "requires_auth",
]
