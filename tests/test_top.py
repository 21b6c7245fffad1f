"""``secmw top``: refusals by reason, rate-limited clients and dependency state from audit JSON
lines (a file or a pipe), other lines skipped, a quiet end on Ctrl-C or at the end of a pipe."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from itertools import zip_longest
from pathlib import Path

import pytest

from secmw import asgi, audit
from secmw.cli import main
from secmw.top import Tally, parse_line, render
from tests.support import SECRET, http_scope, make_token, run_asgi
from tests.test_json_logs import asgi_ok, json_audit_log

FOREIGN = [
    'INFO:     127.0.0.1:5000 - "GET /items HTTP/1.1" 200 OK\n',
    '{"event": "user logged in", "level": "info", "logger": "app.views"}\n',
    '{"event": "no outcome key"}\n',
    "[1, 2, 3]\n",
    "{not json at all\n",
    "\xff\xfe garbage \x00\n",
    '2026-05-04T09:00:00Z stdout F {"message": "a container prefix, no audit fields"}\n',
]


@pytest.fixture
def audit_lines() -> list[str]:
    """The JSON lines real refusals through the stack write: 3 rate-limited requests of alice
    from 192.0.2.9, one missing credential, one storage outage."""
    with json_audit_log() as stream:
        stack = asgi.SecurityStack(
            asgi_ok,
            jwt={"secret": SECRET},
            auth={"required": ["/*"]},
            rate_limit={"default": "2/minute"},
        )
        audit.configure(audit.AuditSettings(dedup_window=0))
        token = make_token(sub="alice")
        for _ in range(5):
            scope = http_scope("/x", headers=[("Authorization", f"Bearer {token}")])
            scope["client"] = ("192.0.2.9", 1)
            run_asgi(stack, scope)
        run_asgi(stack, http_scope("/x", client=("192.0.2.10", 1)))
        audit.emit("ratelimit.storage_down", "redis unreachable")
    return stream.getvalue().splitlines(keepends=True)


def test_only_audit_records_are_read() -> None:
    """Other libraries' JSON, plain text, arrays and broken lines are not audit records; a
    record after a prefix is."""
    assert [parse_line(line) for line in FOREIGN] == [None] * len(FOREIGN)
    prefixed = '2026-05-04T09:00:00Z stdout F {"event": "ip.denied", "outcome": "refused"}'
    assert parse_line(prefixed) == {"event": "ip.denied", "outcome": "refused"}


def test_the_frame_shows_rates_clients_and_dependencies(audit_lines: list[str]) -> None:
    """Real audit lines mixed with foreign ones: the rates, the client at its limit with its
    principal and rule, the storage outage; the foreign lines counted as other."""
    tally = Tally(window=10)
    mixed = zip_longest(audit_lines, FOREIGN)
    lines = [line for pair in mixed for line in pair if line is not None]
    for line in lines:
        tally.add_line(line, time.time())
    frame = render(tally, tally.latest, "test")
    assert f"lines {len(lines)} (audit {len(audit_lines)}, other {len(FOREIGN)})" in frame
    assert "      0.30       3  ratelimit.exceeded        rate_limited              429" in frame
    assert "0.10       1  auth.denied               authentication_required   401" in frame
    assert "       3  192.0.2.9" in frame
    assert "principal alice" in frame
    assert "rule default" in frame
    assert "ratelimit            DOWN" in frame
    assert "redis unreachable" in frame


def test_the_window_slides() -> None:
    """Refusals older than the window leave the rates; the totals keep them."""
    tally = Tally(window=10)
    line = '{"event": "ip.denied", "outcome": "refused", "status": 403, "reason_code": "x"}'
    tally.add_line(line, 100.0)
    tally.add_line(line, 105.0)
    tally.prune(109.0)
    assert tally.rates() == [(0.2, 2, ("ip.denied", "x", "403"))]
    tally.prune(112.0)
    assert tally.rates() == [(0.1, 2, ("ip.denied", "x", "403"))]
    tally.prune(120.0)
    assert tally.rates() == []


def test_once_reads_a_file(
    tmp_path: Path, audit_lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``secmw top --once FILE`` prints one frame of the whole file and exits 0."""
    log = tmp_path / "app.log"
    log.write_text("".join(FOREIGN + audit_lines), encoding="utf-8", errors="surrogateescape")
    assert main(["top", "--once", str(log)]) == 0
    out = capsys.readouterr().out
    assert "ratelimit.exceeded" in out
    assert "principal alice" in out


def test_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that cannot be read is an error line and exit 1, not a traceback."""
    assert main(["top", str(tmp_path / "absent.log")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("secmw: ")
    assert "absent.log" in err


def _start() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "secmw.cli", "top", "--interval", "0.2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """What ``process`` printed until ``marker`` appeared (or ``timeout`` passed)."""
    assert process.stdout is not None
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
    return seen


def test_a_pipe_is_shown_live_and_ctrl_c_ends_quietly(audit_lines: list[str]) -> None:
    """Fed through a pipe that stays open, frames show the lines as they come; SIGINT ends
    the process with exit 0 and nothing on stderr."""
    process = _start()
    assert process.stdin is not None
    try:
        process.stdin.write("".join(FOREIGN + audit_lines).encode("utf-8", "surrogateescape"))
        process.stdin.flush()
        seen = _read_until(process, b"principal alice", timeout=30)
        assert b"ratelimit.exceeded" in seen
        assert b"ratelimit            DOWN" in seen
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert err == b""


def test_the_end_of_a_pipe_prints_a_last_frame(audit_lines: list[str]) -> None:
    """When the writer closes the pipe, a last frame is shown and the process exits 0."""
    process = _start()
    out, err = process.communicate("".join(audit_lines).encode(), timeout=30)
    assert process.returncode == 0
    assert err == b""
    assert b"principal alice" in out.split(b"secmw top")[-1]
