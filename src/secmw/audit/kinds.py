"""What each audit event is: a refusal (and the layer that refused), or a change in the state of
a dependency. The Prometheus and OpenTelemetry metrics, the JSON lines and ``secmw top`` read
these tables."""

from __future__ import annotations

DENIALS = {  # event: the layer that refused
    "ip.denied": "ip",
    "auth.denied": "auth",
    "auth.failed": "token",
    "totp.denied": "totp",
    "ratelimit.exceeded": "ratelimit",
    "ratelimit.unidentified": "ratelimit",
    "ratelimit.unavailable": "ratelimit",
    "request.rejected": "request",
}
STATE_CHANGES = {  # event: (dependency, 1 when it answers again, 0 when it failed)
    "ratelimit.storage_down": ("ratelimit", 0),
    "ratelimit.storage_up": ("ratelimit", 1),
    "jwks.fetch_failed": ("jwks", 0),
    "jwks.recovered": ("jwks", 1),
    "introspection.failed": ("introspection", 0),
    "introspection.recovered": ("introspection", 1),
}
