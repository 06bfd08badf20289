"""Receivers behind a join-driven router: who gets a flow is decided by the joins the router reads.

    s1  192.0.2.10 --- in0 \\                                      / out0 --- r1  198.51.100.2
                          router: pimd (IGMP querier, PIM-SM,
                                  the router its own RP)       \\ out1 --- r2  198.51.100.66

The router runs pimd (lab/daemons.py), not smcrouted: smcrouted forwards what
its configuration says whether or not anybody joined, so only a daemon that
builds its forwarding state from IGMP reports lets a join decide delivery
(docs/operations.md, "Authorizing receivers: routing daemons"). Receivers join
for real, with the socket options an application uses (IP_ADD_MEMBERSHIP, and
IP_ADD_SOURCE_MEMBERSHIP for an IGMPv3 source-specific join), and their
kernels send the reports. What reached each receiver link is counted below
the host's stack (lab.traffic.LinkTap), so a host that never joined still
shows every packet the router put on its link.

The tests share one lab and one pimd (starting them is the slow part in the
emulated guest); each test has groups of its own and leaves them at its end.
"""

from __future__ import annotations

import itertools
import socket

import pytest

from lab.daemons import Pimd
from lab.netns import patience, sh
from lab.topology import Lab
from lab.traffic import PORT, TAG, LinkTap, Receiver, Sender
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.router]  # the subject is what the router forwards

SRC = "192.0.2.10"  # the sender, on s1 (in0)
TTL = 8
N = 5  # counted packets per flow: every one is counted exactly
_markers = itertools.count()


class Routed:
    """The shared lab: the sender, a tap on each receiver link, and flows sent through the router."""

    def __init__(self, lab: Lab, pimd: Pimd):
        self.lab, self.pimd = lab, pimd
        self.sender: Sender = lab.sender(SRC)
        self.sender.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
        self.taps = {role: LinkTap(h.ns, h.iface) for role, h in lab.receivers.items()}

    def close(self) -> None:
        for tap in self.taps.values():
            tap.close()

    def join(self, role: str, groups: list[str], *, source: str | None = None, igmp: int = 0) -> Receiver:
        """A member of `groups` on host `role` (of `source` only, if given), reporting in IGMPv`igmp` (0: default)."""
        host = self.lab.receivers[role]
        sh("sysctl", "-qw", f"net.ipv4.conf.{host.iface}.force_igmp_version={igmp}", ns=host.ns)
        return Receiver(host.ns, host.addrs[0], groups, iface=host.iface, source=source)

    def _send(self, group: str, marker: str, n: int) -> None:
        for _ in range(n):
            self.sender.sock.sendto(TAG + marker.encode(), (group, PORT))

    def _read(self) -> None:
        for tap in self.taps.values():
            tap.read(patience(0.02))

    def flow(self, group: str, joined: list[str]) -> dict[str, int]:
        """Send `group` from SRC; N counted packets per receiver link: {role: packets of the group that reached it}.

        The router resolves a new flow on its first packet (a kernel cache
        miss that pimd answers), so single packets are sent first until every
        link in `joined` saw one; then N counted ones, read until every joined
        link has them all and the links are quiet. The count for a link
        includes the first packets too: a link that must get nothing got
        nothing at all.
        """
        mark = f"m{next(_markers)}"
        prime = f"{mark}-first"

        def primed() -> bool:
            self._send(group, prime, 1)
            self._read()
            return all(self.taps[r].got(SRC, group, prime) for r in joined)

        wait_until(primed, patience(15), f"the first packet of {group} on {joined}", interval=patience(0.2))
        self._send(group, mark, N)
        wait_until(lambda: (self._read(), all(self.taps[r].got(SRC, group, mark) >= N for r in joined))[1],
                   patience(5), f"{N} packets of {group} on {joined}")
        while any(tap.read(patience(0.2)) for tap in self.taps.values()):
            pass
        return {role: tap.got(SRC, group, mark) + tap.got(SRC, group, prime) * (role not in joined)
                for role, tap in self.taps.items()}


@pytest.fixture(scope="module")
def routed():
    with Lab(senders={"s1": [SRC]}, receivers=("r1", "r2"), forwarding=True, smcroute=False) as lab:
        pimd = Pimd(lab).start()
        routed = Routed(lab, pimd)
        try:
            yield routed
        finally:
            routed.close()


@pytest.fixture
def clean(routed):
    """Each test's receivers, closed (their groups left) at its end, and the hosts' IGMP version back to the default."""
    members: list[Receiver] = []
    yield members
    for m in members:
        m.close()
    for h in routed.lab.receivers.values():
        sh("sysctl", "-qw", f"net.ipv4.conf.{h.iface}.force_igmp_version=0", ns=h.ns)


def test_a_group_reaches_only_the_link_that_joined_it(routed, clean):
    group = "239.1.2.1"
    r1 = routed.join("r1", [group])
    clean.append(r1)
    assert routed.flow(group, ["r1"]) == {"r1": N, "r2": 0}
    r1.drain()
    assert r1.got(SRC, group) >= N


def test_an_igmpv3_source_specific_join_gets_its_source(routed, clean):
    group = "232.1.2.1"  # pimd's source-specific range: the join is (S,G)
    r2 = routed.join("r2", [group], source=SRC)
    clean.append(r2)
    assert routed.flow(group, ["r2"]) == {"r1": 0, "r2": N}
    r2.drain()
    assert r2.got(SRC, group) >= N


def test_an_igmpv2_join_is_read_as_well(routed, clean):
    group = "239.1.2.2"
    r1 = routed.join("r1", [group], igmp=2)
    clean.append(r1)
    assert routed.flow(group, ["r1"]) == {"r1": N, "r2": 0}


def test_both_links_get_a_group_both_joined(routed, clean):
    group = "239.1.2.3"
    clean += [routed.join("r1", [group], igmp=2), routed.join("r2", [group])]
    assert routed.flow(group, ["r1", "r2"]) == {"r1": N, "r2": N}
