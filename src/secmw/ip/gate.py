"""The IP layer's gate: resolve the client behind trusted proxies, apply the allow/deny policy."""

from __future__ import annotations

from secmw import audit
from secmw.core.gate import PASS, Plain, Verdict
from secmw.core.request import RequestView
from secmw.ip.filter import DENIED, IPFilter


class IPGate(Plain):
    """Refuses a client the policy does not allow (403 that names no network, ``ip.denied``).

    ``rewrites_client``: the driver writes the resolved client back into the scope / environ
    once the gates passed (``ip.rewrite_client``), so the app sees what every layer saw.
    """

    __slots__ = ("admits", "filter", "rewrites_client")

    def __init__(self, ip_filter: IPFilter) -> None:
        self.filter = ip_filter
        self.rewrites_client = ip_filter.rewrite_client
        # A peer allowed before on any path, as its own client: nothing to resolve or rewrite,
        # so a driver of this gate alone needs no view for it.
        self.admits = ip_filter.admits

    def check(self, view: RequestView) -> Verdict:
        if self.admits(view.peer, view.path):
            return PASS  # a peer allowed before, on any path: nothing to resolve
        refusal = self.filter.check(view)
        if refusal is None:
            return PASS
        audit.emit("ip.denied", refusal.reason, request=view, rule=refusal.rule, denial=DENIED)
        return DENIED
