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

The first tests prove the lab without mauth's receiver rules. The rest run
musersd on the router as an operator would (`guarded`, started after them in
the same lab), guarding in0 and both receiver links, with a rule file that
closes out0 and out1 to all but the receivers it names (docs/operations.md,
"Authorizing receivers"): a refused join is removed from the report before
pimd reads it, so the link gets nothing, and musersd's counters and refused
joins (protocol v2: RECV_POLICY, RECV_DENIED, RECV_JOINED) name the receiver.

The tests share one lab and one pimd (starting them is the slow part in the
emulated guest); each test has groups of its own and leaves them at its end.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid

import pytest

from lab.daemons import Musersd, Pimd, write_key_file
from lab.netns import inside, patience, sh
from lab.topology import Lab
from lab.traffic import PORT, TAG, LinkTap, Receiver, Sender
from mauthcore.protocol.model import Reason
from mauthcore.receivers import IfacePolicy, ReceiverMode
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
        self.last_counts: dict[str, dict[str, int]] = {}

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

    def flow(self, group: str, joined: list[str], *, also: tuple[str, ...] = ()) -> dict[str, int]:
        """Send `group` from SRC; N counted packets per receiver link: {role: packets of the group that reached it}.

        The router resolves a new flow on its first packet (a kernel cache
        miss that pimd answers), so single packets are sent first until every
        link in `joined` saw one; then N counted ones, read until every joined
        link has them all and the links are quiet. The count for a link
        includes the first packets too: a link that must get nothing got
        nothing at all.

        `also` are groups no link may get, sent beside `group` all along (a
        packet with each first one, then N each before the counted ones):
        what reached each link of them, first packets included, is left in
        `self.last_counts[g]`.
        """
        mark = f"m{next(_markers)}"
        prime = f"{mark}-first"

        def primed() -> bool:
            for g in (group, *also):
                self._send(g, prime, 1)
            self._read()
            return all(self.taps[r].got(SRC, group, prime) for r in joined)

        wait_until(primed, patience(15), f"the first packet of {group} on {joined}", interval=patience(0.2))
        for g in also:
            self._send(g, mark, N)
        self._send(group, mark, N)
        wait_until(lambda: (self._read(), all(self.taps[r].got(SRC, group, mark) >= N for r in joined))[1],
                   patience(5), f"{N} packets of {group} on {joined}")
        while any(tap.read(patience(0.2)) for tap in self.taps.values()):
            pass
        self.last_counts = {g: {role: tap.got(SRC, g, mark) + tap.got(SRC, g, prime) for role, tap in self.taps.items()}
                            for g in also}
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


# ------------------------------------------------------------------ receivers authorized by mauth

R1, R2 = "198.51.100.2", "198.51.100.66"  # the receivers' addresses (r1 on out0, r2 on out1)
G_R1 = "239.1.3.{}"  # groups r1 may join (on out0)
G_R2 = "239.1.4.{}"  # groups r2 may join (on out1)
G_SSM_R2 = "232.1.4.1"  # r2 may join it from SRC only
G_NO_SENDER = "239.2.3.1"  # r1 may join it; no sender rule covers it


class Guarded:
    """musersd on the router guarding in0 (senders) and out0, out1 (receivers), its rules from its rule file."""

    def __init__(self, routed: Routed, musersd: Musersd, client):
        self.routed, self.musersd, self.client = routed, musersd, client

    def policies(self) -> dict:
        return {e.policy.iface: e for e in self.client.receiver_policy()}

    def counters(self, iface: str) -> dict[str, int]:
        return dict(self.policies()[iface].counters)

    def denied(self) -> dict[tuple[str, str, str, str | None], tuple[Reason, int]]:
        """(iface, receiver, group, source) -> (reason, refused records), as RECV_DENIED lists them."""
        return {(d.iface, str(d.receiver), str(d.group), str(d.source) if d.source else None): (d.reason, d.records)
                for d in self.client.denied_joins()}

    def joined(self) -> dict:
        return {(j.iface, str(j.group)): j for j in self.client.joined()}

    def reasons(self) -> dict[Reason, int]:
        return {c.reason: c.packets for c in self.client.counters().reasons}

    def report(self, role: str, frame: bytes) -> None:
        """Send a membership report frame (lab.reports) from host `role`, with its own MAC, as its kernel would."""
        host = self.routed.lab.receivers[role]
        with inside(host.ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            try:
                s.bind((host.iface, 0))
                mac = s.getsockname()[4]
                s.send(frame[:6] + mac + frame[12:])
            finally:
                s.close()


RULES = f"""# the receiver lab: sender rules, then who may receive what
{SRC} 239.1.0.0/16 {TTL}
{SRC} 232.1.0.0/16 {TTL}
interface out0 closed
interface out1 closed
receiver 198.51.100.0/24 239.1.2.0/24
receiver 198.51.100.0/24 232.1.2.0/24
receiver {R1} 239.1.3.0/24 iface=out0
receiver {R1} 239.2.3.0/24 iface=out0
receiver {R2} 239.1.4.0/24 iface=out1
receiver {R2} {G_SSM_R2} source={SRC} iface=out1
"""


@pytest.fixture(scope="module")
def guarded(routed, bpffs):
    """musersd started after the baseline tests above, in the same lab (the file's tests run in order)."""
    lab = routed.lab
    conf = lab.workdir / "mauth.conf"
    conf.write_text(RULES)
    key = write_key_file(lab.workdir / "router.key")
    musersd = Musersd(lab, bpffs / f"recv-{uuid.uuid4().hex[:8]}", key_file=key,
                      ifaces=["in0", "out0", "out1"],
                      extra=["--config", str(conf), "--group-timeout", "3600"]).start()  # forgotten only by leaves
    client = musersd.client()
    try:
        yield Guarded(routed, musersd, client)
    finally:
        client.close()
        assert musersd.stop() == 0


def _since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_a_refused_receiver_gets_nothing_while_an_allowed_one_does(guarded, clean):
    group = G_R2.format(1)  # r2's, not r1's
    before = guarded.counters("out0")
    clean += [guarded.routed.join("r1", [group]), guarded.routed.join("r2", [group])]
    assert guarded.routed.flow(group, ["r2"]) == {"r1": 0, "r2": N}
    assert guarded.denied()[("out0", R1, group, None)][0] == Reason.JOIN_REFUSED
    assert ("out1", group) in guarded.joined() and ("out0", group) not in guarded.joined()
    grown = _since(before, guarded.counters("out0"))
    assert grown["refused"] >= 1 and grown["dropped"] >= 1  # a one-record report refused whole is dropped


def test_an_igmpv3_report_keeps_the_allowed_group_and_removes_the_forbidden_one(guarded, clean):
    allowed, forbidden = G_R1.format(2), G_R2.format(2)
    before = guarded.counters("out0")
    from lab import reports  # the frame builders of the receiver filter's tests

    guarded.report("r1", reports.igmp_v3(R1, reports.records((reports.IS_EX, allowed), (reports.IS_EX, forbidden))))
    assert guarded.routed.flow(allowed, ["r1"], also=(forbidden,)) == {"r1": N, "r2": 0}
    assert guarded.routed.last_counts[forbidden] == {"r1": 0, "r2": 0}
    assert guarded.denied()[("out0", R1, forbidden, None)] == (Reason.JOIN_REFUSED, 1)
    grown = _since(before, guarded.counters("out0"))
    assert grown["rewritten"] == 1 and grown["refused"] == 1
    # pimd read the rewritten report: it ordered the allowed group, and never the forbidden one
    log = guarded.routed.pimd.log()
    assert f"(*,{allowed})" in log and f"(*,{forbidden})" not in log


def test_igmpv2_reports_are_judged_one_group_each(guarded, clean):
    allowed, forbidden = G_R1.format(3), G_R2.format(3)
    clean.append(guarded.routed.join("r1", [allowed, forbidden], igmp=2))
    assert guarded.routed.flow(allowed, ["r1"], also=(forbidden,)) == {"r1": N, "r2": 0}
    assert guarded.routed.last_counts[forbidden] == {"r1": 0, "r2": 0}
    denied = guarded.denied()[("out0", R1, forbidden, None)]
    assert denied[0] == Reason.JOIN_REFUSED
    assert next(d for d in guarded.client.denied_joins() if str(d.group) == forbidden).version == 2


def test_a_source_specific_join_is_allowed_for_its_source_only(guarded, clean):
    clean += [guarded.routed.join("r1", [G_SSM_R2], source=SRC), guarded.routed.join("r2", [G_SSM_R2], source=SRC)]
    assert guarded.routed.flow(G_SSM_R2, ["r2"]) == {"r1": 0, "r2": N}
    assert guarded.denied()[("out0", R1, G_SSM_R2, SRC)][0] == Reason.JOIN_REFUSED


def test_an_interface_limit_holds(guarded, clean):
    first, second = G_R2.format(5), G_R2.format(6)
    # Groups of earlier tests that were left are forgotten after --leave-grace; the others stay for the
    # lab's long --group-timeout. So once the count is steady, room for exactly one more group is held.
    counts = [guarded.policies()["out1"].groups]

    def steady() -> bool:
        counts.append(guarded.policies()["out1"].groups)
        return counts[-1] == counts[-2]

    time.sleep(patience(0.5))
    wait_until(steady, patience(3), "out1's group count to settle", interval=patience(0.4))
    held = counts[-1]
    guarded.client.receiver_policy(IfacePolicy("out1", ReceiverMode.CLOSED, limit=held + 1))
    try:
        clean.append(guarded.routed.join("r2", [first]))
        wait_until(lambda: ("out1", first) in guarded.joined(), patience(10), f"{first} joined on out1")
        clean.append(guarded.routed.join("r2", [second]))
        assert guarded.routed.flow(first, ["r2"], also=(second,)) == {"r1": 0, "r2": N}
        assert guarded.routed.last_counts[second] == {"r1": 0, "r2": 0}
        assert guarded.denied()[("out1", R2, second, None)][0] == Reason.JOIN_LIMIT
        assert guarded.policies()["out1"].groups == held + 1
    finally:
        guarded.client.receiver_policy(IfacePolicy("out1", ReceiverMode.CLOSED))


def test_monitor_mode_delivers_and_counts(guarded, clean):
    group = G_R2.format(7)  # forbidden to r1
    guarded.client.receiver_policy(IfacePolicy("out0", ReceiverMode.MONITOR))
    try:
        before = guarded.counters("out0")
        clean.append(guarded.routed.join("r1", [group]))
        assert guarded.routed.flow(group, ["r1"]) == {"r1": N, "r2": 0}
        assert guarded.denied()[("out0", R1, group, None)][0] == Reason.JOIN_REFUSED
        grown = _since(before, guarded.counters("out0"))
        # Monitor counts what enforce would have done (a one-record report refused whole: dropped),
        # and the report went on unchanged: the receiver got the flow above.
        assert grown["refused"] >= 1 and grown.get("dropped", 0) >= 1
    finally:
        guarded.client.receiver_policy(IfacePolicy("out0", ReceiverMode.CLOSED))


def test_an_allowed_receiver_still_needs_an_authorized_sender(guarded, clean):
    before = guarded.reasons()
    clean.append(guarded.routed.join("r1", [G_NO_SENDER]))
    wait_until(lambda: ("out0", G_NO_SENDER) in guarded.joined(), patience(10), f"{G_NO_SENDER} joined on out0")
    clock = G_R1.format(8)
    clean.append(guarded.routed.join("r1", [clock]))
    assert guarded.routed.flow(clock, ["r1"], also=(G_NO_SENDER,)) == {"r1": N, "r2": 0}
    assert guarded.routed.last_counts[G_NO_SENDER] == {"r1": 0, "r2": 0}
    after = guarded.reasons()
    # N counted packets and the first ones sent while the flow was set up, every one unauthorized
    assert after.get(Reason.UNAUTHORIZED, 0) - before.get(Reason.UNAUTHORIZED, 0) >= N
