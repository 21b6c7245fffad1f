"""API key and Basic user files are re-read when they change (at most once a second, or at once
after SIGHUP with ``reload_on_sighup``); a file that disappears, becomes unreadable or invalid
keeps the last good set, logged once, and never turns a request into an error."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from secmw import Principal, SecuritySettings, hash_api_key
from secmw.auth.build import _api_key_file, build_chain
from secmw.auth.reload import WatchedFile, reload_all, reload_on_sighup
from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from tests.identity_support import FakeClock

OLD_KEY, NEW_KEY = "old-key-0123456789abcdef", "new-key-0123456789abcdef"


def write_keys(path: Path, *keys: str, mtime: int) -> None:
    """The key file, with a distinct modification time so a change is seen at once."""
    path.write_text(json.dumps([{"hash": hash_api_key(k), "id": k[:3]} for k in keys]))
    os.utime(path, ns=(mtime, mtime))


def key_status(chain: object, key: str) -> int | str:
    view = RequestView("GET", "/", headers=Headers([("x-api-key", key)]))
    result = chain.authenticate(view)  # type: ignore[attr-defined]
    return result.id if isinstance(result, Principal) else result.status


@pytest.fixture
def watched(tmp_path: Path) -> tuple[WatchedFile[list[object]], FakeClock, Path]:
    path = tmp_path / "keys.json"
    write_keys(path, OLD_KEY, mtime=1_000_000_000)
    clock = FakeClock()
    return WatchedFile(path, _api_key_file, setting="api_keys.file", clock=clock), clock, path


def ids(file: WatchedFile[list[object]]) -> list[str]:
    return [record.id for record in file.current()]  # type: ignore[attr-defined]


def test_a_change_is_seen_after_the_interval(watched: tuple) -> None:
    """Within a second the file is not looked at; after it, the new content is in force."""
    file, clock, path = watched
    write_keys(path, NEW_KEY, mtime=2_000_000_000)
    clock.advance(0.5)
    assert ids(file) == ["old"]
    clock.advance(0.6)
    assert ids(file) == ["new"]


@pytest.mark.parametrize("breakage", ["deleted", "directory", "invalid-json", "bad-hash"])
def test_a_broken_file_keeps_the_last_good_set_and_is_logged_once(
    watched: tuple, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted, unreadable or invalid: the keys in force stay; one warning, no content."""
    file, clock, path = watched
    path.unlink()
    if breakage == "directory":
        path.mkdir()
    elif breakage == "invalid-json":
        path.write_text("[{")
    elif breakage == "bad-hash":
        path.write_text(json.dumps([{"hash": "sha256:zz", "id": "x"}]))
    with caplog.at_level(logging.WARNING, logger="secmw"):
        for _ in range(3):
            clock.advance(1.1)
            assert ids(file) == ["old"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "secmw"]
    assert len(warnings) == 1
    assert "last good content stays in force" in warnings[0]
    assert "sha256" not in warnings[0]
    if breakage == "directory":
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    write_keys(path, NEW_KEY, mtime=3_000_000_000)
    clock.advance(1.1)
    assert ids(file) == ["new"]


def test_a_missing_file_at_start_is_a_configuration_error(tmp_path: Path) -> None:
    """Without a first good read there is nothing to keep: start fails, naming the setting."""
    with pytest.raises(ConfigurationError, match="API_KEYS__FILE"):
        WatchedFile(tmp_path / "absent.json", _api_key_file, setting="api_keys.file")


def test_the_chain_follows_the_key_file_and_sighup(tmp_path: Path) -> None:
    """Through the authentication layer: a rotated key file takes effect on SIGHUP (no
    restart); after the file disappears the last keys still answer, never a 500."""
    path = tmp_path / "keys.json"
    write_keys(path, OLD_KEY, mtime=1_000_000_000)
    chain = build_chain(SecuritySettings(api_keys={"file": path}))
    assert key_status(chain, OLD_KEY) == "old"
    write_keys(path, NEW_KEY, mtime=2_000_000_000)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        reload_on_sighup()
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert key_status(chain, NEW_KEY) == "new"
    assert key_status(chain, OLD_KEY) == 401
    path.unlink()
    reload_all()
    assert key_status(chain, NEW_KEY) == "new"


def test_basic_users_file_is_followed(tmp_path: Path) -> None:
    """The Basic users file too: a user added to it can log in once it is re-read."""
    from pwdlib.hashers.bcrypt import BcryptHasher

    hashed = BcryptHasher(rounds=4).hash("pw")
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"alice": {"password_hash": hashed}}))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    chain = build_chain(SecuritySettings(basic={"users_file": path}))

    def login(name: str) -> int | str:
        token = base64.b64encode(f"{name}:pw".encode()).decode()
        view = RequestView("GET", "/", headers=Headers([("authorization", f"Basic {token}")]))
        result = chain.authenticate(view)
        return result.id if isinstance(result, Principal) else result.status

    assert (login("alice"), login("bob")) == ("alice", 401)
    path.write_text(json.dumps({"bob": {"password_hash": hashed}}))
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    reload_all()
    assert (login("alice"), login("bob")) == (401, "bob")
