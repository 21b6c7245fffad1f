"""The environment variable names of settings: ``SECMW_`` and the setting's path.

Features name a setting by its path (``rate_limit.auth_failures``); this is the one place that
turns a path into the variable a user sets (``SECMW_RATE_LIMIT__AUTH_FAILURES``).
"""

from __future__ import annotations

ENV_PREFIX = "SECMW_"


def variable_name(*loc: object) -> str:
    """The environment variable for a settings location: ``("jwt", "secret")`` ->
    ``SECMW_JWT__SECRET``."""
    parts = [str(part).upper() for part in loc if not isinstance(part, int)]
    return ENV_PREFIX + "__".join(parts)
