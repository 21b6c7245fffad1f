"""Security headers: the Content-Security-Policy, documentation presets and the per-path policy."""

from __future__ import annotations

from secmw.headers.csp import NONCE, csp_hash

__all__ = ["NONCE", "csp_hash"]
