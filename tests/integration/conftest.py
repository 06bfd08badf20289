"""Lab fixtures: a router namespace guarded by mauth, seen from the router (or forwarding, for the router tier)."""

from __future__ import annotations

import pytest

from lab.netns import inside
from lab.topology import Lab, Route, twin6
from musersd.dataplane import DataPlane
from tests.conftest import routed

# Addresses of the standard lab (all inside its namespaces only).
AUTH = "192.0.2.10"  # the authorized sender
AUTH2 = "192.0.2.11"  # a second authorized sender, low TTL
ROGUE = "192.0.2.12"  # never authorized
GROUP = "239.1.1.1"
GROUP2 = "239.1.1.2"
GROUP3 = "239.1.1.3"  # no rule for anybody
GROUPS = [GROUP, GROUP2, GROUP3]
SOURCES = [AUTH, AUTH2, ROGUE]
# The same hosts over IPv6 in `lab6` (their twins, lab.topology.twin6) and global-scope groups.
AUTH6, AUTH2_6, ROGUE6 = (twin6(a) for a in SOURCES)  # 2001:db8::a, ::b, ::c
GROUP6, GROUP6_2, GROUP6_3 = "ff0e::db8:1", "ff0e::db8:2", "ff0e::db8:3"
GROUPS6 = [GROUP6, GROUP6_2, GROUP6_3]
SOURCES6 = [AUTH6, AUTH2_6, ROGUE6]


@pytest.fixture
def lab(request):
    routes = [Route(g, s) for s in SOURCES for g in GROUPS]
    with Lab(senders={"s1": SOURCES}, routes=routes, forwarding=routed(request)) as lab:
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


def guard(lab: Lab, pin_dir):
    """Load the XDP filter (pins in `pin_dir`), attach it to every internal link of `lab`; yield (lab, dp)."""
    dp = DataPlane(pin_dir, max_rules=1024).load()
    with inside(lab.router.ns):
        for iface in lab.internal_ifaces:
            dp.attach(iface)
    try:
        yield lab, dp
    finally:
        with inside(lab.router.ns):
            for iface in lab.internal_ifaces:
                dp.detach(iface)
        dp.close()


@pytest.fixture
def lab6(request):
    """The standard lab's hosts with IPv6 too; when it forwards, smcrouted has an IPv6 (S,G) route for every pair."""
    routes = [Route(g, s) for s in SOURCES6 for g in GROUPS6]
    with Lab(senders={"s1": SOURCES}, routes=routes, ipv6=True, forwarding=routed(request)) as lab:
        yield lab


@pytest.fixture
def guarded6(lab6, pin_dir):
    """`lab6`'s router with the XDP filter loaded and attached, as `guarded` for IPv4."""
    yield from guard(lab6, pin_dir)
