"""Reading the route table once, when the stack starts: the decorated routes' settings, and a
warning for decorated views the stack cannot see (their policy is not enforced)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from secmw.route.compile import apply_routes
from secmw.route.marks import marked_views
from secmw.route.table import read_routes

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings

logger = logging.getLogger("secmw.route")


def routed_settings(settings: SecuritySettings, app: Any) -> SecuritySettings | None:
    """``settings`` with the rules of the decorated routes under ``app``; None when there are
    none (the stack keeps what it built).

    Raises:
        ConfigurationError: see :func:`secmw.route.compile.apply_routes`.
    """
    table = read_routes(app)
    seen = {id(entry.view) for entry in table.routes if entry.marks is not None}
    unseen = [view for view in marked_views() if id(view) not in seen]
    if unseen and (table.opaque or not table.found):
        where = ", ".join(table.opaque) if table.found else "no route table under the stack"
        names = ", ".join(
            sorted(
                f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', v)}" for v in unseen
            )
        )
        logger.warning(
            "route policy NOT enforced for %s: secmw cannot read their routes (%s); put the"
            " policy in the settings or a stack around that sub-app",
            names,
            where,
        )
    merged = apply_routes(settings, table)
    return None if merged is settings else merged
