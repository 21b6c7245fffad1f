"""Credential files re-read when they change (``api_keys.file``, ``basic.users_file``).

A :class:`WatchedFile` holds the last good content of a file. At most once per ``interval``
(one second) a lookup stats the file; when its modification time, size or inode changed it is
read and parsed again. A file that disappears, becomes unreadable or holds invalid content keeps
the last good set in force (a half-written file must never lock everyone out or let anyone in),
and the failure is logged once, without the file's content, until a good version is read.
Nothing raises on the request path: the caller always gets a set.

:func:`reload_on_sighup` (opt-in) makes ``kill -HUP`` re-read every watched file at its next
lookup. It is not installed by default: a process manager may give ``SIGHUP`` a meaning of its
own (gunicorn's master reloads its workers with it), and a library must not take it over.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from secmw.errors import ConfigurationError

T = TypeVar("T")
logger = logging.getLogger("secmw")
_watched: weakref.WeakSet[WatchedFile[Any]] = weakref.WeakSet()
_Signature = tuple[int, int, int]


class WatchedFile(Generic[T]):
    """The parsed content of a file, re-read when the file changes.

    Args:
        path: The file.
        load: Reads and validates it; raises ``ConfigurationError`` (or ``OSError`` /
            ``ValueError``) for content that must not replace the last good one.
        setting: Named in the log line.
        interval: Minimum seconds between two looks at the file.
        clock: Monotonic time, injectable for tests.

    Raises:
        ConfigurationError: the file cannot be read at start (then there is no good set).
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        setting: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.setting = setting
        self._load = load
        self._interval = interval
        self._clock = clock
        self.value: T = load(path)
        try:
            self._signature = _signature(path)
        except OSError as exc:
            raise ConfigurationError(
                f"{setting}: cannot read {path} ({type(exc).__name__})"
            ) from None
        self._checked = clock()
        self._forced = False
        self._failing = False
        self._lock = threading.Lock()
        _watched.add(self)

    def current(self) -> T:
        """The content in force: re-read first when the file changed (checked once per
        ``interval`` at most)."""
        if not self._forced and self._clock() - self._checked < self._interval:
            return self.value
        if not self._lock.acquire(blocking=False):
            return self.value  # another thread is looking at the file right now
        try:
            self._refresh()
        finally:
            self._lock.release()
        return self.value

    def reload(self) -> None:
        """Look at the file at the next lookup, whatever the interval."""
        self._forced = True

    def _refresh(self) -> None:
        self._checked, self._forced = self._clock(), False
        try:
            signature = _signature(self.path)
            if signature == self._signature and not self._failing:
                return
            value = self._load(self.path)
        except (ConfigurationError, OSError, ValueError, TypeError) as exc:
            self._fail(exc)
            return
        self.value, self._signature = value, signature
        if self._failing:
            logger.warning(
                "%s: %s read again; its new content is in force", self.setting, self.path
            )
        self._failing = False

    def _fail(self, exc: BaseException) -> None:
        if not self._failing:
            logger.warning(
                "%s: cannot re-read %s (%s); the last good content stays in force",
                self.setting,
                self.path,
                type(exc).__name__,
            )
        self._failing = True


def _signature(path: Path) -> _Signature:
    stat = os.stat(path)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def reload_all() -> None:
    """Have every watched file looked at again at its next lookup."""
    for watched in list(_watched):
        watched.reload()


def reload_on_sighup() -> None:
    """Install a ``SIGHUP`` handler that calls :func:`reload_all` (main thread only)."""
    signal.signal(signal.SIGHUP, lambda signum, frame: reload_all())


__all__ = ["WatchedFile", "reload_all", "reload_on_sighup"]
