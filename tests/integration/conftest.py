"""Lab fixtures: a router namespace forwarding real multicast, guarded by mauth."""

from __future__ import annotations

import pytest

from lab.netns import inside
from lab.topology import Lab, Route
from musersd.dataplane import DataPlane

# Addresses of the standard lab (all inside its namespaces only).
AUTH = "192.0.2.10"  # the authorized sender
AUTH2 = "192.0.2.11"  # a second authorized sender, low TTL
ROGUE = "192.0.2.12"  # never authorized
GROUP = "239.1.1.1"
GROUP2 = "239.1.1.2"
GROUP3 = "239.1.1.3"  # no rule for anybody
GROUPS = [GROUP, GROUP2, GROUP3]
SOURCES = [AUTH, AUTH2, ROGUE]


@pytest.fixture
def lab():
    routes = [Route(g, s) for s in SOURCES for g in GROUPS]
    with Lab(senders={"s1": SOURCES}, routes=routes) as lab:
        yield lab


@pytest.fixture
def guarded(lab, pin_dir):
    """The lab's router with the XDP filter loaded (pins in this test's bpffs) and attached."""
    dp = DataPlane(pin_dir, max_rules=1024).load()
    with inside(lab.router.ns):
        for iface in lab.internal_ifaces:
            dp.attach(iface)
    yield lab, dp
    with inside(lab.router.ns):
        for iface in lab.internal_ifaces:
            dp.detach(iface)
    dp.close()
