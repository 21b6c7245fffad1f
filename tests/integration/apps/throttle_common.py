"""What the throttle-concurrency apps share: a slow check that counts its calls in a file.

The servers run in other processes (and, with gunicorn, in several), so each check appends one
byte to ``$THROTTLE_CHECKS/<route>``: the file's size is the number of checks made anywhere.
``O_APPEND`` writes of one byte are atomic, whichever process or thread makes them.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from secmw.auth.base import Credential
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView

SLOW = 0.05  # seconds per check: long enough for every request of a burst to be in flight
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def count_check(route: str) -> None:
    """Record one check of ``route``."""
    path = Path(os.environ["THROTTLE_CHECKS"]) / route
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)


class SlowBasic:
    """HTTP Basic whose password check is slow and counted (``route`` names its counter); the
    password ``right`` is right."""

    scheme = "basic"
    authorization_scheme = "basic"
    blocking = True  # the ASGI side runs it in a thread, as a real password hash

    def __init__(self, route: str | None) -> None:
        self.route = route

    def extract(self, request: RequestView, authorization: str | None) -> Credential | None:
        if authorization is None:
            return None
        user, _, password = base64.b64decode(authorization).decode().partition(":")
        return Credential("basic", password, user)

    def verify(self, credential: Credential) -> Principal | Deny:
        if self.route is not None:
            count_check(self.route)
            time.sleep(SLOW)
        if credential.secret == "right":
            return Principal.create(credential.username or "", "basic")
        return Deny(401, "invalid credentials", "invalid_credentials")

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        return 'Basic realm="api"'


def secret_for(principal: Principal) -> str:
    """The step-up secret lookup: slow and counted."""
    count_check("stepup")
    time.sleep(SLOW)
    return TOTP_SECRET
