"""Exceptions raised by secmw."""

from __future__ import annotations


class ConfigurationError(ValueError):
    """Invalid configuration, raised when a middleware or settings object is built.

    The message names the offending ``SECMW_*`` variable (or keyword argument) and never contains a
    secret value.
    """


class MiddlewareNotInstalled(RuntimeError):
    """Code asked for the request's principal, but no secmw authentication layer ran."""


class StoreUnavailable(RuntimeError):
    """A store (sessions, single-use tokens, refresh grants) could not be reached: Redis down,
    timed out or answering an error. Answer 503 with ``Retry-After`` and act as if nothing was
    stored. The message names the failure's type only, never a key or a value."""
