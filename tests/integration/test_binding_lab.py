"""Bound rules on real forwarded multicast: spoofers of an authorized source, on its LAN and beyond.

    s1   192.0.2.10, the real sender  -----+
                                           +--- in0 \\
    lan  192.0.2.10 too, another MAC:  ----+          router: musersd (the XDP filter on in0 and in1,
         a macvlan on s1's segment                    rules from its rule file), smcrouted --- out0 --- r1
    s2   192.0.2.70; sends as 192.0.2.10  ----- in1 /
         and 192.0.2.11 too

musersd runs as an operator runs it, its rules (bound with iface=, mac=, rpf
and learn) read from its rule file at start; the test reads its counters, its
rules (what a learning rule pinned, how often the sender moved) and its
denied table over protocol v2, and re-arms a learning rule with REARM. The
real sender and the spoofers send the same source, group and TTL and differ
only in a payload marker, so the receiver behind the router counts whose
packets the kernel forwarded; the filter's counters by reason must account
for every dropped one. The tests share one lab, one musersd and its counters
(starting them is the slow part in the emulated guest), so each test reads
deltas and has a group of its own.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import uuid
from collections import Counter

import pytest

from lab import netns
from lab.daemons import Musersd, write_key_file
from lab.netns import inside, patience, sh
from lab.topology import Lab, Route
from lab.traffic import PORT, TAG, Sender
from mauthcore.protocol.model import Mode, Reason
from mauthcore.rules import RuleKey, format_mac
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.router]  # the subject is what the router forwards

AUTH = "192.0.2.10"  # the authorized sender, on s1 (in0)
NEIGHBOUR = "192.0.2.11"  # an address of s1's subnet, spoofed from s2 (in1)
FAR = "192.0.2.70"  # s2's own address
G_MAC, G_IIF, G_RPF, G_LEARN, G_PREFIX, G_OPEN = (f"239.1.1.{i}" for i in range(1, 7))
TTL = 8
N = 5  # packets per flow: the emulated guest is slow, and every packet is counted exactly
BINDING = (Reason.WRONG_IIF, Reason.RPF_FAIL, Reason.WRONG_MAC)


def _mac(ns: str, iface: str) -> str:
    return json.loads(sh("ip", "-j", "link", "show", "dev", iface, ns=ns))[0]["address"]


class Tally:
    """Sockets on r1 joined to `groups`: datagrams counted by (source, group, payload marker)."""

    def __init__(self, lab: Lab, groups: list[str]):
        host = lab.receivers["r1"]
        self.socks: dict[socket.socket, str] = {}
        self.got: Counter = Counter()
        with inside(host.ns):
            for group in groups:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((group, PORT))
                mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(host.addrs[0]))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                s.setblocking(False)
                self.socks[s] = group

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select(list(self.socks), [], [], wait)
        for s in ready:
            while True:
                try:
                    data, (source, _) = s.recvfrom(2048)
                except BlockingIOError:
                    break
                if data.startswith(TAG):
                    self.got[(source, self.socks[s], data[len(TAG):].decode())] += 1
        return bool(ready)

    def collect(self, want: Counter) -> Counter:
        """Read until every flow of `want` arrived in full, then until the link is quiet; all counted so far."""
        def arrived() -> bool:
            self._read(patience(0.05))
            return not want - self.got

        wait_until(arrived, patience(5), f"the receiver to get {dict(want)}")
        while self._read(patience(0.05)):
            pass
        return self.got

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _send(sender: Sender, group: str, marker: str, n: int = N) -> None:
    sender.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
    for _ in range(n):
        sender.sock.sendto(TAG + marker.encode(), (group, PORT))


class Bound:
    """The shared lab: senders, the musersd client, and readings of the filter."""

    def __init__(self, lab: Lab, client, real: Sender, lan_spoofer: Sender, macs: dict[str, str]):
        self.lab, self.client, self.real, self.lan_spoofer, self.macs = lab, client, real, lan_spoofer, macs
        self.senders: dict[str, Sender] = {}

    def close(self) -> None:
        for sender in (self.lan_spoofer, *self.senders.values()):
            sender.sock.close()

    def far(self, source: str) -> Sender:
        """A sender on s2 (behind in1) with `source`."""
        if source not in self.senders:
            self.senders[source] = Sender(self.lab.senders["s2"].ns, source, iface="eth0")
        return self.senders[source]

    def reasons(self) -> dict[Reason, int]:
        return {c.reason: c.packets for c in self.client.counters().reasons}

    def delta(self, before: dict[Reason, int]) -> dict[Reason, int]:
        after = self.reasons()
        return {r: after.get(r, 0) - before.get(r, 0) for r in BINDING}

    def wait_delta(self, before: dict[Reason, int], want: dict[Reason, int]) -> None:
        full = {r: want.get(r, 0) for r in BINDING}
        wait_until(lambda: self.delta(before) == full, patience(5), f"the filter to count {full}")

    def rule(self, source: str, group: str):
        key = RuleKey.make(source, group)
        return next(e for e in self.client.list_all() if e.rule.key == key)

    def denied(self) -> dict[tuple[str, str], tuple[Reason, int]]:
        return {(str(d.source), str(d.group)): (d.reason, d.packets) for d in self.client.denied_all()}

    def offenders(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(interface, MAC) of the last packet each pair's binding dropped, as DENIED reports them."""
        return {(str(d.source), str(d.group)): (d.iface, format_mac(d.mac)) for d in self.client.denied_all()
                if d.reason.binding}


@pytest.fixture(scope="module")
def bound(bpffs):
    routes = ([Route(g, AUTH) for g in (G_MAC, G_IIF, G_RPF, G_LEARN, G_PREFIX, G_OPEN)]
              + [Route(G_PREFIX, FAR), Route(G_OPEN, FAR)])
    with Lab(senders={"s1": [AUTH], "s2": [FAR]}, routes=routes, forwarding=True) as lab:
        s1, s2, r1 = lab.senders["s1"], lab.senders["s2"], lab.receivers["r1"]
        lan = f"{lab.tag}-lan"  # swept with the lab's namespaces if this run dies
        netns.add(lan)
        try:
            # The LAN spoofer: a host of its own on s1's segment (a macvlan on s1's link), another MAC.
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=lan)
            sh("ip", "link", "add", "link", s1.iface, "name", "lan0", "type", "macvlan", "mode", "bridge", ns=s1.ns)
            sh("ip", "link", "set", "lan0", "netns", lan, ns=s1.ns)
            sh("ip", "addr", "add", f"{AUTH}/26", "dev", "lan0", ns=lan)
            sh("ip", "link", "set", "lan0", "up", ns=lan)
            sh("ip", "route", "add", "224.0.0.0/4", "dev", "lan0", ns=lan)
            # Behind in1, s2 also holds s1's addresses, as a spoofer there would.
            for address in (AUTH, NEIGHBOUR):
                sh("ip", "addr", "add", f"{address}/32", "dev", s2.iface, ns=s2.ns)
            # The kernel would forward NEIGHBOUR's group arriving on in1: only the filter stands in the way.
            for group in (G_PREFIX, G_OPEN):
                sh("smcroutectl", "-u", str(lab.smcroute_sock), "add", s2.router_iface, NEIGHBOUR, group,
                   r1.router_iface, ns=lab.router.ns)
                wait_until(lambda g=group: any(f"({NEIGHBOUR},{g})" in line for line in lab.kernel_mroutes()),
                           patience(5), f"the kernel's route for ({NEIGHBOUR}, {group})")
            macs = {"real": _mac(s1.ns, s1.iface), "spoof": _mac(lan, "lan0")}
            assert macs["real"] != macs["spoof"]
            conf = lab.workdir / "mauth.conf"
            conf.write_text(
                "# the binding lab\n"
                f"{AUTH} {G_MAC} {TTL} iface={s1.router_iface} mac={macs['real']}\n"
                f"{AUTH} {G_IIF} {TTL} iface={s1.router_iface}\n"
                f"{AUTH} {G_RPF} {TTL} rpf\n"
                f"{AUTH} {G_LEARN} {TTL} learn\n"
                f"192.0.2.0/24 {G_PREFIX} {TTL} rpf\n"
                f"192.0.2.0/24 {G_OPEN} {TTL}\n")  # unbound: in1 checks its reverse path (--rpf-iface)
            key = write_key_file(lab.workdir / "router.key")
            pin_dir = bpffs / f"bind-{uuid.uuid4().hex[:8]}"
            musersd = Musersd(lab, pin_dir, key_file=key,
                              extra=["--config", str(conf), "--rpf-iface", s2.router_iface]).start()
            client = musersd.client()
            bound = Bound(lab, client, lab.sender(AUTH), Sender(lan, AUTH, iface="lan0"), macs)
            try:
                yield bound
            finally:
                bound.close()
                client.close()
                assert musersd.stop() == 0
        finally:
            netns.delete(lan)


def test_a_spoofer_on_the_senders_lan_is_dropped_by_the_mac_binding(bound):
    """Same source, group and TTL, same segment, same interface: only the MAC tells them apart."""
    rx = Tally(bound.lab, [G_MAC])
    try:
        before, denied = bound.reasons(), bound.denied()
        _send(bound.lan_spoofer, G_MAC, "spoof")
        _send(bound.real, G_MAC, "real")
        assert rx.collect(Counter({(AUTH, G_MAC, "real"): N})) == Counter({(AUTH, G_MAC, "real"): N})
        bound.wait_delta(before, {Reason.WRONG_MAC: N})
        assert bound.rule(AUTH, G_MAC).packets == N
        was = denied.get((AUTH, G_MAC), (Reason.WRONG_MAC, 0))[1]
        assert bound.denied()[(AUTH, G_MAC)] == (Reason.WRONG_MAC, was + N)
        assert bound.offenders()[(AUTH, G_MAC)] == ("in0", bound.macs["spoof"])  # who it was, and where
    finally:
        rx.close()


def test_a_spoofer_behind_another_interface_fails_the_iface_binding_and_rpf(bound):
    """192.0.2.10 sent from s2 arrives on in1: wrong_iif for a rule bound to in0, rpf_fail for one with rpf
    (it routes back through in0); the real sender's packets pass both. The kernel would not forward the
    spoofed ones either (its route for the pair comes in on in0), so the filter's counters, exact, are what
    shows the filter dropped them first (the rpf test below has a spoofer the kernel would forward)."""
    rx = Tally(bound.lab, [G_IIF, G_RPF])
    spoofer = bound.far(AUTH)
    try:
        before = bound.reasons()
        for group in (G_IIF, G_RPF):
            _send(spoofer, group, "spoof")
            _send(bound.real, group, "real")
        want = Counter({(AUTH, G_IIF, "real"): N, (AUTH, G_RPF, "real"): N})
        assert rx.collect(want) == want
        bound.wait_delta(before, {Reason.WRONG_IIF: N, Reason.RPF_FAIL: N})
        assert (bound.rule(AUTH, G_IIF).packets, bound.rule(AUTH, G_RPF).packets) == (N, N)
        denied = bound.denied()
        assert (denied[(AUTH, G_IIF)][0], denied[(AUTH, G_RPF)][0]) == (Reason.WRONG_IIF, Reason.RPF_FAIL)
        offenders = bound.offenders()
        assert offenders[(AUTH, G_IIF)][0] == offenders[(AUTH, G_RPF)][0] == "in1"
    finally:
        rx.close()


def test_a_learning_rule_pins_its_first_sender_until_rearmed(bound):
    rx = Tally(bound.lab, [G_LEARN])
    key = RuleKey.make(AUTH, G_LEARN)
    real_mac, spoof_mac = (bytes.fromhex(bound.macs[who].replace(":", "")) for who in ("real", "spoof"))
    try:
        assert bound.rule(AUTH, G_LEARN).learned is None
        before = bound.reasons()
        _send(bound.real, G_LEARN, "real", 1)
        wait_until(lambda: bound.rule(AUTH, G_LEARN).learned == ("in0", real_mac), patience(5),
                   "the rule to learn the real sender")
        _send(bound.lan_spoofer, G_LEARN, "spoof")
        _send(bound.real, G_LEARN, "real")
        want = Counter({(AUTH, G_LEARN, "real"): N + 1})
        assert rx.collect(want) == want
        bound.wait_delta(before, {Reason.WRONG_MAC: N})
        entry = bound.rule(AUTH, G_LEARN)
        assert (entry.learned, entry.moved, entry.packets) == (("in0", real_mac), N, N + 1)

        # REARM forgets the pair and the moves: the next sender pins, whoever it is.
        bound.client.rearm(key)
        entry = bound.rule(AUTH, G_LEARN)
        assert (entry.learned, entry.moved) == (None, 0)
        before = bound.reasons()
        _send(bound.lan_spoofer, G_LEARN, "spoof", 1)
        wait_until(lambda: bound.rule(AUTH, G_LEARN).learned == ("in0", spoof_mac), patience(5),
                   "the rule to learn the second MAC")
        _send(bound.real, G_LEARN, "real")
        _send(bound.lan_spoofer, G_LEARN, "spoof")
        want = Counter({(AUTH, G_LEARN, "real"): N + 1, (AUTH, G_LEARN, "spoof"): N + 1})
        assert rx.collect(want) == want
        bound.wait_delta(before, {Reason.WRONG_MAC: N})
        entry = bound.rule(AUTH, G_LEARN)
        assert (entry.learned, entry.moved, entry.packets) == (("in0", spoof_mac), N, 2 * N + 2)
    finally:
        rx.close()


def test_rpf_drops_a_source_that_routes_back_through_another_interface(bound):
    """A prefix rule with rpf: 192.0.2.10 (from s1, via in0) and 192.0.2.70 (from s2, via in1) route back
    the way they came and are forwarded; 192.0.2.11 from s2 routes back through in0 and is dropped,
    though the kernel has a route that would forward it from in1."""
    rx = Tally(bound.lab, [G_PREFIX])
    try:
        before, denied = bound.reasons(), bound.denied()
        _send(bound.far(NEIGHBOUR), G_PREFIX, "spoof")
        _send(bound.real, G_PREFIX, "real")
        _send(bound.far(FAR), G_PREFIX, "real")
        want = Counter({(AUTH, G_PREFIX, "real"): N, (FAR, G_PREFIX, "real"): N})
        assert rx.collect(want) == want
        bound.wait_delta(before, {Reason.RPF_FAIL: N})
        assert bound.rule("192.0.2.0/24", G_PREFIX).packets == 2 * N
        assert (NEIGHBOUR, G_PREFIX) not in denied
        assert bound.denied()[(NEIGHBOUR, G_PREFIX)] == (Reason.RPF_FAIL, N)
    finally:
        rx.close()


def test_monitor_mode_counts_a_wrong_mac_and_forwards_it(bound):
    rx = Tally(bound.lab, [G_MAC])
    try:
        assert bound.client.mode("monitor") is Mode.MONITOR
        before = bound.reasons()
        _send(bound.lan_spoofer, G_MAC, "spoof")
        _send(bound.real, G_MAC, "real")
        want = Counter({(AUTH, G_MAC, "real"): N, (AUTH, G_MAC, "spoof"): N})
        assert rx.collect(want) == want
        bound.wait_delta(before, {Reason.WRONG_MAC: N})
    finally:
        assert bound.client.mode("enforce") is Mode.ENFORCE
        rx.close()


def test_an_interface_checking_every_rules_reverse_path_stops_a_spoofer_of_an_unbound_rule(bound):
    """musersd --rpf-iface in1: the subnet's unbound rule holds for s2's own address there, not for an
    address of s1's subnet sent from s2 (which the kernel would forward), and in0 is not checked."""
    rx = Tally(bound.lab, [G_OPEN])
    spoofer, own = bound.far(NEIGHBOUR), bound.far(FAR)
    try:
        before = bound.reasons()
        _send(spoofer, G_OPEN, "spoof")
        _send(own, G_OPEN, "own")
        _send(bound.real, G_OPEN, "real")
        want = Counter({(FAR, G_OPEN, "own"): N, (AUTH, G_OPEN, "real"): N})
        assert rx.collect(want) == want  # nothing of the spoofer's
        bound.wait_delta(before, {Reason.RPF_FAIL: N})
        assert bound.denied()[(NEIGHBOUR, G_OPEN)][0] == Reason.RPF_FAIL
    finally:
        rx.close()
