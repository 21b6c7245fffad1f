"""``secmw top``: a live view of what the stack refuses, read from the audit JSON lines.

It reads the lines :class:`secmw.audit.JSONFormatter` writes, from a file (followed as it grows)
or from standard input (``tail -f app.log | secmw top``), and redraws every second: refusals per
second by event and reason over a sliding window, the clients the rate limits refuse most, and
the state of the storage and identity providers. Lines that are not secmw audit records (other
loggers, other libraries' JSON, plain text, a prefix such as a container runtime's timestamp)
are counted and skipped. Ctrl-C ends it quietly; so does the end of a pipe, after a last frame.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from secmw.audit.kinds import STATE_CHANGES

AUDIT_LOGGER = "secmw.audit"
CLEAR = "\x1b[H\x1b[2J"


def parse_line(line: str) -> dict[str, Any] | None:
    """The audit record in ``line``, or None for anything else.

    The JSON object may follow a prefix (a timestamp added by a log shipper). A record counts
    when it has ``event`` and ``outcome`` and, if it names its logger, names ``secmw.audit``
    (structlog and others use an ``event`` key too)."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(line[start:])
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("event"), str) or not isinstance(record.get("outcome"), str):
        return None
    if record.get("logger", AUDIT_LOGGER) != AUDIT_LOGGER:
        return None
    return record


def record_time(record: dict[str, Any], default: float) -> float:
    """The record's ``time`` as a POSIX timestamp, else ``default``."""
    text = record.get("time")
    if not isinstance(text, str):
        return default
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass
class Dependency:
    """The last known state of a dependency."""

    up: bool
    since: float
    reason: str


@dataclass
class Tally:
    """What the view shows, kept over a sliding ``window`` of seconds."""

    window: float = 10.0
    lines: int = 0
    records: int = 0
    recent: deque[tuple[float, tuple[str, str, str], dict[str, Any]]] = field(default_factory=deque)
    totals: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dependencies: dict[str, Dependency] = field(default_factory=dict)
    unavailable: int = 0
    latest: float = 0.0

    def add_line(self, line: str, now: float) -> None:
        """Count one input line; keep it when it is an audit record."""
        self.lines += 1
        record = parse_line(line)
        if record is None:
            return
        self.records += 1
        at = record_time(record, now)
        self.latest = max(self.latest, at)
        state = STATE_CHANGES.get(record["event"])
        if state is not None:
            name, up = state
            self.dependencies[name] = Dependency(bool(up), at, str(record.get("reason") or ""))
        if record["outcome"] not in ("refused", "unavailable"):
            return
        if record["outcome"] == "unavailable":
            self.unavailable += 1
        status = record.get("status")
        reason = (str(record["event"]), str(record.get("reason_code") or "-"), str(status))
        self.totals[reason] += 1
        self.recent.append((at, reason, record))

    def prune(self, now: float) -> None:
        """Forget refusals older than the window."""
        cutoff = now - self.window
        recent = self.recent
        while recent and recent[0][0] <= cutoff:
            recent.popleft()

    def rates(self) -> list[tuple[float, int, tuple[str, str, str]]]:
        """Refusals per second in the window, by (event, reason code, status), busiest first."""
        counts = Counter(reason for _, reason, _ in self.recent)
        rows = [(n / self.window, self.totals[r], r) for r, n in counts.items()]
        return sorted(rows, key=lambda row: (-row[0], row[2]))

    def limited_clients(self, top: int = 5) -> list[tuple[int, str, str, str]]:
        """The clients the rate limits refused most in the window: count, client, principal,
        rule."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for _, reason, record in self.recent:
            if reason[0] == "ratelimit.exceeded":
                key = (
                    str(record.get("client_address") or "-"),
                    str(record.get("principal_id") or "-"),
                    str(record.get("rule") or "-"),
                )
                counts[key] += 1
        return [(n, *key) for key, n in counts.most_common(top)]


def render(tally: Tally, now: float, source: str) -> str:
    """One frame of the view, as text."""
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    other = tally.lines - tally.records
    out = [
        f"secmw top  {stamp}  {source}  window {tally.window:g}s",
        f"lines {tally.lines:,} (audit {tally.records:,}, other {other:,})",
        "",
        "refusals/s   total  event                     reason                    status",
    ]
    rates = tally.rates()
    for rate, total, (event, code, status) in rates:
        out.append(f"{rate:10.2f} {total:7,}  {event:<25} {code:<25} {status}")
    if not rates:
        out.append("         -        -  no refusal in the window")
    out += ["", "clients at their rate limits (429s in the window)", "   count  client"]
    clients = tally.limited_clients()
    for count, client, principal, rule in clients:
        out.append(f"{count:8,}  {client:<39} principal {principal:<20} rule {rule}")
    if not clients:
        out.append("       -  none")
    out += ["", "storage and identity providers"]
    for name, state in sorted(tally.dependencies.items()):
        since = datetime.fromtimestamp(state.since, timezone.utc).strftime("%H:%M:%SZ")
        word = "up" if state.up else "DOWN"
        out.append(f"  {name:<20} {word:<5} since {since}  {state.reason}")
    if not tally.dependencies:
        out.append("  no state change seen")
    out.append(f"  answers 503 (a dependency could not decide): {tally.unavailable:,}")
    return "\n".join(out) + "\n"


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for raw in stream:
        yield raw.decode("utf-8", errors="replace")


def _fd_lines(fd: int) -> Iterator[str]:
    """The lines read from ``fd`` with ``os.read``: no buffered file object, whose lock a reading
    thread would hold while the interpreter exits after Ctrl-C (a fatal error at shutdown)."""
    pending = b""
    while chunk := os.read(fd, 65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace") + "\n"
    if pending:
        yield pending.decode("utf-8", errors="replace")


def _follow(file: IO[bytes], path: str, stop: threading.Event, poll: float = 0.2) -> Iterator[str]:
    """The lines of ``file``, then each line appended to it, until ``stop`` is set; starts over
    when ``path`` is truncated or replaced (log rotation)."""
    try:
        identity = os.fstat(file.fileno()).st_ino
        pending = b""
        while not stop.is_set():
            chunk = file.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    yield pending.decode("utf-8", errors="replace")
                    pending = b""
                continue
            try:
                current = os.stat(path)
            except OSError:
                current = None
            if current is not None and (
                current.st_ino != identity or current.st_size < file.tell()
            ):
                file.close()
                file = open(path, "rb")  # noqa: SIM115 - closed in the finally clause
                identity, pending = os.fstat(file.fileno()).st_ino, b""
                continue
            stop.wait(poll)
    finally:
        file.close()


def _reader(source: Iterator[str], lines: queue.Queue[str | None]) -> None:
    try:
        for line in source:
            lines.put(line)
    finally:
        lines.put(None)  # the end of the input


def run(
    path: str | None,
    *,
    once: bool = False,
    window: float = 10.0,
    interval: float = 1.0,
    out: IO[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Show the view of ``path`` (None or ``-``: standard input) until the input ends or
    Ctrl-C; with ``once``, read the input to its end and show one frame."""
    out = out or sys.stdout
    tally = Tally(window=window)
    name = "stdin" if path in (None, "-") else str(path)
    if once:
        with _open(path) as stream:
            for line in _lines(stream):
                tally.add_line(line, clock())
        now = tally.latest or clock()
        tally.prune(now)
        out.write(render(tally, now, name))
        return 0
    stop = threading.Event()
    # A file that cannot be opened is an error now, not a silent end in the reading thread.
    source = _fd_lines(sys.stdin.fileno()) if name == "stdin" else _follow(_open(name), name, stop)
    lines: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
    threading.Thread(target=_reader, args=(source, lines), daemon=True).start()
    clear = CLEAR if out.isatty() else ""
    try:
        return _live(tally, lines, name, interval, out, clear, clock)
    except KeyboardInterrupt:
        out.write("\n")
        return 0
    except BrokenPipeError:  # the reader of our output went away (``secmw top | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        stop.set()


def _live(
    tally: Tally,
    lines: queue.Queue[str | None],
    name: str,
    interval: float,
    out: IO[str],
    clear: str,
    clock: Callable[[], float],
) -> int:
    ended = False
    while not ended:
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            tally.add_line(line, clock())
        now = clock()
        tally.prune(now)
        out.write(clear + render(tally, now, name) + ("" if clear else "\n"))
        out.flush()
    return 0


def _open(path: str | None) -> IO[bytes]:
    if path in (None, "-"):
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    return open(str(path), "rb")
