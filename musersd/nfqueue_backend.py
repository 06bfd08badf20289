"""The protocol server's Backend over the NFQUEUE data plane.

Strategy: `NfqueueFilter` offers the methods of `DataPlane` that
`DataPlaneBackend` uses (rule_keys, get_rule, denied, counters, mode...)
and raises the same data-plane errors, so the translation to reply codes,
the paging and the counters are inherited unchanged. Only rules this
backend cannot enforce (IPv6: the queue rule is iptables, IPv4 only) are
refused here, as unsupported rather than as a failure.
"""

from __future__ import annotations

from .dataplane_backend import DataPlaneBackend
from .nfqueue import NfqueueFilter
from .protocol.errors import BackendUnsupported
from .rules import Rule


class NfqueueBackend(DataPlaneBackend):
    name = "nfqueue"

    def __init__(self, dp: NfqueueFilter):
        super().__init__(dp)

    @staticmethod
    def _ipv4_only(rule: Rule) -> None:
        if rule.source.version != 4:
            raise BackendUnsupported(f"the nfqueue backend filters IPv4 only, so it cannot hold the rule for "
                                     f"{rule.key}")

    def add(self, rule: Rule) -> None:
        self._ipv4_only(rule)
        super().add(rule)

    def replace(self, rule: Rule) -> bool:
        self._ipv4_only(rule)
        return super().replace(rule)
