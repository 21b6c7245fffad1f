"""Exceptions raised by secmw."""

from __future__ import annotations

from collections.abc import Callable

_namers: list[Callable[[str], str]] = []


def name_settings_with(namer: Callable[[str], str]) -> None:
    """Install how configuration errors show the settings they mention.

    Features write a setting as its path (``jwt.secret``); ``secmw.config`` installs, when it is
    imported (importing ``secmw`` always does), the rewrite of each path into the environment
    variable the user sets.
    """
    _namers[:] = [namer]


class ConfigurationError(ValueError):
    """Invalid configuration, raised when a middleware or settings object is built.

    The message names the offending setting by its environment variable (or the keyword argument)
    and never contains a secret value. ``reason`` keeps the message as raised, with settings as
    paths (``jwt.secret``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return _namers[0](self.reason) if _namers else self.reason


class MiddlewareNotInstalled(RuntimeError):
    """Code asked for the request's principal, but no secmw authentication layer ran."""


class StoreUnavailable(RuntimeError):
    """A store (sessions, single-use tokens, refresh grants) could not be reached: Redis down,
    timed out or answering an error. Answer 503 with ``Retry-After`` and act as if nothing was
    stored. The message names the failure's type only, never a key or a value."""
