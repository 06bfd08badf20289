"""The protocol server's Backend over the NFQUEUE data plane.

Strategy: `NfqueueFilter` implements filter.Filter, as `DataPlane` does,
and raises the same data-plane errors, so the translation to reply codes,
the paging, the counters and the refusal of rules of a family the filter
does not hold (IPv6: the queue rule is iptables, IPv4 only; refused as
unsupported rather than as a failure) are `DataPlaneBackend`'s, unchanged.
"""

from __future__ import annotations

from .dataplane_backend import DataPlaneBackend
from .nfqueue import NfqueueFilter


class NfqueueBackend(DataPlaneBackend):
    name = "nfqueue"

    def __init__(self, dp: NfqueueFilter):
        super().__init__(dp)
