"""The XDP data plane: the only code in mauth that loads the filter and touches its maps.

In four files, one thing each: xdp_loader.py (the program and its pinned
maps: load, adopt, attach, mode), xdp_rules.py (the rules in the maps),
xdp_counters.py (counters by reason and the denied table), xdp_receivers.py
(receiver rules, interface policies, joined groups, refused joins).
`DataPlane` here is the four together; it implements filter.Filter, as the NFQUEUE fallback
(nfqueue.py) does, and the decisions the two share are made in filter.py.

Every method that changes state validates first and raises `DataPlaneError`
(one sentence) without changing anything when its input is bad.
"""

from __future__ import annotations

from mauthcore.protocol.model import DeniedEntry

from .filter import DEFAULT_MAX_DENIED, DEFAULT_MAX_RULES, DataPlaneError, sap_group_list  # noqa: F401
from .xdp_counters import XdpCounters
from .xdp_loader import (  # noqa: F401
    ATTACH_MODES,
    BPF_FS_MAGIC,
    DEFAULT_PIN_DIR,
    XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_SKB_MODE,
    XdpLoader,
    detach,
    interface_index,
    is_bpffs,
    xdp_status,
)
from .xdp_receivers import XdpReceivers
from .xdp_rules import XdpRules


class DataPlane(XdpLoader, XdpRules, XdpCounters, XdpReceivers):
    """The filter's program and maps on this router."""

    binds = True  # rules may be bound to an interface, MAC, reverse path or learned sender (filter.Binding)

    def denied(self) -> list[DeniedEntry]:
        """The denied pairs (XdpCounters.denied), those a binding dropped with its last offender's interface and MAC."""
        return self.with_offenders(XdpCounters.denied(self))
