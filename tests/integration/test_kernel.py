"""What the kernel can do, asked once, and what the lab and musersd do about it.

`musersd.kernel.multicast_routing()` asks the kernel with MRT_INIT / MRT6_INIT
in a throwaway namespace. These tests check its answer against what the
kernel shows for itself (a kernel with multicast routing keeps
/proc/net/ip_mr_vif and /proc/net/ip6_mr_vif in every namespace), then that
a lab needing forwarding stops at once on a kernel without it, and that
musersd warns about it in one line. They are marked `every_kernel`: the host
tier runs them on this machine's kernel, the router tier's guest on one that
routes, so both branches are exercised by every `make test` on a kernel
without multicast routing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab import netns
from lab.daemons import Musersd
from lab.topology import Lab, Route
from musersd.kernel import multicast_routing

pytestmark = [pytest.mark.integration, pytest.mark.every_kernel]


def test_the_probe_agrees_with_what_the_kernel_shows():
    found = multicast_routing()
    assert found.ipv4 == Path("/proc/net/ip_mr_vif").exists()
    assert found.ipv6 == Path("/proc/net/ip6_mr_vif").exists()
    assert (found.missing() is None) == (found.ipv4 and found.ipv6)
    # The probe's namespace is its own: asking again (as smcrouted would after it) gives the same answer.
    assert multicast_routing() == found


def test_a_forwarding_lab_stops_at_once_on_a_kernel_that_cannot_route():
    before = set(netns.existing())
    found = multicast_routing()
    start = time.monotonic()
    if found.missing() is None:
        with Lab(senders={"s1": ["192.0.2.10"]}, routes=[Route("239.1.1.1", "192.0.2.10")], forwarding=True) as lab:
            rx = lab.receiver(["239.1.1.1"])
            lab.sender("192.0.2.10").send("239.1.1.1", 10, ttl=4)
            rx.drain()
            assert rx.got("192.0.2.10", "239.1.1.1") == 10 and rx.ttls("192.0.2.10", "239.1.1.1") == {3: 10}
    else:
        with pytest.raises(netns.LabError) as err:
            Lab(senders={"s1": ["192.0.2.10"]}, routes=[Route("239.1.1.1", "192.0.2.10")], forwarding=True).start()
        assert time.monotonic() - start < 5  # never smcrouted's 15 s wait for routes it cannot install
        msg = str(err.value)
        assert "cannot route" in msg and "CONFIG_IP_MROUTE" in msg and "python -m lab.vm" in msg
        assert msg.count(".") <= 3 and "\n" not in msg  # one sentence
    assert set(netns.existing()) == before  # nothing left behind either way


def test_musersd_warns_once_when_this_host_cannot_forward(pin_dir):
    missing = multicast_routing().missing()
    with Lab(senders={"s1": ["192.0.2.10"]}) as lab:
        d = Musersd(lab, pin_dir).start()
        try:
            log = d.log()
        finally:
            d.stop()
    warnings = [line for line in log.splitlines() if "will forward no multicast" in line]
    if missing is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "WARNING" in warnings[0] and missing in warnings[0]
