"""IPv6 multicast on real traffic: the lab's router, then the filter's IPv6 policy.

sender ns -> router ns (the XDP filter on the internal links; kernel IPv6
multicast routing driven by smcrouted in the router tier) -> receiver ns, all
on documentation addresses (2001:db8::/32) and groups that exist only inside
the lab.

The first tests (router tier) run without the filter: they prove the lab
itself forwards IPv6 multicast (exact counts, the hop limit decremented on the
way, nothing with hop limit 1). The policy tests see what the filter passed
where it arrives, on the router (a socket joined on the guarded link), with
the hop limit it was sent with. The rest repeat the IPv4 lab checks (test_lab_policy, test_prefix_rules,
test_rate_limits, the SAP exception, musersd over protocol v2) over IPv6, and
put extension-header chains on the wire with scapy. Counters are compared
exactly, but only for the reasons our traffic moves: the hosts' own MLD and
neighbour discovery move "link_local" and "not_multicast" at will.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading
import time

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLQuery,
    ICMPv6MLReport,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    PadN,
    RouterAlert,
)
from scapy.layers.l2 import Ether

from lab.daemons import Musersd, mauthctl, write_key_file
from lab.netns import LabError, inside, patience, sh
from lab.topology import Lab, Route, twin6
from lab.traffic import PORT, TAG, Receiver, Sender
from mauthcore.constants import SAP_PORT
from mauthcore.protocol.model import Reason
from mauthcore.rules import Rule
from musersd.maps import BURST_NS, NSEC
from musersd.policy import IPV6_MAX_EXT
from tests.integration.conftest import (
    AUTH2_6 as AUTH2,
)
from tests.integration.conftest import (
    AUTH6 as AUTH,
)
from tests.integration.conftest import (
    GROUP6 as GROUP,
)
from tests.integration.conftest import (
    GROUP6_2 as GROUP2,
)
from tests.integration.conftest import (
    GROUP6_3 as GROUP3,
)
from tests.integration.conftest import (
    ROGUE6 as ROGUE,
)
from tests.integration.conftest import (
    guard,
)
from tests.support.waiting import poll_for, wait_until

pytestmark = pytest.mark.integration

N = 40


def _delta(before: dict, after: dict) -> dict[str, int]:
    return {r: after[r]["packets"] - before[r]["packets"] for r in after}


def _denied(dp) -> dict:
    return {(str(d.source), str(d.group)): d for d in dp.denied()}


# ------------------------------------------------------------------ the lab alone


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_the_lab_forwards_ipv6_multicast_with_the_hop_limit_decremented(lab6):
    """No filter: (S,G) routes in the kernel, N datagrams in, N out, hop limit one less; hop limit 1 stays."""
    lab = lab6
    routes = lab.kernel_mroutes()
    assert any(f"({AUTH},{GROUP})" in line and "Iif: in0" in line and "out0" in line for line in routes), routes
    rx = lab.receiver([GROUP, GROUP2])
    tx = lab.sender(AUTH)
    tx.send(GROUP, N, ttl=8)
    tx.send(GROUP, N, ttl=2)
    tx.send(GROUP, N, ttl=1)  # link-local reach only: the router must not forward it
    tx.send(GROUP2, N, ttl=1)
    rx.drain()
    assert rx.got(AUTH, GROUP) == 2 * N
    assert rx.ttls(AUTH, GROUP) == {7: N, 1: N}
    assert rx.got(AUTH, GROUP2) == 0


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_ipv6_star_g_routes_resolve_and_ipv4_keeps_working_beside_them(tmp_path):
    """A (*,G) IPv6 route becomes an (S,G) route on the first packet; IPv4 forwards in the same lab."""
    star = "ff0e::db8:44"
    with Lab(senders={"s1": ["192.0.2.10"]}, routes=[Route(star), Route("239.1.1.4", "192.0.2.10")],
             ipv6=True, forwarding=True) as lab:
        source = lab.senders["s1"].addrs6[0]
        assert source == twin6("192.0.2.10") == "2001:db8::a"
        rx = lab.receiver([star, "239.1.1.4"])
        tx4, tx6 = lab.sender("192.0.2.10"), lab.sender(source)
        tx6.send(star, 1, ttl=4)  # resolves the route (this first packet may be lost)
        wait_until(lambda: any(f"({source},{star})" in line for line in lab.kernel_mroutes()), patience(10),
                   f"the kernel's route for ({source},{star})", interval=0.05)
        rx.reset()
        tx6.send(star, N, ttl=4)
        tx4.send("239.1.1.4", N, ttl=4)
        rx.drain()
        assert rx.got(source, star) == N and rx.ttls(source, star) == {3: N}
        assert rx.got("192.0.2.10", "239.1.1.4") == N and rx.ttls("192.0.2.10", "239.1.1.4") == {3: N}
    # An IPv6 route needs an IPv6 lab, and a route's group must be multicast.
    with pytest.raises(LabError, match="needs Lab\\(ipv6=True\\)"):
        Lab(routes=[Route(GROUP, "192.0.2.10")], workdir=tmp_path).smcroute_conf()
    with pytest.raises(LabError, match="mixes IPv4 and IPv6"):
        Lab(routes=[Route(GROUP, "192.0.2.10")], workdir=tmp_path, ipv6=True).smcroute_conf()
    with pytest.raises(LabError, match="not a multicast group"):
        Lab(routes=[Route("2001:db8::99", AUTH)], workdir=tmp_path, ipv6=True).smcroute_conf()


# ------------------------------------------------------------------ the policy


def test_policy_holds_on_ipv6_traffic_arriving_at_the_router(guarded6):
    lab, dp = guarded6
    dp.add_rule(Rule.make(AUTH, GROUP, 8))
    dp.add_rule(Rule.make(AUTH2, GROUP2, 2))
    rx = lab.receiver([GROUP, GROUP2, GROUP3])
    auth, auth2, rogue = lab.sender(AUTH), lab.sender(AUTH2), lab.sender(ROGUE)
    before = dp.counters()

    auth.send(GROUP, N, ttl=8)  # at its max: delivered
    auth.send(GROUP, N, ttl=2)  # below: delivered
    auth.send(GROUP, N, ttl=9)  # over: dropped
    auth2.send(GROUP2, N, ttl=2)  # at max 2: delivered
    auth2.send(GROUP2, N, ttl=3)  # over: dropped
    rogue.send(GROUP, N, ttl=2)  # unknown sender: dropped
    auth.send(GROUP3, N, ttl=2)  # authorized sender, another group: dropped
    auth2.send(GROUP, N, ttl=2)  # the sender of another group: dropped
    rx.drain()

    assert rx.got(AUTH, GROUP) == 2 * N and rx.ttls(AUTH, GROUP) == {8: N, 2: N}  # as they arrived
    assert rx.got(AUTH2, GROUP2) == N
    assert (rx.got(ROGUE, GROUP), rx.got(AUTH, GROUP3), rx.got(AUTH2, GROUP)) == (0, 0, 0)
    delta = _delta(before, dp.counters())
    assert (delta["passed"], delta["ttl"], delta["unauthorized"]) == (3 * N, 2 * N, 3 * N)
    assert (delta["rate"], delta["malformed"], delta["sap_local"], delta["mld"]) == (0, 0, 0, 0)
    assert dp.get_rule((AUTH, GROUP)).packets == 2 * N
    assert dp.get_rule((AUTH2, GROUP2)).packets == N
    denied = _denied(dp)
    assert denied[(ROGUE, GROUP)].reason == Reason.UNAUTHORIZED and denied[(ROGUE, GROUP)].packets == N
    assert denied[(AUTH, GROUP3)].reason == Reason.UNAUTHORIZED
    assert denied[(AUTH, GROUP)].reason == Reason.TTL and denied[(AUTH, GROUP)].last_ttl == 9


def test_link_scope_multicast_and_unicast_are_untouched(guarded6):
    """No rules at all: ff02::/ff12:: reach the router itself and unicast is forwarded, all counted as passed."""
    lab, dp = guarded6
    s1, r1 = lab.senders["s1"], lab.receivers["r1"]
    with inside(r1.ns):
        uni = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        uni.bind((r1.addrs6[0], 6000))
        uni.settimeout(2)
    # The router listens on its internal link for two link-scope groups (permanent and transient).
    link_groups = ["ff02::db8:1", "ff12::db8:1"]
    here = Receiver(lab.router.ns, s1.router_addr, link_groups, iface=s1.router_iface)
    before = dp.counters()
    rogue = lab.sender(ROGUE)
    for _ in range(10):
        rogue.sock.sendto(b"unicast", (r1.addrs6[0], 6000))
    for g in link_groups:
        rogue.send(g, 10, ttl=1)
    rogue.send("ff02::db8:1", 10, ttl=64)  # a link-scope group never leaves the link, whatever its hop limit
    got_uni = sum(1 for _ in range(10) if uni.recv(100))
    uni.close()
    here.drain()
    here.close()
    assert got_uni == 10
    assert here.got(ROGUE, "ff02::db8:1") == 20 and here.got(ROGUE, "ff12::db8:1") == 10
    delta = _delta(before, dp.counters())
    assert delta["not_multicast"] >= 10
    assert delta["link_local"] >= 30
    assert (delta["unauthorized"], delta["ttl"], delta["malformed"]) == (0, 0, 0)


def test_rule_changes_take_effect_immediately(guarded6):
    lab, dp = guarded6
    rx = lab.receiver([GROUP])
    rogue = lab.sender(ROGUE)
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == 0
    dp.add_rule(Rule.make(ROGUE, GROUP, 4))
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == N
    dp.replace_rule(Rule.make(ROGUE, GROUP, 3))
    rogue.send(GROUP, N, ttl=4)  # now one hop over its max
    assert rx.drain()[(ROGUE, GROUP)] == N
    rogue.send(GROUP, N, ttl=3)
    assert rx.drain()[(ROGUE, GROUP)] == 2 * N
    dp.remove_rule((ROGUE, GROUP))
    rogue.send(GROUP, N, ttl=2)
    assert rx.drain()[(ROGUE, GROUP)] == 2 * N
    assert dp.get_rule((ROGUE, GROUP)) is None


def test_monitor_mode_delivers_everything_and_counts_would_be_drops(guarded6):
    lab, dp = guarded6
    dp.add_rule(Rule.make(AUTH, GROUP, 8))
    dp.set_mode("monitor")
    rx = lab.receiver([GROUP, GROUP3])
    before = dp.counters()
    lab.sender(ROGUE).send(GROUP, N, ttl=2)
    lab.sender(AUTH).send(GROUP, N, ttl=20)
    lab.sender(AUTH).send(GROUP3, N, ttl=2)
    lab.sender(AUTH).send(GROUP, N, ttl=8)
    rx.drain()
    assert (rx.got(ROGUE, GROUP), rx.got(AUTH, GROUP), rx.got(AUTH, GROUP3)) == (N, 2 * N, N)
    assert rx.ttls(AUTH, GROUP) == {20: N, 8: N}  # nothing rewritten
    delta = _delta(before, dp.counters())
    assert (delta["unauthorized"], delta["ttl"], delta["passed"]) == (2 * N, N, N)
    dp.set_mode("enforce")
    rx.reset()
    lab.sender(ROGUE).send(GROUP, N, ttl=2)
    lab.sender(AUTH).send(GROUP, N, ttl=8)
    rx.drain()
    assert (rx.got(ROGUE, GROUP), rx.got(AUTH, GROUP)) == (0, N)


# ------------------------------------------------------------------ prefixes and rates

# s1's link 2001:db8:0:0::/64 (AUTH, AUTH2, ROGUE); s2's link 2001:db8:0:1::/64: two hosts.
NET = "2001:db8:0:1::/64"
NET_A, NET_B = twin6("192.0.2.70"), twin6("192.0.2.71")  # 2001:db8:0:1::46, ::47
SCOPE = "ff15::/16"  # transient, site-local scope
IN_SCOPE = ["ff15::db8:1", "ff15::1:2", "ff15:0:0:1::7"]
PAST_SCOPE = ["ff18::db8:1", "ff1e::db8:1", GROUP]  # organization scope, global scope


@pytest.fixture
def wide6(pin_dir):
    """Two sender links, (S,G) routes for every pair the prefix and rate tests send, the filter on both links."""
    hosts = {"s1": ["192.0.2.10", "192.0.2.11", "192.0.2.12"], "s2": ["192.0.2.70", "192.0.2.71"]}
    sources = [AUTH, AUTH2, ROGUE, NET_A, NET_B]
    routes = [Route(g, s) for s in sources for g in (GROUP, GROUP2, GROUP3, *IN_SCOPE, *PAST_SCOPE[:2])]
    with Lab(senders=hosts, routes=routes, ipv6=True) as lab:
        assert lab.senders["s2"].addrs6 == [NET_A, NET_B]
        yield from guard(lab, pin_dir)


def test_source_prefix_lets_every_host_of_the_subnet_through_to_its_group_only(wide6):
    lab, dp = wide6
    dp.add_rule(Rule.make(NET, GROUP, 8))
    dp.add_rule(Rule.make(NET_B, GROUP, 2))  # an exact rule inside the prefix: it wins
    rx = lab.receiver([GROUP, GROUP2])
    before = dp.counters()
    for host in (NET_A, NET_B, AUTH):
        s = lab.sender(host)
        s.send(GROUP, N, ttl=2)
        s.send(GROUP2, N, ttl=2)  # no rule for the subnet to GROUP2
    lab.sender(NET_A).send(GROUP, N, ttl=9)  # over the prefix's max
    lab.sender(NET_B).send(GROUP, N, ttl=4)  # within the prefix's 8, over its own exact 2
    rx.drain()

    assert [rx.got(h, GROUP) for h in (NET_A, NET_B, AUTH)] == [N, N, 0]
    assert [rx.got(h, GROUP2) for h in (NET_A, NET_B, AUTH)] == [0, 0, 0]
    assert dp.get_rule((NET, GROUP)).packets == N
    assert dp.get_rule((NET_B, GROUP)).packets == N
    delta = _delta(before, dp.counters())
    assert (delta["passed"], delta["ttl"], delta["unauthorized"]) == (2 * N, 2 * N, 4 * N)
    denied = _denied(dp)
    assert denied[(AUTH, GROUP)].reason == Reason.UNAUTHORIZED
    assert denied[(NET_A, GROUP)].reason == Reason.TTL and denied[(NET_B, GROUP)].reason == Reason.TTL


def test_group_prefix_lets_a_trusted_source_send_to_every_group_of_the_scope(wide6):
    lab, dp = wide6
    dp.add_rule(Rule.make(NET_A, SCOPE, 16))
    rx = lab.receiver([*IN_SCOPE, *PAST_SCOPE])
    trusted = lab.sender(NET_A)
    for g in (*IN_SCOPE, *PAST_SCOPE):
        trusted.send(g, N, ttl=16)
    lab.sender(AUTH).send(IN_SCOPE[0], N, ttl=4)  # the scope is NET_A's only
    rx.drain()

    assert [rx.got(NET_A, g) for g in IN_SCOPE] == [N, N, N]
    assert [rx.got(NET_A, g) for g in PAST_SCOPE] == [0, 0, 0]
    assert rx.got(AUTH, IN_SCOPE[0]) == 0
    assert dp.get_rule((NET_A, SCOPE)).packets == 3 * N

    dp.remove_rule((NET_A, SCOPE))  # closes the whole scope at once
    rx.reset()
    trusted.send(IN_SCOPE[1], N, ttl=16)
    rx.drain()
    assert rx.got(NET_A, IN_SCOPE[1]) == 0


def _send_together(lab, flows) -> dict:
    """Send every flow (source, group, count, rate) at once, one thread each; return durations by flow."""
    senders = {f: lab.sender(f[0]) for f in flows}
    took: dict = {}

    def run(flow):
        source, group, count, rate = flow
        t0 = time.monotonic()
        senders[flow].send(group, count, ttl=8, rate=rate)
        took[flow] = time.monotonic() - t0

    threads = [threading.Thread(target=run, args=(f,)) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took


def test_packet_rate_cuts_a_fast_ipv6_sender_and_spares_a_slow_one(wide6):
    """As test_rate_limits: the fast sender gets its rate plus the 100 ms burst (within 15 %), the slow one all."""
    lab, dp = wide6
    dp.add_rule(Rule.make(AUTH, GROUP, 8, pps=500))
    dp.add_rule(Rule.make(NET_A, GROUP2, 8, pps=500))
    rx = lab.receiver([GROUP, GROUP2])
    before = dp.counters()
    fast, slow = (AUTH, GROUP, 6000, 2000), (NET_A, GROUP2, 600, 200)
    took = _send_together(lab, [fast, slow])
    rx.drain()
    delta = _delta(before, dp.counters())

    want = 500 * took[fast] + 500 * BURST_NS / NSEC
    got = rx.got(AUTH, GROUP)
    assert abs(got - want) <= 0.15 * want, f"{got} delivered of 6000 in {took[fast]:.2f} s; expected about {want:.0f}"
    assert rx.got(NET_A, GROUP2) == 600
    assert dp.get_rule((AUTH, GROUP)).packets == got
    assert delta["rate"] == 6000 - got
    assert delta["passed"] == got + 600
    denied = _denied(dp)
    assert denied[(AUTH, GROUP)].reason == Reason.RATE and denied[(AUTH, GROUP)].packets == 6000 - got
    assert (NET_A, GROUP2) not in denied


# ------------------------------------------------------------------ crafted frames on the wire


def _mac(ns: str, iface: str) -> str:
    return json.loads(sh("ip", "-j", "link", "show", iface, ns=ns))[0]["address"]


def _multicast_mac(group: str) -> str:
    """RFC 2464 section 7: 33:33 and the group's last 32 bits."""
    tail = ipaddress.IPv6Address(group).packed[-4:]
    return "33:33:" + ":".join(f"{b:02x}" for b in tail)


class Wire:
    """A raw link-layer socket on a sender host's link: frames built with scapy go out exactly as built."""

    def __init__(self, lab: Lab, role: str = "s1"):
        host = lab.senders[role]
        self.src_mac = _mac(host.ns, host.iface)
        with inside(host.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self.sock.bind((host.iface, 0))

    def frame(self, source: str, group: str, hlim: int, *layers):
        """Ether / IPv6 / layers..., addressed from `source` to `group`."""
        pkt = Ether(src=self.src_mac, dst=_multicast_mac(group)) / IPv6(src=source, dst=group, hlim=hlim)
        for layer in layers:
            pkt = pkt / layer
        return pkt

    def send(self, frame, count: int = 1) -> None:
        data = bytes(frame)
        for _ in range(count):
            self.sock.send(data)

    def close(self) -> None:
        self.sock.close()


def _udp() -> UDP:
    return UDP(sport=40000, dport=PORT) / (TAG + b"\0" * 24)


def _dest_opts(n: int) -> list:
    return [IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]) for _ in range(n)]


def _wait_counted(dp, before: dict, reason: str, want: int, timeout: float = 5.0) -> dict:
    """Counters once `reason` moved by `want` (or the timeout passed): frames are judged asynchronously."""
    seen = {}

    def counted() -> bool:
        seen["after"] = dp.counters()
        return seen["after"][reason]["packets"] - before[reason]["packets"] >= want

    poll_for(counted, patience(timeout), interval=0.02)
    return _delta(before, seen["after"])


def test_extension_header_chains_are_walked_to_the_upper_layer(guarded6):
    """Hop-by-hop + destination options before UDP: judged by the rule like plain UDP, and delivered."""
    lab, dp = guarded6
    dp.add_rule(Rule.make(AUTH, GROUP, 8))
    rx = lab.receiver([GROUP])
    wire = Wire(lab)
    try:
        hbh = IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
        before = dp.counters()
        wire.send(wire.frame(AUTH, GROUP, 8, hbh, IPv6ExtHdrDestOpt(), _udp()), N)
        wire.send(wire.frame(AUTH, GROUP, 8, hbh, *_dest_opts(IPV6_MAX_EXT - 1), _udp()), N)  # at the limit
        wire.send(wire.frame(AUTH, GROUP, 9, hbh, IPv6ExtHdrDestOpt(), _udp()), N)  # over the max hop limit
        wire.send(wire.frame(ROGUE, GROUP, 2, hbh, IPv6ExtHdrDestOpt(), _udp()), N)  # no rule
        rx.drain()
        delta = _wait_counted(dp, before, "unauthorized", N)
    finally:
        wire.close()
    assert rx.got(AUTH, GROUP) == 2 * N and rx.ttls(AUTH, GROUP) == {8: 2 * N}
    assert rx.got(ROGUE, GROUP) == 0
    assert (delta["passed"], delta["ttl"], delta["unauthorized"], delta["malformed"]) == (2 * N, N, N, 0)
    assert dp.get_rule((AUTH, GROUP)).packets == 2 * N


def test_chains_that_cannot_be_walked_are_dropped_as_malformed(guarded6):
    """Too many extension headers, a header past the payload, a header cut by the frame's end, a frame
    shorter than its payload length, hop-by-hop after another header: dropped and counted "malformed",
    even from an authorized sender."""
    lab, dp = guarded6
    dp.add_rule(Rule.make(AUTH, GROUP, 8))
    rx = lab.receiver([GROUP])
    wire = Wire(lab)
    hbh = IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
    too_deep = wire.frame(AUTH, GROUP, 8, hbh, *_dest_opts(IPV6_MAX_EXT), _udp())
    # Payload length consistent with the frame, but the destination options claim 88 bytes of 8.
    past_payload = wire.frame(AUTH, GROUP, 8, hbh, IPv6ExtHdrDestOpt(len=10, nh=59))
    whole = bytes(wire.frame(AUTH, GROUP, 8, hbh, IPv6ExtHdrDestOpt(), _udp()))
    cut = whole[:14 + 40 + 12]  # the frame ends inside the destination options
    # Every header inside the frame, but the payload length claims 100 bytes more than it carries.
    overlong = whole[:18] + struct.pack("!H", len(whole) - 14 - 40 + 100) + whole[20:]
    hbh_second = wire.frame(AUTH, GROUP, 8, IPv6ExtHdrDestOpt(), hbh, _udp())
    frames = (too_deep, past_payload, cut, overlong, hbh_second)
    try:
        before = dp.counters()
        for frame in frames:
            wire.send(frame, N)
        rx.drain()
        delta = _wait_counted(dp, before, "malformed", len(frames) * N)
        assert rx.got(AUTH, GROUP) == 0
        assert (delta["malformed"], delta["passed"], delta["unauthorized"], delta["ttl"]) == (len(frames) * N, 0, 0, 0)
        assert dp.get_rule((AUTH, GROUP)).packets == 0

        # The too-deep chain is a packet the kernel forwards and the receiver takes:
        # in monitor mode it arrives, still counted as malformed.
        dp.set_mode("monitor")
        before = dp.counters()
        wire.send(too_deep, N)
        rx.drain()
        delta = _wait_counted(dp, before, "malformed", N)
    finally:
        wire.close()
    assert rx.got(AUTH, GROUP) == N
    assert (delta["malformed"], delta["passed"]) == (N, 0)


def test_mld_with_hop_limit_1_passes_and_other_icmpv6_to_a_group_does_not(guarded6):
    """MLD to a routable group (MLDv1 reports go to the group itself) from a host without a rule passes
    as "mld" with hop limit 1; with a larger hop limit, or another ICMPv6 type, it is judged as any packet."""
    lab, dp = guarded6
    wire = Wire(lab)
    alert = IPv6ExtHdrHopByHop(options=[RouterAlert()])
    try:
        before = dp.counters()
        wire.send(wire.frame(ROGUE, GROUP3, 1, alert, ICMPv6MLReport(mladdr=GROUP3)), N)
        wire.send(wire.frame(ROGUE, GROUP3, 1, alert, ICMPv6MLQuery(mladdr=GROUP3)), N)
        wire.send(wire.frame(ROGUE, GROUP3, 2, alert, ICMPv6MLReport(mladdr=GROUP3)), N)  # hop limit 2
        wire.send(wire.frame(ROGUE, GROUP3, 1, ICMPv6EchoRequest()), N)  # not MLD
        delta = _wait_counted(dp, before, "unauthorized", 2 * N)
        delta = _wait_counted(dp, before, "mld", 2 * N)
    finally:
        wire.close()
    assert (delta["mld"], delta["unauthorized"], delta["passed"], delta["malformed"]) == (2 * N, 2 * N, 0, 0)


# ------------------------------------------------------------------ SAP


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_ipv6_sap_from_a_sender_without_a_rule_stays_on_the_router(guarded6):
    """SAP to ff0e::2:7ffe and ff05::2:7ffe from ROGUE: hop limit set to 1, heard on the router, not
    forwarded (the router has a forwarding route for it); with a rule it is forwarded like any flow."""
    lab, dp = guarded6
    s1, r1 = lab.senders["s1"], lab.receivers["r1"]
    sap_groups = ["ff0e::2:7ffe", "ff05::2:7ffe"]
    # smcrouted of this lab has no route for these flows: add them through its control socket.
    for g in sap_groups:
        sh("smcroutectl", "-u", str(lab.smcroute_sock), "add", s1.router_iface, ROGUE, g, r1.router_iface,
           ns=lab.router.ns)
    outside = Receiver(r1.ns, r1.addrs[0], sap_groups, port=SAP_PORT, iface=r1.iface)
    router = Receiver(lab.router.ns, s1.router_addr, sap_groups, port=SAP_PORT, iface=s1.router_iface)
    rogue = Sender(s1.ns, ROGUE, port=SAP_PORT, iface=s1.iface)
    try:
        before = dp.counters()
        for g in sap_groups:
            rogue.send(g, 5, ttl=255)
        router.drain()
        outside.drain()
        delta = _delta(before, dp.counters())
        assert [router.got(ROGUE, g) for g in sap_groups] == [5, 5]
        assert [router.ttls(ROGUE, g) for g in sap_groups] == [{1: 5}, {1: 5}]  # rewritten on the way in
        assert [outside.got(ROGUE, g) for g in sap_groups] == [0, 0]
        assert (delta["sap_local"], delta["unauthorized"], delta["passed"]) == (10, 0, 0)
        assert (ROGUE, sap_groups[0]) not in _denied(dp)  # announcing is not an attempt to send

        dp.add_rule(Rule.make(ROGUE, sap_groups[0], 255))
        before = dp.counters()
        rogue.send(sap_groups[0], 5, ttl=255)
        outside.drain()
        delta = _delta(before, dp.counters())
        assert outside.got(ROGUE, sap_groups[0]) == 5 and outside.ttls(ROGUE, sap_groups[0]) == {254: 5}
        assert (delta["passed"], delta["sap_local"]) == (5, 0)
    finally:
        for sock in (outside, router, rogue):
            sock.close()


# ------------------------------------------------------------------ musersd end to end


def test_musersd_takes_ipv6_rules_over_protocol_v2_from_mauthctl(lab6, pin_dir):
    """mauthctl on a sender host reaches musersd over IPv6 ([2001:db8::1]:7575) with IPv6 rules,
    and real IPv6 traffic follows every change."""
    lab = lab6
    key = write_key_file(lab.workdir / "router.key")
    musersd = Musersd(lab, pin_dir, key_file=key, listen="[::]:7575").start()
    s1 = lab.senders["s1"]
    router = f"[{s1.router_addr6}]:7575"

    def ctl(*args):
        return mauthctl(lab, s1.ns, "--router", router, "--key-file", str(key), *args)

    def delivered(flows, ttl=4):
        return lab.deliver(flows, N, ttl=ttl)

    assert delivered([(AUTH, GROUP)]) == {(AUTH, GROUP): 0}
    r = ctl("add-sender", AUTH, GROUP, "--max-ttl", "8")
    assert r.returncode == 0, r.stderr
    r = ctl("add-sender", "2001:db8:0:0::b", GROUP2, "--max-ttl", "4")  # any spelling; stored canonical
    assert r.returncode == 0, r.stderr
    got = delivered([(AUTH, GROUP), (AUTH2, GROUP2), (ROGUE, GROUP)])
    assert got == {(AUTH, GROUP): N, (AUTH2, GROUP2): N, (ROGUE, GROUP): 0}
    assert delivered([(AUTH2, GROUP2)], ttl=5) == {(AUTH2, GROUP2): 0}

    listed = json.loads(ctl("--json", "list").stdout)
    assert {(x["source"], x["group"], x["max_ttl"], x["packets"]) for x in listed} == {
        (AUTH, GROUP, 8, N), (AUTH2, GROUP2, 4, N)}
    assert musersd.rules() == {(AUTH, GROUP): 8, (AUTH2, GROUP2): 4}
    stats = json.loads(ctl("--json", "stats").stdout)
    assert stats["reasons"]["passed"]["packets"] == 2 * N
    assert stats["reasons"]["unauthorized"]["packets"] == 2 * N  # the first probe, then ROGUE
    assert stats["reasons"]["ttl"]["packets"] == N
    denied = json.loads(ctl("--json", "denied").stdout)
    # The first probe's denial of (AUTH, GROUP) went when the pair was authorized.
    assert {(d["source"], d["group"], d["reason"], d["packets"]) for d in denied} == {
        (ROGUE, GROUP, "unauthorized", N), (AUTH2, GROUP2, "ttl", N)}

    r = ctl("add-sender", AUTH, "ff02::db8:1", "--max-ttl", "8")  # link scope: never filtered
    assert r.returncode == 2 and "link-scope group" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert ctl("del-sender", AUTH, GROUP).returncode == 0
    assert ctl("del-sender", AUTH2, GROUP2).returncode == 0
    assert delivered([(AUTH, GROUP), (AUTH2, GROUP2)]) == {(AUTH, GROUP): 0, (AUTH2, GROUP2): 0}
    assert musersd.rules() == {}
    assert musersd.stop() == 0

