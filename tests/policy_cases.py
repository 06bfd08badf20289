"""One table of (frame, expected verdict) cases for the packet policy.

The same rows drive the pure-Python model (tests/unit/test_policy_model.py)
and the compiled XDP program through BPF_PROG_TEST_RUN
(tests/integration/test_xdp_program.py), so the two are checked against one
truth. Frames are crafted with scapy, including the odd ones: VLAN and QinQ
tags, IP options, truncated and inconsistent headers.

`CASES` hold under the exact rules `RULES`; `PREFIX_CASES` (prefix rules
and the lookup order: exact, then longest source prefix, then longest group
prefix; a rate-limited rule within its rate) hold under `ALL_RULES`, which
adds `PREFIX_RULES` on addresses and groups no case of `CASES` uses, so
every case holds under `ALL_RULES`. `IPV6_CASES` are the same policy over
IPv6 (hop limit, scopes, MLD, extension headers, IPv6 SAP, prefixes) under
`IPV6_RULES`; `EVERY_RULE` holds both families' rules, and every case of
every table holds under it. (`ALL_RULES` stays IPv4: the NFQUEUE backend
and the IPv4 lab run it.)
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from scapy.layers.igmp import IGMP
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLDone,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from lab import reports as rep
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Rule

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network
A6 = ipaddress.IPv6Address
N6 = ipaddress.IPv6Network

SENDER = "192.0.2.10"
SENDER_LOW_TTL = "192.0.2.11"
STRANGER = "192.0.2.66"
GROUP = "239.1.1.1"
GROUP_TTL1 = "239.1.1.2"
GROUP_MAX = "239.255.0.1"
OTHER_GROUP = "239.1.1.9"
SAP_GLOBAL, SAP_LOCAL_SCOPE, SAP_ORG_SCOPE = "224.2.127.254", "239.255.255.255", "239.195.255.255"

RULES = {
    (A(SENDER), A(GROUP)): 16,
    (A(SENDER_LOW_TTL), A(GROUP_TTL1)): 1,
    (A(SENDER), A(GROUP_MAX)): 255,
    (A(SENDER), A(SAP_GLOBAL)): 16,  # an announcer allowed to announce beyond this router
}

# Prefix rules, on groups and sources that no rule of RULES touches.
PREFIX_GROUP = "239.2.2.2"  # the subnet 192.0.2.128/25 may send here
SUBNET_HOST = "192.0.2.130"  # in /25 only
INNER_HOST = "192.0.2.200"  # in /25 and in the longer /26
EXACT_IN_SUBNET = "192.0.2.129"  # in /25, and with an exact rule of its own
TRUSTED = "192.0.2.20"  # may send to 239.192.0.0/14
SCOPED_GROUP = "239.193.1.1"  # in /14 only
INNER_GROUP = "239.192.10.5"  # in /14 and in the longer /24
EXACT_SCOPED = "239.192.5.5"  # in /14, with an exact rule for TRUSTED
BOTH_GROUP = "239.192.1.1"  # TRUSTED's group prefix, and a source prefix holding TRUSTED
RATE_GROUP = "239.1.1.3"  # SENDER's rate-limited rule

PREFIX_RULES = {
    (N("192.0.2.128/25"), A(PREFIX_GROUP)): 8,
    (N("192.0.2.192/26"), A(PREFIX_GROUP)): 2,
    (A(EXACT_IN_SUBNET), A(PREFIX_GROUP)): 1,
    (A(TRUSTED), N("239.192.0.0/14")): 16,
    (A(TRUSTED), N("239.192.10.0/24")): 4,
    (A(TRUSTED), A(EXACT_SCOPED)): 1,
    (N("192.0.2.16/28"), A(BOTH_GROUP)): 2,
    (A(SENDER), A(RATE_GROUP)): Rule.make(SENDER, RATE_GROUP, 16, pps=1_000_000, bps=10_000_000_000),
}
ALL_RULES = {**RULES, **PREFIX_RULES}


def as_rules(table) -> list[Rule]:
    """A case table's rules as musersd Rules (a value is a max TTL, or already a Rule)."""
    return [v if isinstance(v, Rule) else Rule.make(s, g, v) for (s, g), v in table.items()]


MAC = dict(src="02:00:00:00:00:01", dst="01:00:5e:01:01:01")


@dataclass(frozen=True)
class Case:
    name: str
    frame: bytes
    reason: str
    action: str  # "pass" or "drop", in enforce mode
    new_ttl: int | None = None  # the TTL the program writes, in enforce mode, if it rewrites the packet

    @property
    def runnable_in_kernel(self) -> bool:
        # BPF_PROG_TEST_RUN needs at least an Ethernet header.
        return len(self.frame) >= 14


def udp(src: str, dst: str, ttl: int, payload: bytes = b"mauth-test", **ip) -> bytes:
    return bytes(Ether(**MAC) / IP(src=src, dst=dst, ttl=ttl, **ip) / UDP(sport=4000, dport=5000) / Raw(payload))


def _with_l2(l2, src: str, dst: str, ttl: int) -> bytes:
    return bytes(l2 / IP(src=src, dst=dst, ttl=ttl) / UDP(sport=4000, dport=5000) / Raw(b"x" * 16))


def sap(src: str, dst: str, ttl: int, dport: int = 9875, **ip) -> bytes:
    return bytes(Ether(**MAC) / IP(src=src, dst=dst, ttl=ttl, **ip) / UDP(sport=9875, dport=dport)
                 / Raw(b"\x20\x00\x12\x34" + bytes([192, 0, 2, 66]) + b"application/sdp\0v=0\r\n"))


def _raw_ip(header: bytes, rest: bytes = b"") -> bytes:
    return bytes(Ether(**MAC, type=0x0800)) + header + rest


def _patched(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value):]


def _cases() -> list[Case]:
    c: list[Case] = []
    add = lambda name, frame, reason, action="pass", new_ttl=None: c.append(  # noqa: E731
        Case(name, frame, reason, action, new_ttl))

    # Rule hits and TTL limits.
    add("authorized, TTL below max", udp(SENDER, GROUP, 8), "passed")
    add("authorized, TTL equal to max", udp(SENDER, GROUP, 16), "passed")
    add("authorized, TTL one above max", udp(SENDER, GROUP, 17), "ttl", "drop")
    add("authorized, TTL 255 above max 16", udp(SENDER, GROUP, 255), "ttl", "drop")
    add("authorized, TTL 0", udp(SENDER, GROUP, 0), "passed")
    add("max TTL 1, TTL 1", udp(SENDER_LOW_TTL, GROUP_TTL1, 1), "passed")
    add("max TTL 1, TTL 2", udp(SENDER_LOW_TTL, GROUP_TTL1, 2), "ttl", "drop")
    add("max TTL 255, TTL 255", udp(SENDER, GROUP_MAX, 255), "passed")
    add("unknown sender", udp(STRANGER, GROUP, 1), "unauthorized", "drop")
    add("authorized sender, other group", udp(SENDER, OTHER_GROUP, 1), "unauthorized", "drop")
    add("sender of another rule's group", udp(SENDER_LOW_TTL, GROUP, 1), "unauthorized", "drop")
    add("not link-local: 224.0.1.1", udp(STRANGER, "224.0.1.1", 1), "unauthorized", "drop")
    add("SSDP 239.255.255.250", udp(STRANGER, "239.255.255.250", 4), "unauthorized", "drop")
    add("top of range 239.255.255.255", udp(STRANGER, "239.255.255.255", 4), "unauthorized", "drop")
    add("large payload authorized", udp(SENDER, GROUP, 4, b"y" * 1400), "passed")
    add(
        "short payload padded to 60 bytes",
        bytes(Ether(**MAC) / IP(src=SENDER, dst=GROUP, ttl=3) / UDP(sport=1, dport=2)) + b"\0" * 18,
        "passed",
    )

    # Not multicast, and control traffic.
    add("unicast", udp(STRANGER, "198.51.100.7", 64), "not_multicast")
    add("limited broadcast", udp(STRANGER, "255.255.255.255", 64), "not_multicast")
    add("class E 240.0.0.1", udp(STRANGER, "240.0.0.1", 64), "not_multicast")
    add("all-hosts 224.0.0.1", udp(STRANGER, "224.0.0.1", 1), "link_local")
    add("OSPF 224.0.0.5", bytes(Ether(**MAC) / IP(src=STRANGER, dst="224.0.0.5", ttl=1, proto=89) / Raw(b"o" * 40)),
        "link_local")
    add("PIM hello 224.0.0.13", bytes(Ether(**MAC) / IP(src=STRANGER, dst="224.0.0.13", ttl=1, proto=103)
                                      / Raw(b"p" * 30)), "link_local")
    add("IGMPv3 report 224.0.0.22", bytes(Ether(**MAC) / IP(src=STRANGER, dst="224.0.0.22", ttl=1,
                                                             options=[IPOption_Router_Alert()])
                                          / IGMP(type=0x22)), "link_local")
    add("224.0.0.255 link-local", udp(STRANGER, "224.0.0.255", 1), "link_local")
    add("IGMPv2 report to the group", bytes(Ether(**MAC) / IP(src=STRANGER, dst=OTHER_GROUP, ttl=1,
                                                               options=[IPOption_Router_Alert()])
                                            / IGMP(type=0x16, gaddr=OTHER_GROUP)), "igmp")
    add("ARP", bytes(Ether(**MAC) / ARP(psrc=STRANGER, pdst=SENDER)), "not_ip")

    # VLAN tags.
    add("802.1Q, authorized", _with_l2(Ether(**MAC) / Dot1Q(vlan=10), SENDER, GROUP, 4), "passed")
    add("802.1Q, unknown sender", _with_l2(Ether(**MAC) / Dot1Q(vlan=10), STRANGER, GROUP, 4),
        "unauthorized", "drop")
    add("802.1Q, TTL over", _with_l2(Ether(**MAC) / Dot1Q(vlan=10), SENDER, GROUP, 64), "ttl", "drop")
    add("QinQ 802.1ad+802.1Q, authorized",
        _with_l2(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=10), SENDER, GROUP, 4), "passed")
    add("QinQ 802.1ad+802.1Q, unknown sender",
        _with_l2(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=10), STRANGER, GROUP, 4), "unauthorized", "drop")
    add("double 802.1Q, unicast",
        _with_l2(Ether(**MAC) / Dot1Q(vlan=1) / Dot1Q(vlan=2), STRANGER, "198.51.100.7", 4), "not_multicast")
    add("three VLAN tags: beyond the parser",
        _with_l2(Ether(**MAC) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3), STRANGER, GROUP, 4), "not_ip")
    add("VLAN tag truncated", bytes(Ether(**MAC, type=0x8100)) + b"\x00\x0a", "malformed")
    add("802.1Q, IP header truncated", bytes(Ether(**MAC) / Dot1Q(vlan=10, type=0x0800)) + b"\x45\x00\x00",
        "malformed")

    # IP options (IHL > 5).
    add("router alert option, authorized",
        udp(SENDER, GROUP, 4, options=[IPOption_Router_Alert()]), "passed")
    add("router alert option, unknown sender",
        udp(STRANGER, GROUP, 4, options=[IPOption_Router_Alert()]), "unauthorized", "drop")
    add("40 bytes of options (IHL 15), TTL over",
        udp(SENDER, GROUP, 40, options=[IPOption_Router_Alert()] * 10), "ttl", "drop")

    # Fragments carry the full IP header: each one is judged alone.
    add("non-first fragment, unknown sender",
        bytes(Ether(**MAC) / IP(src=STRANGER, dst=GROUP, ttl=2, frag=100, proto=17) / Raw(b"f" * 64)),
        "unauthorized", "drop")
    add("non-first fragment, authorized",
        bytes(Ether(**MAC) / IP(src=SENDER, dst=GROUP, ttl=2, frag=100, proto=17) / Raw(b"f" * 64)), "passed")

    # SAP announcements from senders without a rule reach the router itself
    # (its SAP listener) with TTL 1, so they are never forwarded.
    add("SAP global scope, unknown announcer, TTL 255", sap(STRANGER, SAP_GLOBAL, 255), "sap_local", new_ttl=1)
    add("SAP local scope, unknown announcer, TTL 15", sap(STRANGER, SAP_LOCAL_SCOPE, 15), "sap_local", new_ttl=1)
    add("SAP org scope, unknown announcer, TTL 1", sap(STRANGER, SAP_ORG_SCOPE, 1), "sap_local")
    add("SAP with router alert option", sap(STRANGER, SAP_GLOBAL, 64, options=[IPOption_Router_Alert()]),
        "sap_local", new_ttl=1)
    add("SAP, 802.1Q tagged", bytes(Ether(**MAC) / Dot1Q(vlan=10) / IP(src=STRANGER, dst=SAP_GLOBAL, ttl=9)
                                    / UDP(sport=9875, dport=9875) / Raw(b"sap")), "sap_local", new_ttl=1)
    add("SAP, authorized announcer within its TTL", sap(SENDER, SAP_GLOBAL, 16), "passed")
    add("SAP, authorized announcer above its TTL", sap(SENDER, SAP_GLOBAL, 17), "sap_local", new_ttl=1)
    add("SAP group, other UDP port", sap(STRANGER, SAP_GLOBAL, 4, dport=9876), "unauthorized", "drop")
    add("SAP port, not a SAP group", sap(STRANGER, OTHER_GROUP, 4), "unauthorized", "drop")
    add("SAP group and port over TCP",
        bytes(Ether(**MAC) / IP(src=STRANGER, dst=SAP_GLOBAL, ttl=4) / TCP(sport=9875, dport=9875)),
        "unauthorized", "drop")
    add("SAP, first fragment", sap(STRANGER, SAP_GLOBAL, 4, flags="MF"), "unauthorized", "drop")
    add("SAP, non-first fragment",
        bytes(Ether(**MAC) / IP(src=STRANGER, dst=SAP_GLOBAL, ttl=4, frag=3, proto=17)
              / Raw(b"\x26\x93\x26\x93\x00\x10\x00\x00")), "unauthorized", "drop")
    add("SAP group, UDP header cut short",
        bytes(Ether(**MAC) / IP(src=STRANGER, dst=SAP_GLOBAL, ttl=4, proto=17) / Raw(b"\x26\x93\x26\x93")),
        "unauthorized", "drop")

    # Malformed IPv4: every one is dropped by the kernel's ip_rcv() anyway.
    good = udp(STRANGER, GROUP, 4)
    add("IPv4 header truncated at 10 bytes", good[:24], "malformed")
    add("IPv4 header truncated at 19 bytes", good[:33], "malformed")
    add("Ethernet header only", good[:14], "malformed")
    add("frame shorter than Ethernet", good[:10], "malformed")
    add("version 6 in an IPv4 frame", _patched(good, 14, b"\x65"), "malformed")
    add("IHL 4", _patched(good, 14, b"\x44"), "malformed")
    add("IHL 0", _patched(good, 14, b"\x40"), "malformed")
    add("options run past the end",
        _raw_ip(bytes(IP(src=STRANGER, dst=GROUP, ttl=1, options=[IPOption_Router_Alert()] * 5))[:24]),
        "malformed")
    add("IHL 15 without options", _patched(good, 14, b"\x4f"), "malformed")
    add("total length beyond the frame", _patched(good, 16, b"\x05\xdc"), "malformed")
    add("total length below header length", _patched(good, 16, b"\x00\x10"), "malformed")
    add("authorized sender, truncated: still malformed", udp(SENDER, GROUP, 4)[:30], "malformed")
    return c


def _prefix_cases() -> list[Case]:
    c: list[Case] = []
    add = lambda name, frame, reason, action="pass": c.append(Case(name, frame, reason, action))  # noqa: E731

    add("source prefix: a host of the subnet", udp(SUBNET_HOST, PREFIX_GROUP, 8), "passed")
    add("source prefix: a host of the subnet, TTL over", udp(SUBNET_HOST, PREFIX_GROUP, 9), "ttl", "drop")
    add("source prefix: first host of the subnet", udp("192.0.2.128", PREFIX_GROUP, 3), "passed")
    add("source prefix: last host of the subnet", udp("192.0.2.255", PREFIX_GROUP, 2), "passed")
    add("source prefix: host just below the subnet", udp("192.0.2.127", PREFIX_GROUP, 1), "unauthorized", "drop")
    add("source prefix: a host of the subnet, other group", udp(SUBNET_HOST, "239.2.2.3", 1), "unauthorized", "drop")
    add("source prefix: the longest prefix decides (/26 max 2)", udp(INNER_HOST, PREFIX_GROUP, 3), "ttl", "drop")
    add("source prefix: the longest prefix, within its TTL", udp(INNER_HOST, PREFIX_GROUP, 2), "passed")
    add("exact rule beats the subnet's (max 1)", udp(EXACT_IN_SUBNET, PREFIX_GROUP, 2), "ttl", "drop")
    add("exact rule inside the subnet, within its TTL", udp(EXACT_IN_SUBNET, PREFIX_GROUP, 1), "passed")
    add("group prefix: a group of the range", udp(TRUSTED, SCOPED_GROUP, 16), "passed")
    add("group prefix: a group of the range, TTL over", udp(TRUSTED, SCOPED_GROUP, 17), "ttl", "drop")
    add("group prefix: first group of the range", udp(TRUSTED, "239.192.0.0", 5), "passed")
    add("group prefix: last group of the range", udp(TRUSTED, "239.195.255.254", 5), "passed")
    add("group prefix: a group just past the range", udp(TRUSTED, "239.196.0.0", 1), "unauthorized", "drop")
    add("group prefix: another source", udp(STRANGER, SCOPED_GROUP, 1), "unauthorized", "drop")
    add("group prefix: the longest prefix decides (/24 max 4)", udp(TRUSTED, INNER_GROUP, 8), "ttl", "drop")
    add("group prefix: the longest prefix, within its TTL", udp(TRUSTED, INNER_GROUP, 4), "passed")
    add("exact rule beats the group prefix (max 1)", udp(TRUSTED, EXACT_SCOPED, 2), "ttl", "drop")
    add("source prefix beats group prefix (max 2, not 16)", udp(TRUSTED, BOTH_GROUP, 3), "ttl", "drop")
    add("source prefix beats group prefix, within its TTL", udp(TRUSTED, BOTH_GROUP, 2), "passed")
    add("group prefix, 802.1Q tagged",
        _with_l2(Ether(**MAC) / Dot1Q(vlan=10), TRUSTED, SCOPED_GROUP, 4), "passed")
    add("rate-limited rule within its rate", udp(SENDER, RATE_GROUP, 8), "passed")
    add("rate-limited rule, TTL over", udp(SENDER, RATE_GROUP, 17), "ttl", "drop")
    return c


# IPv6: documentation addresses, groups of global (e), site (5) and transient site (15) scope.
SENDER6 = "2001:db8:0:1::10"
SENDER6_LOW = "2001:db8:0:1::11"
STRANGER6 = "2001:db8:0:2::66"
GROUP6 = "ff0e::db8:1"
GROUP6_TTL1 = "ff0e::db8:2"
OTHER_GROUP6 = "ff0e::db8:9"
SITE_GROUP6 = "ff05::db8:1"
RATE_GROUP6 = "ff0e::db8:4"
SAP6_GLOBAL, SAP6_SITE, SAP6_ORG = "ff0e::2:7ffe", "ff05::2:7ffe", "ff08::2:7ffe"
PREFIX_GROUP6 = "ff0e::db8:3"  # 2001:db8:0:3::/64 may send here
SUBNET6_HOST = "2001:db8:0:3::1:5"  # in /64 only
INNER6_HOST = "2001:db8:0:3::7"  # in /64 and the longer /112
TRUSTED6 = "2001:db8:0:1::20"  # may send to ff15::/16
SCOPED_GROUP6 = "ff15::1:1"  # in /16 only
INNER_GROUP6 = "ff15::db8:5"  # in /16 and the longer /112

IPV6_RULES = {
    (A6(SENDER6), A6(GROUP6)): 16,
    (A6(SENDER6_LOW), A6(GROUP6_TTL1)): 1,
    (A6(SENDER6), A6(SITE_GROUP6)): 255,
    (A6(SENDER6), A6(SAP6_GLOBAL)): 16,
    (N6("2001:db8:0:3::/64"), A6(PREFIX_GROUP6)): 8,
    (N6("2001:db8:0:3::/112"), A6(PREFIX_GROUP6)): 2,
    (A6(TRUSTED6), N6("ff15::/16")): 16,
    (A6(TRUSTED6), N6("ff15::db8:0/112")): 4,
    (A6(SENDER6), A6(RATE_GROUP6)): Rule.make(SENDER6, RATE_GROUP6, 16, pps=1_000_000, bps=10_000_000_000),
}

MAC6 = dict(src="02:00:00:00:00:01", dst="33:33:00:00:0d:b8")


def udp6(src: str, dst: str, hlim: int, *ext, payload: bytes = b"mauth-test", sport: int = 4000,
         dport: int = 5000, l2=None) -> bytes:
    """An IPv6 UDP frame, with extension headers `ext` (scapy layers) between IPv6 and UDP."""
    pkt = IPv6(src=src, dst=dst, hlim=hlim)
    for h in ext:
        pkt = pkt / h
    return bytes((l2 if l2 is not None else Ether(**MAC6)) / pkt / UDP(sport=sport, dport=dport) / Raw(payload))


def sap6(src: str, dst: str, hlim: int, *ext, dport: int = 9875) -> bytes:
    return udp6(src, dst, hlim, *ext, sport=9875, dport=dport,
                payload=b"\x30\x00\x12\x34" + A6(src).packed + b"application/sdp\0v=0\r\n")


def _ip6(src: str, dst: str, hlim: int, upper, *ext) -> bytes:
    pkt = IPv6(src=src, dst=dst, hlim=hlim)
    for h in ext:
        pkt = pkt / h
    return bytes(Ether(**MAC6) / pkt / upper)


def _ext_chain(n: int) -> list:
    """Hop-by-hop followed by n - 1 destination options headers."""
    return [IPv6ExtHdrHopByHop()] + [IPv6ExtHdrDestOpt() for _ in range(n - 1)]


def _ipv6_cases() -> list[Case]:
    c: list[Case] = []
    add = lambda name, frame, reason, action="pass", new_ttl=None: c.append(  # noqa: E731
        Case("IPv6 " + name, frame, reason, action, new_ttl))

    # Rule hits and hop limits.
    add("authorized, hop limit below max", udp6(SENDER6, GROUP6, 8), "passed")
    add("authorized, hop limit equal to max", udp6(SENDER6, GROUP6, 16), "passed")
    add("authorized, hop limit one above max", udp6(SENDER6, GROUP6, 17), "ttl", "drop")
    add("authorized, hop limit 0", udp6(SENDER6, GROUP6, 0), "passed")
    add("max 1, hop limit 1", udp6(SENDER6_LOW, GROUP6_TTL1, 1), "passed")
    add("max 1, hop limit 2", udp6(SENDER6_LOW, GROUP6_TTL1, 2), "ttl", "drop")
    add("site scope, max 255", udp6(SENDER6, SITE_GROUP6, 255), "passed")
    add("unknown sender", udp6(STRANGER6, GROUP6, 1), "unauthorized", "drop")
    add("authorized sender, other group", udp6(SENDER6, OTHER_GROUP6, 1), "unauthorized", "drop")
    add("sender of another rule's group", udp6(SENDER6_LOW, GROUP6, 1), "unauthorized", "drop")
    add("same group bits, other scope", udp6(SENDER6, "ff08::db8:1", 1), "unauthorized", "drop")
    add("realm-local scope 3 is filtered", udp6(STRANGER6, "ff03::1", 1), "unauthorized", "drop")
    add("admin-local scope 4 is filtered", udp6(STRANGER6, "ff04::1:3", 1), "unauthorized", "drop")
    add("IPv4 rule's addresses mean nothing to IPv6", udp6("::ffff:192.0.2.10", GROUP6, 1), "unauthorized", "drop")
    add("large payload authorized", udp6(SENDER6, GROUP6, 4, payload=b"y" * 1400), "passed")
    add("Ethernet padding after a short packet",
        bytes(Ether(**MAC6) / IPv6(src=SENDER6, dst=GROUP6, hlim=3, nh=59, plen=0)) + b"\0" * 6, "passed")
    add("no next header, unknown sender",
        bytes(Ether(**MAC6) / IPv6(src=STRANGER6, dst=GROUP6, hlim=3, nh=59, plen=0)), "unauthorized", "drop")
    add("ESP ends the walk, authorized",
        bytes(Ether(**MAC6) / IPv6(src=SENDER6, dst=GROUP6, hlim=3, nh=50) / Raw(b"\0\0\0\1" * 6)), "passed")

    # Not multicast, and link scope or smaller.
    add("unicast", udp6(STRANGER6, "2001:db8:0:9::7", 64), "not_multicast")
    add("all-nodes ff02::1", udp6(STRANGER6, "ff02::1", 1), "link_local")
    add("interface-local ff01::1", udp6(STRANGER6, "ff01::1", 1), "link_local")
    add("reserved scope 0 ff00::1", udp6(STRANGER6, "ff00::1", 1), "link_local")
    add("transient link scope ff12::1234", udp6(STRANGER6, "ff12::1234", 9), "link_local")
    add("SAP on ff02::2:7ffe", sap6(STRANGER6, "ff02::2:7ffe", 255), "link_local")
    add("MLDv2 report to ff02::16",
        _ip6("fe80::1", "ff02::16", 1, ICMPv6MLReport2(), IPv6ExtHdrHopByHop(options=[RouterAlert()])),
        "link_local")
    add("neighbour solicitation to a solicited-node group",
        _ip6("fe80::1", "ff02::1:ff00:10", 255, ICMPv6EchoRequest()), "link_local")

    # MLD to routable groups: MLDv1 reports are sent to the group, with hop limit 1.
    add("MLDv1 report to the group",
        _ip6("fe80::1", OTHER_GROUP6, 1, ICMPv6MLReport(mladdr=OTHER_GROUP6),
             IPv6ExtHdrHopByHop(options=[RouterAlert()])), "mld")
    add("MLDv1 done to a routable group",
        _ip6("fe80::1", OTHER_GROUP6, 1, ICMPv6MLDone(mladdr=OTHER_GROUP6),
             IPv6ExtHdrHopByHop(options=[RouterAlert()])), "mld")
    add("MLDv1 report without router alert", _ip6(STRANGER6, OTHER_GROUP6, 1, ICMPv6MLReport()), "mld")
    add("MLD type with hop limit 2 is data", _ip6(STRANGER6, OTHER_GROUP6, 2, ICMPv6MLReport()),
        "unauthorized", "drop")
    add("ICMPv6 echo to a group, hop limit 1", _ip6(STRANGER6, OTHER_GROUP6, 1, ICMPv6EchoRequest()),
        "unauthorized", "drop")
    add("MLD type in a non-first fragment",
        _ip6(STRANGER6, OTHER_GROUP6, 1, Raw(b"\x83\0\0\0\0\0\0\0"),
             IPv6ExtHdrFragment(nh=58, offset=4, m=0)), "unauthorized", "drop")

    # Extension headers.
    add("hop-by-hop, authorized", udp6(SENDER6, GROUP6, 4, IPv6ExtHdrHopByHop()), "passed")
    add("hop-by-hop, unknown sender", udp6(STRANGER6, GROUP6, 4, IPv6ExtHdrHopByHop()), "unauthorized", "drop")
    add("destination options, hop limit over", udp6(SENDER6, GROUP6, 40, IPv6ExtHdrDestOpt()), "ttl", "drop")
    add("routing header, authorized", udp6(SENDER6, GROUP6, 4, IPv6ExtHdrRouting(addresses=[])), "passed")
    add("AH, authorized", udp6(SENDER6, GROUP6, 4, AH(nh=17, payloadlen=4, spi=1, icv=b"\0" * 12)), "passed")
    add("eight extension headers, authorized", udp6(SENDER6, GROUP6, 4, *_ext_chain(8)), "passed")
    add("nine extension headers", udp6(SENDER6, GROUP6, 4, *_ext_chain(9)), "malformed", "drop")
    add("nine extension headers, unknown sender", udp6(STRANGER6, GROUP6, 4, *_ext_chain(9)), "malformed", "drop")
    add("hop-by-hop not first", udp6(SENDER6, GROUP6, 4, IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop()),
        "malformed", "drop")
    add("first fragment, authorized", udp6(SENDER6, GROUP6, 4, IPv6ExtHdrFragment(m=1, id=7)), "passed")
    add("non-first fragment, authorized",
        _ip6(SENDER6, GROUP6, 4, Raw(b"f" * 64), IPv6ExtHdrFragment(nh=17, offset=100, id=7)), "passed")
    add("non-first fragment, unknown sender",
        _ip6(STRANGER6, GROUP6, 4, Raw(b"f" * 64), IPv6ExtHdrFragment(nh=17, offset=100, id=7)),
        "unauthorized", "drop")
    good6 = udp6(SENDER6, GROUP6, 4, IPv6ExtHdrDestOpt())
    add("payload length beyond the frame", _patched(good6, 18, b"\x05\xdc"), "malformed", "drop")
    add("extension header longer than the payload", _patched(good6, 55, b"\x20"), "malformed", "drop")
    add("extension header cut off by the frame end", good6[:60], "malformed", "drop")
    add("payload length 0 with an extension header next", _patched(good6, 18, b"\x00\x00"), "malformed", "drop")
    add("hop-by-hop, link scope: not walked",
        _patched(udp6(STRANGER6, "ff02::1", 1, IPv6ExtHdrHopByHop()), 18, b"\x05\xdc"), "link_local")

    # Malformed before the destination is known: passed (ipv6_rcv() drops it).
    add("fixed header truncated", good6[:40], "malformed")
    add("version 4 in an IPv6 frame", _patched(good6, 14, b"\x40"), "malformed")
    add("unicast with a truncated extension header", udp6(STRANGER6, "2001:db8::7", 4, IPv6ExtHdrDestOpt())[:60],
        "not_multicast")

    # VLAN tags.
    add("802.1Q, authorized", udp6(SENDER6, GROUP6, 4, l2=Ether(**MAC6) / Dot1Q(vlan=10)), "passed")
    add("QinQ, unknown sender", udp6(STRANGER6, GROUP6, 4, l2=Ether(**MAC6) / Dot1AD(vlan=100) / Dot1Q(vlan=10)),
        "unauthorized", "drop")

    # SAP: hop limit 1 (IPv6 has no header checksum to mend).
    add("SAP global scope, unknown announcer", sap6(STRANGER6, SAP6_GLOBAL, 255), "sap_local", new_ttl=1)
    add("SAP site scope, unknown announcer", sap6(STRANGER6, SAP6_SITE, 15), "sap_local", new_ttl=1)
    add("SAP org scope, hop limit 1 already", sap6(STRANGER6, SAP6_ORG, 1), "sap_local")
    add("SAP behind hop-by-hop", sap6(STRANGER6, SAP6_GLOBAL, 64, IPv6ExtHdrHopByHop()), "sap_local", new_ttl=1)
    add("SAP, 802.1Q tagged", udp6(STRANGER6, SAP6_SITE, 9, sport=9875, dport=9875,
                                   l2=Ether(**MAC6) / Dot1Q(vlan=10)), "sap_local", new_ttl=1)
    add("SAP, authorized announcer within its hop limit", sap6(SENDER6, SAP6_GLOBAL, 16), "passed")
    add("SAP, authorized announcer above its hop limit", sap6(SENDER6, SAP6_GLOBAL, 17), "sap_local", new_ttl=1)
    add("SAP group, other UDP port", sap6(STRANGER6, SAP6_GLOBAL, 4, dport=9876), "unauthorized", "drop")
    add("SAP port, not a SAP group", sap6(STRANGER6, OTHER_GROUP6, 4), "unauthorized", "drop")
    add("SAP admin-local ff04::2:7ffe is not a default group", sap6(STRANGER6, "ff04::2:7ffe", 4),
        "unauthorized", "drop")
    add("SAP, first fragment", sap6(STRANGER6, SAP6_GLOBAL, 4, IPv6ExtHdrFragment(m=1)), "unauthorized", "drop")
    add("SAP group, UDP header cut short",
        bytes(Ether(**MAC6) / IPv6(src=STRANGER6, dst=SAP6_GLOBAL, hlim=4, nh=17) / Raw(b"\x26\x93\x26\x93")),
        "unauthorized", "drop")
    add("SAP group and port over TCP", _ip6(STRANGER6, SAP6_GLOBAL, 4, TCP(sport=9875, dport=9875)),
        "unauthorized", "drop")

    # Prefixes and the lookup order.
    add("source prefix: a host of the /64", udp6(SUBNET6_HOST, PREFIX_GROUP6, 8), "passed")
    add("source prefix: a host of the /64, hop limit over", udp6(SUBNET6_HOST, PREFIX_GROUP6, 9), "ttl", "drop")
    add("source prefix: the longest prefix decides (/112 max 2)", udp6(INNER6_HOST, PREFIX_GROUP6, 3), "ttl", "drop")
    add("source prefix: the longest prefix, within", udp6(INNER6_HOST, PREFIX_GROUP6, 2), "passed")
    add("source prefix: a host outside the /64", udp6("2001:db8:0:4::1", PREFIX_GROUP6, 1), "unauthorized", "drop")
    add("group prefix: a group of ff15::/16", udp6(TRUSTED6, SCOPED_GROUP6, 16), "passed")
    add("group prefix: hop limit over", udp6(TRUSTED6, SCOPED_GROUP6, 17), "ttl", "drop")
    add("group prefix: the longest prefix decides (/112 max 4)", udp6(TRUSTED6, INNER_GROUP6, 5), "ttl", "drop")
    add("group prefix: a group just outside", udp6(TRUSTED6, "ff16::1:1", 1), "unauthorized", "drop")
    add("group prefix: another source", udp6(STRANGER6, SCOPED_GROUP6, 1), "unauthorized", "drop")
    add("rate-limited rule within its rate", udp6(SENDER6, RATE_GROUP6, 8), "passed")
    return c


CASES = _cases()
PREFIX_CASES = _prefix_cases()
IPV6_CASES = _ipv6_cases()
EVERY_RULE = {**ALL_RULES, **IPV6_RULES}


# -- bindings ----------------------------------------------------------------------------
#
# Rules bound to where their sender may be (ebpf/mauth.h, "Bindings"), on addresses and groups no other table
# uses. Two interfaces, BIND_IFACES; each has its connected subnets (BIND_ROUTES), which is what the reverse-path
# check asks the FIB. The rows run in order: learning makes them stateful (the first packet of a learning rule
# pins its interface and MAC). tests/unit/test_policy_model.py runs them with interface indexes of its own;
# tests/integration/test_xdp_program.py with two veths in a namespace it makes, whose routes are BIND_ROUTES.

BIND_IFACES = ("mbind0", "mbind1")
MAC_A, MAC_B = "02:00:00:00:0b:0a", "02:00:00:00:0b:0b"
BIND_ROUTES = {  # subnet -> the interface it is connected to (the interface's address is the subnet's .1 / ::1)
    N("198.51.100.0/25"): "mbind0", N("198.51.100.128/25"): "mbind1",
    N6("2001:db8:b0::/64"): "mbind0", N6("2001:db8:b1::/64"): "mbind1",
}
BIND_GROUP, BIND_GROUP_PREFIX, BIND_GROUP_PREFIX_IF = "239.3.3.1", "239.3.3.2", "239.3.3.3"
BIND_GROUP6 = "ff0e::3:1"
B_IFACE, B_MAC, B_RPF, B_LEARN, B_ALL, B_FREE = (f"198.51.100.{i}" for i in (10, 11, 12, 13, 14, 15))
B_FAR = "198.51.100.200"  # on mbind1's subnet
B_UNROUTED = "203.0.113.9"  # no route at all
B6_IFACE, B6_RPF, B6_LEARN = "2001:db8:b0::10", "2001:db8:b0::12", "2001:db8:b0::13"
B6_FAR = "2001:db8:b1::12"

BIND_RULES = {
    (A(B_IFACE), A(BIND_GROUP)): 16,
    (A(B_MAC), A(BIND_GROUP)): 16,
    (A(B_RPF), A(BIND_GROUP)): 16,
    (A(B_UNROUTED), A(BIND_GROUP)): 16,
    (A(B_LEARN), A(BIND_GROUP)): 16,
    (A(B_ALL), A(BIND_GROUP)): 16,
    (A(B_FREE), A(BIND_GROUP)): 16,  # not bound
    (N("198.51.100.0/24"), A(BIND_GROUP_PREFIX)): 16,  # rpf
    (N("198.51.100.0/24"), A(BIND_GROUP_PREFIX_IF)): 16,  # iface mbind1
    (A6(B6_IFACE), A6(BIND_GROUP6)): 16,
    (A6(B6_RPF), A6(BIND_GROUP6)): 16,
    (N6("2001:db8::/32"), A6(BIND_GROUP6)): 16,  # rpf, so B6_FAR is held to mbind1
    (A6(B6_LEARN), A6(BIND_GROUP6)): 16,
}

# rule key -> the binding's parts, with the interface by name (filter.Binding.make() takes the rest as they are)
BIND_SPECS = {
    (A(B_IFACE), A(BIND_GROUP)): dict(iface="mbind0"),
    (A(B_MAC), A(BIND_GROUP)): dict(mac=MAC_A),
    (A(B_RPF), A(BIND_GROUP)): dict(rpf=True),
    (A(B_UNROUTED), A(BIND_GROUP)): dict(rpf=True),
    (A(B_LEARN), A(BIND_GROUP)): dict(learn=True),
    (A(B_ALL), A(BIND_GROUP)): dict(iface="mbind0", rpf=True, mac=MAC_A, learn=True),
    (N("198.51.100.0/24"), A(BIND_GROUP_PREFIX)): dict(rpf=True),
    (N("198.51.100.0/24"), A(BIND_GROUP_PREFIX_IF)): dict(iface="mbind1"),
    (A6(B6_IFACE), A6(BIND_GROUP6)): dict(iface="mbind0"),
    (A6(B6_RPF), A6(BIND_GROUP6)): dict(rpf=True),
    (N6("2001:db8::/32"), A6(BIND_GROUP6)): dict(rpf=True),
    (A6(B6_LEARN), A6(BIND_GROUP6)): dict(learn=True),
}


@dataclass(frozen=True)
class BindCase:
    name: str
    frame: bytes
    iface: str  # the interface of BIND_IFACES it comes in on
    reason: str
    action: str = "pass"  # in enforce mode


def bound_udp(src: str, dst: str, mac: str, ttl: int = 8) -> bytes:
    ip = IPv6(src=src, dst=dst, hlim=ttl) if ":" in src else IP(src=src, dst=dst, ttl=ttl)
    return bytes(Ether(src=mac, dst=MAC["dst"]) / ip / UDP(sport=4000, dport=5000) / Raw(b"bound"))


def _bind_cases() -> list[BindCase]:
    c: list[BindCase] = []
    add = lambda name, src, grp, mac, iface, reason, action="pass", ttl=8: c.append(  # noqa: E731
        BindCase(name, bound_udp(src, grp, mac, ttl), iface, reason, action))
    g, g6 = BIND_GROUP, BIND_GROUP6
    add("iface: on its interface", B_IFACE, g, MAC_A, "mbind0", "passed")
    add("iface: on the other interface", B_IFACE, g, MAC_A, "mbind1", "wrong_iif", "drop")
    add("iface: other interface wins over TTL", B_IFACE, g, MAC_A, "mbind1", "wrong_iif", "drop", ttl=200)
    add("iface: its interface, TTL above max", B_IFACE, g, MAC_A, "mbind0", "ttl", "drop", ttl=200)
    add("mac: its MAC, any interface", B_MAC, g, MAC_A, "mbind1", "passed")
    add("mac: another MAC", B_MAC, g, MAC_B, "mbind0", "wrong_mac", "drop")
    add("rpf: source routed via the ingress", B_RPF, g, MAC_B, "mbind0", "passed")
    add("rpf: source routed via the other interface", B_RPF, g, MAC_B, "mbind1", "rpf_fail", "drop")
    add("rpf: source without a route", B_UNROUTED, g, MAC_A, "mbind0", "rpf_fail", "drop")
    add("unbound rule: any interface, any MAC", B_FREE, g, MAC_B, "mbind1", "passed")
    add("learn: the first packet pins", B_LEARN, g, MAC_A, "mbind1", "passed")
    add("learn: the pinned pair again", B_LEARN, g, MAC_A, "mbind1", "passed")
    add("learn: another MAC after pinning", B_LEARN, g, MAC_B, "mbind1", "wrong_mac", "drop")
    add("learn: another interface after pinning", B_LEARN, g, MAC_A, "mbind0", "wrong_iif", "drop")
    add("all: another interface first (pins nothing)", B_ALL, g, MAC_A, "mbind1", "wrong_iif", "drop")
    add("all: another MAC (pins nothing)", B_ALL, g, MAC_B, "mbind0", "wrong_mac", "drop")
    add("all: its interface and MAC pin", B_ALL, g, MAC_A, "mbind0", "passed")
    add("all: again", B_ALL, g, MAC_A, "mbind0", "passed")
    add("prefix rpf: a host via its own interface", B_RPF, BIND_GROUP_PREFIX, MAC_A, "mbind0", "passed")
    add("prefix rpf: another host via its own", B_FAR, BIND_GROUP_PREFIX, MAC_B, "mbind1", "passed")
    add("prefix rpf: a host via the other interface", B_FAR, BIND_GROUP_PREFIX, MAC_A, "mbind0", "rpf_fail", "drop")
    add("prefix iface: on its interface", B_RPF, BIND_GROUP_PREFIX_IF, MAC_A, "mbind1", "passed")
    add("prefix iface: on the other", B_FAR, BIND_GROUP_PREFIX_IF, MAC_B, "mbind0", "wrong_iif", "drop")
    add("IPv6 iface: on its interface", B6_IFACE, g6, MAC_A, "mbind0", "passed")
    add("IPv6 iface: on the other", B6_IFACE, g6, MAC_A, "mbind1", "wrong_iif", "drop")
    add("IPv6 rpf: via the ingress", B6_RPF, g6, MAC_A, "mbind0", "passed")
    add("IPv6 rpf: via the other interface", B6_RPF, g6, MAC_A, "mbind1", "rpf_fail", "drop")
    add("IPv6 prefix rpf: a host of mbind1's subnet there", B6_FAR, g6, MAC_B, "mbind1", "passed")
    add("IPv6 prefix rpf: that host on mbind0", B6_FAR, g6, MAC_B, "mbind0", "rpf_fail", "drop")
    add("IPv6 learn: the first packet pins", B6_LEARN, g6, MAC_B, "mbind0", "passed")
    add("IPv6 learn: another MAC", B6_LEARN, g6, MAC_A, "mbind0", "wrong_mac", "drop")
    add("IPv6 learn: another interface", B6_LEARN, g6, MAC_B, "mbind1", "wrong_iif", "drop")
    return c


BIND_CASES = _bind_cases()
# How often each learning rule's sender "moved" after the rows above (its learned pair refused a packet).
BIND_MOVED = {(A(B_LEARN), A(BIND_GROUP)): 2, (A(B_ALL), A(BIND_GROUP)): 0, (A6(B6_LEARN), A6(BIND_GROUP6)): 2}


def bind_routes(indexes: dict[str, int]):
    """The FIB of BIND_ROUTES as the model's `routes` oracle, with interfaces as `indexes` numbers them."""
    def routes(source):
        best = max((net for net in BIND_ROUTES if source.version == net.version and source in net),
                   key=lambda n: n.prefixlen, default=None)
        return None if best is None else indexes[BIND_ROUTES[best]]
    return routes


# -- receivers: membership reports ---------------------------------------------------------------------
#
# Crafted IGMP and MLD messages on one guarded interface, RECV_IFACE, under the receiver rules RECV_RULES
# (scanned in this order) and the row's interface policy, with the expected verdict written out: action,
# reason, the exact frame passed on (None: the input, byte for byte; else built afresh by lab/reports.py from
# the records that must be kept), the interface's counters, the refused joins and the group-table changes.
# tests/unit/test_receiver_model.py holds musersd/policy.py judge_report() to every row;
# tests/integration/test_xdp_program.py holds the compiled program to the model, output bytes included.
# Every row starts from the joined groups `joined` (the interface's count is their number).

RECV_IFACE = "mrecv0"
R4, HOST7, STRANGER4 = "10.1.0.5", "10.1.0.7", "10.2.0.5"
G, G2, G3, OUT = "239.1.1.1", "239.1.2.2", "239.1.1.3", "239.5.5.5"  # OUT: in no rule
HOST_G, OTHER_IF_G = "239.9.9.9", "239.8.8.8"  # HOST7's, on RECV_IFACE and on another interface
SSM_G, SSM_OK, SSM_BAD, SSM_BAD2 = "232.1.1.1", "192.0.2.10", "192.0.2.66", "192.0.2.67"
LINK_G, LINK_G6 = "224.0.0.251", "ff02::fb"
R6, STRANGER6 = "fe80::5", "2001:db8:9::5"
G6, G6B, OUT6 = "ff0e::db8:1:1", "ff0e::db8:1:2", "ff0e::db8:2:1"
SSM6, SSM6_OK, SSM6_BAD = "ff3e::8000:1", "2001:db8::10", "2001:db8::66"

RECV_RULES = (
    ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16"),  # any source, or a source-specific join of any source
    ReceiverRule.make("0.0.0.0/0", SSM_G, source=SSM_OK),  # anyone, from SSM_OK only
    ReceiverRule.make(HOST7, HOST_G, iface=RECV_IFACE),
    ReceiverRule.make(HOST7, OTHER_IF_G, iface="mrecv9"),
    ReceiverRule.make("fe80::/10", "ff0e::db8:1:0/112"),
    ReceiverRule.make("::/0", SSM6, source=SSM6_OK),
)

OPEN = IfacePolicy.make(RECV_IFACE)
CLOSED = IfacePolicy.make(RECV_IFACE, "closed")
CLOSED_LIMIT2 = IfacePolicy.make(RECV_IFACE, "closed", 2)
OPEN_LIMIT2 = IfacePolicy.make(RECV_IFACE, "open", 2)
MONITOR = IfacePolicy.make(RECV_IFACE, "monitor")
MONITOR_LIMIT1 = IfacePolicy.make(RECV_IFACE, "monitor", 1)


@dataclass(frozen=True)
class RecvCase:
    name: str
    frame: bytes
    policy: IfacePolicy
    action: str  # "pass" or "drop"
    reason: str  # what the reasons map counts
    out: bytes | None = None  # the frame passed on, if not the input
    counters: tuple[tuple[str, int], ...] = ()  # the interface's counters that grow, and by how much
    denied: tuple[tuple[str, str | None, str, int], ...] = ()  # (group, source, reason, version) refused
    groups: tuple[tuple[str, str], ...] = ()  # (group, "inserted" | "refreshed" | "left") in order
    joined: tuple[str, ...] = ()  # groups the table holds for RECV_IFACE before the row
    monitor: bool = False  # the router's mode is monitor
    inspected: bool = True  # whether the receiver code judges the frame at all


def _cnt(**counts: int) -> tuple[tuple[str, int], ...]:
    return tuple(counts.items())


def message_offset(frame: bytes) -> int:
    """Where the IGMP or ICMPv6 message of a frame built by lab/reports.py starts (past hop-by-hop, fragment)."""
    off, proto = 14, int.from_bytes(frame[12:14], "big")
    while proto in (0x8100, 0x88A8):
        proto, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
    if proto == 0x0800:
        return off + (frame[off] & 0x0F) * 4
    nexthdr, off = frame[off + 6], off + 40
    while nexthdr in (0, 44):
        nexthdr, off = frame[off], off + (8 if nexthdr == 44 else (frame[off + 1] + 1) * 8)
    return off


def _bad_csum(build, *args, **kw) -> bytes:
    """A frame built by `build` whose IGMP/ICMPv6 checksum is off by 0x0100 (never 0 in one's complement)."""
    frame = build(*args, **kw)
    off = message_offset(frame)
    (value,) = struct.unpack_from("!H", frame, off + 2)
    return frame[:off + 2] + struct.pack("!H", value ^ 0x0100) + frame[off + 4:]


def _v3(receiver: str, *specs, **kw) -> bytes:
    return rep.igmp_v3(receiver, rep.records(*specs), **kw)


def _v2(receiver: str, *specs, **kw) -> bytes:
    return rep.mld_v2(receiver, rep.records(*specs), **kw)


def _truncated_record(width_group: str, sources: list[str], claimed: int) -> bytes:
    """A group record that says `claimed` sources but carries `sources`: it runs past its message."""
    raw = rep.Record(rep.ALLOW, width_group, tuple(sources)).encode()
    return raw[:2] + struct.pack("!H", claimed) + raw[4:]


def _short_mld(receiver: str, group: str) -> bytes:
    """An MLDv1 report of 16 bytes with a right checksum: shorter than MLDv1's 24."""
    msg = struct.pack("!BBHHH8s", rep.MLD_V1_REPORT, 0, 0, 0, 0, A6(group).packed[:8])
    pseudo = A6(receiver).packed + A6(group).packed + struct.pack("!IxxxB", len(msg), 58)
    msg = msg[:2] + struct.pack("!H", rep.checksum(pseudo + msg)) + msg[4:]
    return rep.ipv6_frame(receiver, group, 58, msg)


def _mld_in_fragment(receiver: str, records) -> bytes:
    """An MLDv2 report behind a first-fragment header (more fragments follow) instead of hop-by-hop."""
    whole = rep.mld_v2(receiver, records, hop_by_hop=False)
    msg = whole[message_offset(whole):]
    frag = bytes([58, 0]) + struct.pack("!HI", 1, 7)  # offset 0, M=1
    return rep.ipv6_frame(receiver, rep.MLDV2_ROUTERS, 44, frag + msg, hop_by_hop=False)


def _patch(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value):]


def _recv_cases() -> list[RecvCase]:
    c: list[RecvCase] = []

    def add(name, frame, policy, action, reason, out=None, counters=(), denied=(), groups=(), joined=(),
            monitor=False, inspected=True):
        c.append(RecvCase(name, frame, policy, action, reason, out, counters, tuple(denied), tuple(groups),
                          tuple(joined), monitor, inspected))

    TO_EX, IS_EX, TO_IN, IS_IN, ALLOW, BLOCK = rep.TO_EX, rep.IS_EX, rep.TO_IN, rep.IS_IN, rep.ALLOW, rep.BLOCK
    ins, ref, left = "inserted", "refreshed", "left"
    refused, limit = "join_refused", "join_limit"
    malformed = _cnt(reports=1, malformed=1, dropped=1)

    # IGMPv1 and v2: one any-source join; a refused one is dropped.
    add("IGMPv2 report, allowed", rep.igmp_v2(R4, G), CLOSED, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(G, ins)])
    add("IGMPv2 report, group already joined", rep.igmp_v2(R4, G), CLOSED, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(G, ref)], joined=[G])
    add("IGMPv2 report, receiver outside every rule", rep.igmp_v2(STRANGER4, G), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 2)])
    add("IGMPv2 report, group outside every rule", rep.igmp_v2(R4, OUT), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(OUT, None, refused, 2)])
    add("IGMPv1 report, allowed", rep.igmp_v1(R4, G), CLOSED, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(G, ins)])
    add("IGMPv1 report, refused", rep.igmp_v1(STRANGER4, G), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 1)])
    add("IGMPv2 report, a rule of this interface", rep.igmp_v2(HOST7, HOST_G), CLOSED, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(HOST_G, ins)])
    add("IGMPv2 report, a rule of another interface", rep.igmp_v2(HOST7, OTHER_IF_G), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(OTHER_IF_G, None, refused, 2)])
    add("IGMPv2 report of a link-scope group, by anyone", rep.igmp_v2(STRANGER4, LINK_G), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1))
    add("IGMPv2 report with 4 bytes after the group, allowed",
        rep.igmp(R4, G, rep.IGMP_V2_REPORT, G, extra=b"\0" * 4), CLOSED, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(G, ins)])
    add("IGMPv2 report, 802.1Q tagged, refused", rep.igmp_v2(STRANGER4, G, vlan=10), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 2)])
    add("IGMPv2 leave of a joined group, by anyone", rep.igmp_leave(STRANGER4, G), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1, leaves=1), groups=[(G, left)], joined=[G])
    add("IGMPv2 leave of a group not joined", rep.igmp_leave(STRANGER4, OUT), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1, leaves=1))
    add("IGMPv2 leave of a link-scope group", rep.igmp_leave(STRANGER4, LINK_G), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1))
    add("IGMP general query: never touched", rep.igmp_query("10.1.0.1"), CLOSED, "pass", "link_local",
        inspected=False)
    add("IGMP group query with a bad checksum: never touched",
        _bad_csum(rep.igmp_query, "10.1.0.1", G), CLOSED, "pass", "igmp",
        inspected=False)
    add("IGMP mtrace (0x1f) to a group: not a report", rep.igmp(STRANGER4, G, 0x1F, G), CLOSED, "pass", "igmp",
        inspected=False)
    add("IGMPv2 report, bad checksum", _bad_csum(rep.igmp_v2, R4, G), CLOSED, "drop", "malformed",
        counters=malformed)
    add("IGMPv2 report cut to 4 bytes", rep.ipv4_frame(R4, G, rep.igmp_v2(R4, G)[-8:-4]), CLOSED, "drop",
        "malformed", counters=malformed)
    add("IGMP without a byte of message", rep.ipv4_frame(R4, G, b""), CLOSED, "drop", "malformed",
        counters=malformed)
    add("IGMPv2 report in a first fragment", rep.igmp_v2(R4, G, frag=0x2000), CLOSED, "drop", "malformed",
        counters=malformed)

    # The group limit (counted per interface, both families together) and monitor.
    add("limit: a new group when the interface holds 2", rep.igmp_v2(STRANGER4, G3), OPEN_LIMIT2, "drop", limit,
        counters=_cnt(reports=1, limited=1, dropped=1), denied=[(G3, None, limit, 2)], joined=[G, G2])
    add("limit: a group the table holds is refreshed", rep.igmp_v2(STRANGER4, G), OPEN_LIMIT2, "pass", "igmp",
        counters=_cnt(reports=1, kept=1), groups=[(G, ref)], joined=[G, G2])
    add("limit: room for one more, open: no rule needed", rep.igmp_v2(STRANGER4, OUT), OPEN_LIMIT2, "pass",
        "igmp", counters=_cnt(reports=1, kept=1), groups=[(OUT, ins)], joined=[G])
    add("limit and closed: the rules refuse first", rep.igmp_v2(STRANGER4, G3), CLOSED_LIMIT2, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G3, None, refused, 2)], joined=[G, G2])
    add("monitor interface: a refused report passes", rep.igmp_v2(STRANGER4, G), MONITOR, "pass", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 2)])
    add("monitor router, closed interface: a refused report passes", rep.igmp_v2(STRANGER4, G), CLOSED, "pass",
        refused, counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 2)], monitor=True)
    add("monitor interface: a malformed report passes", _bad_csum(rep.igmp_v2, R4, G), MONITOR, "pass",
        "malformed", counters=malformed)
    add("monitor with a limit: the group over it is not inserted", rep.igmp_v2(R4, G2), MONITOR_LIMIT1, "pass",
        limit, counters=_cnt(reports=1, limited=1, dropped=1), denied=[(G2, None, limit, 2)], joined=[G])
    add("open without a limit: not inspected", rep.igmp_v2(STRANGER4, G), OPEN, "pass", "igmp", inspected=False)
    add("open without a limit: a bad checksum is not looked at", _bad_csum(rep.igmp_v2, R4, G), OPEN, "pass",
        "igmp", inspected=False)
    add("data to a group on a closed interface: the sender path", udp(STRANGER4, G, 4), CLOSED, "drop",
        "unauthorized", inspected=False)
    add("UDP to 224.0.0.251 on a closed interface: not IGMP", udp(STRANGER4, LINK_G, 1), CLOSED, "pass",
        "link_local", inspected=False)

    # IGMPv3: records judged one by one; what is refused is removed.
    add("IGMPv3 TO_EX, allowed", _v3(R4, (TO_EX, G)), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1, kept=1), groups=[(G, ins)])
    add("IGMPv3 TO_EX, refused: nothing left", _v3(STRANGER4, (TO_EX, G)), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 3)])
    add("IGMPv3 three records, the middle one refused", _v3(R4, (TO_EX, G), (TO_EX, OUT), (IS_EX, G2)), CLOSED,
        "pass", refused, _v3(R4, (TO_EX, G), (IS_EX, G2)), _cnt(reports=1, kept=2, refused=1, rewritten=1),
        [(OUT, None, refused, 3)], [(G, ins), (G2, ins)])
    add("IGMPv3 IS_EX with an exclude list: an any-source join", _v3(R4, (IS_EX, G, [SSM_BAD])), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1, kept=1), groups=[(G, ins)])
    add("IGMPv3 TO_EX with an exclude list, refused: removed whole", _v3(R4, (TO_EX, OUT, [SSM_OK]), (TO_EX, G)),
        CLOSED, "pass", refused, _v3(R4, (TO_EX, G)), _cnt(reports=1, kept=1, refused=1, rewritten=1),
        [(OUT, None, refused, 3)], [(G, ins)])
    add("IGMPv3 SSM: ALLOW with an allowed and a refused source", _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK, SSM_BAD])),
        CLOSED, "pass", refused, _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK])),
        _cnt(reports=1, kept=1, refused=1, rewritten=1), [(SSM_G, SSM_BAD, refused, 3)], [(SSM_G, ins)])
    add("IGMPv3 SSM: IS_IN, the allowed source between two refused",
        _v3(STRANGER4, (IS_IN, SSM_G, [SSM_BAD, SSM_OK, SSM_BAD2])), CLOSED, "pass", refused,
        _v3(STRANGER4, (IS_IN, SSM_G, [SSM_OK])), _cnt(reports=1, kept=1, refused=2, rewritten=1),
        [(SSM_G, SSM_BAD, refused, 3), (SSM_G, SSM_BAD2, refused, 3)], [(SSM_G, ins)])
    add("IGMPv3 SSM: TO_IN with every source refused stays, a leave", _v3(STRANGER4, (TO_IN, SSM_G, [SSM_BAD])),
        CLOSED, "pass", refused, _v3(STRANGER4, (TO_IN, SSM_G)), _cnt(reports=1, refused=1, leaves=1, rewritten=1),
        [(SSM_G, SSM_BAD, refused, 3)], [(SSM_G, left)], joined=[SSM_G])
    add("IGMPv3 SSM: IS_IN with every source refused is removed",
        _v3(STRANGER4, (IS_IN, SSM_G, [SSM_BAD]), (ALLOW, SSM_G, [SSM_OK])), CLOSED, "pass", refused,
        _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK])), _cnt(reports=1, kept=1, refused=1, rewritten=1),
        [(SSM_G, SSM_BAD, refused, 3)], [(SSM_G, ins)])
    add("IGMPv3 SSM: ALLOW with every source refused, alone: dropped",
        _v3(STRANGER4, (ALLOW, SSM_G, [SSM_BAD, SSM_BAD2])), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=2, dropped=1),
        denied=[(SSM_G, SSM_BAD, refused, 3), (SSM_G, SSM_BAD2, refused, 3)])
    add("IGMPv3 a source-specific rule does not allow an any-source join", _v3(STRANGER4, (TO_EX, SSM_G)), CLOSED,
        "drop", refused, counters=_cnt(reports=1, refused=1, dropped=1), denied=[(SSM_G, None, refused, 3)])
    add("IGMPv3 an any-source rule allows joins of any source", _v3(R4, (ALLOW, G, [SSM_OK, SSM_BAD])), CLOSED,
        "pass", "link_local", counters=_cnt(reports=1, kept=2), groups=[(G, ins), (G, ref)])
    add("IGMPv3 leave records (TO_IN, IS_IN without a source), by anyone",
        _v3(STRANGER4, (TO_IN, G), (IS_IN, OUT)), CLOSED, "pass", "link_local", counters=_cnt(reports=1, leaves=2),
        groups=[(G, left)], joined=[G])
    add("IGMPv3 BLOCK_OLD_SOURCES by anyone: kept", _v3(STRANGER4, (BLOCK, G, [SSM_BAD])), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1))
    add("IGMPv3 a link-scope group by anyone: kept, not judged", _v3(STRANGER4, (TO_EX, LINK_G)), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1))
    add("IGMPv3 record type 7 removed, the rest kept", _v3(R4, (7, G2), (TO_EX, G)), CLOSED, "pass", "malformed",
        _v3(R4, (TO_EX, G)), _cnt(reports=1, kept=1, rewritten=1, malformed=1), groups=[(G, ins)])
    add("IGMPv3 record type 0 alone: dropped", _v3(R4, (0, G)), CLOSED, "drop", "malformed",
        counters=_cnt(reports=1, dropped=1, malformed=1))
    add("IGMPv3 an unknown record type of a link-scope group: removed too", _v3(R4, (9, LINK_G), (TO_EX, G)),
        CLOSED, "pass", "malformed", _v3(R4, (TO_EX, G)), _cnt(reports=1, kept=1, rewritten=1, malformed=1),
        groups=[(G, ins)])
    add("IGMPv3 an unknown and a refused record: join_refused", _v3(R4, (7, G), (TO_EX, OUT), (TO_EX, G2)),
        CLOSED, "pass", refused, _v3(R4, (TO_EX, G2)),
        _cnt(reports=1, kept=1, refused=1, rewritten=1, malformed=1), [(OUT, None, refused, 3)], [(G2, ins)])
    add("IGMPv3 no record at all: passes", _v3(R4), CLOSED, "pass", "link_local", counters=_cnt(reports=1))
    add("IGMPv3 bad checksum", _bad_csum(_v3, R4, (TO_EX, G)), CLOSED, "drop", "malformed", counters=malformed)
    add("IGMPv3 record count past the records: nothing judged", _v3(STRANGER4, (TO_EX, G), nrec=2), CLOSED, "drop",
        "malformed", counters=malformed)
    add("IGMPv3 bytes after the last record: nothing judged", _v3(R4, (TO_EX, G), trailer=b"\0" * 4), CLOSED,
        "drop", "malformed", counters=malformed)
    add("IGMPv3 a record's sources past the end", _v3(R4, (TO_EX, G), nrec=2,
                                                       trailer=_truncated_record(G2, [SSM_OK], 3)),
        CLOSED, "drop", "malformed", counters=malformed)
    add("IGMPv3 a record header cut short", _v3(R4, (TO_EX, G), nrec=2, trailer=b"\x02\x00\x00\x00\xef\x01"),
        CLOSED, "drop", "malformed", counters=malformed)
    add("IGMPv3 in a first fragment", _v3(R4, (TO_EX, G), frag=0x2000), CLOSED, "drop", "malformed",
        counters=malformed)
    add("IGMPv3 in a later fragment", _v3(R4, (TO_EX, G), frag=0x0010), CLOSED, "drop", "malformed",
        counters=malformed)
    add("IGMPv3 aux data stays after the kept sources",
        rep.igmp_v3(STRANGER4, [rep.Record(ALLOW, SSM_G, (SSM_BAD, SSM_OK), aux=b"AUX!")]), CLOSED, "pass", refused,
        rep.igmp_v3(STRANGER4, [rep.Record(ALLOW, SSM_G, (SSM_OK,), aux=b"AUX!")]),
        _cnt(reports=1, kept=1, refused=1, rewritten=1), [(SSM_G, SSM_BAD, refused, 3)], [(SSM_G, ins)])
    add("IGMPv3 without router alert, Ethernet padding: the frame ends with its packet",
        _v3(STRANGER4, (TO_EX, G), (TO_EX, LINK_G), router_alert=False) + b"\0\0", CLOSED, "pass", refused,
        _v3(STRANGER4, (TO_EX, LINK_G), router_alert=False), _cnt(reports=1, refused=1, rewritten=1),
        [(G, None, refused, 3)])
    many = [(TO_EX, f"239.1.{i}.1") if i % 2 == 0 else (TO_EX, f"239.6.{i}.1") for i in range(100)]
    add("IGMPv3 100 records, every other one refused", _v3(R4, *many), CLOSED, "pass", refused,
        _v3(R4, *many[::2]), _cnt(reports=1, kept=50, refused=50, rewritten=1),
        [(f"239.6.{i}.1", None, refused, 3) for i in range(1, 100, 2)],
        [(f"239.1.{i}.1", ins) for i in range(0, 100, 2)])
    add("IGMPv3 100 records, all allowed: untouched", _v3(R4, *many[::2], *many[::2]), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1, kept=100),
        groups=[(f"239.1.{i}.1", ins) for i in range(0, 100, 2)] + [(f"239.1.{i}.1", ref) for i in range(0, 100, 2)])
    add("IGMPv3 limit: a new group, one over, one held", _v3(R4, (TO_EX, G2), (TO_EX, G3), (TO_EX, G)),
        CLOSED_LIMIT2, "pass", limit, _v3(R4, (TO_EX, G2), (TO_EX, G)),
        _cnt(reports=1, kept=2, limited=1, rewritten=1), [(G3, None, limit, 3)], [(G2, ins), (G, ref)], joined=[G])
    add("IGMPv3 limit and rules: join_refused wins", _v3(R4, (TO_EX, G3), (TO_EX, OUT)), CLOSED_LIMIT2, "drop",
        refused, counters=_cnt(reports=1, refused=1, limited=1, dropped=1),
        denied=[(G3, None, limit, 3), (OUT, None, refused, 3)], joined=[G, G2])
    add("IGMPv3 limit: the sources of a new group, no room", _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK, SSM_BAD])),
        OPEN_LIMIT2, "drop", limit, counters=_cnt(reports=1, limited=2, dropped=1),
        denied=[(SSM_G, SSM_OK, limit, 3), (SSM_G, SSM_BAD, limit, 3)], joined=[G, G2])
    add("IGMPv3 limit: the first source inserts, the next refreshes",
        _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK, SSM_BAD])), OPEN_LIMIT2, "pass", "link_local",
        counters=_cnt(reports=1, kept=2), groups=[(SSM_G, ins), (SSM_G, ref)], joined=[G])
    add("IGMPv3 monitor: a report with a refused record passes unchanged", _v3(R4, (TO_EX, G), (TO_EX, OUT)),
        MONITOR, "pass", refused, counters=_cnt(reports=1, kept=1, refused=1, rewritten=1),
        denied=[(OUT, None, refused, 3)], groups=[(G, ins)])
    add("IGMPv3 monitor: nothing would be left", _v3(STRANGER4, (TO_EX, G)), MONITOR, "pass", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G, None, refused, 3)])
    add("IGMPv3 monitor router: no rewrite", _v3(STRANGER4, (ALLOW, SSM_G, [SSM_OK, SSM_BAD])), CLOSED, "pass",
        refused, counters=_cnt(reports=1, kept=1, refused=1, rewritten=1), denied=[(SSM_G, SSM_BAD, refused, 3)],
        groups=[(SSM_G, ins)], monitor=True)
    add("IGMPv3 open without a limit: not inspected", _v3(STRANGER4, (TO_EX, G)), OPEN, "pass", "link_local",
        inspected=False)

    # MLDv1 and MLDv2.
    add("MLDv1 report, allowed", rep.mld_v1(R6, G6), CLOSED, "pass", "mld", counters=_cnt(reports=1, kept=1),
        groups=[(G6, ins)])
    add("MLDv1 report, group outside every rule", rep.mld_v1(R6, OUT6), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(OUT6, None, refused, 1)])
    add("MLDv1 report from outside the receiver prefix", rep.mld_v1(STRANGER6, G6), CLOSED, "drop", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(G6, None, refused, 1)])
    add("MLDv1 done of a joined group", rep.mld_done(STRANGER6, G6), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1, leaves=1), groups=[(G6, left)], joined=[G6])
    add("MLD general query: never touched", rep.mld_query("fe80::1"), CLOSED, "pass", "link_local",
        inspected=False)
    add("MLD group query to a routable group: never touched", rep.mld_query("fe80::1", G6), CLOSED, "pass", "mld",
        inspected=False)
    add("MLDv1 report of a link-scope group, by anyone", rep.mld_v1(STRANGER6, LINK_G6), CLOSED, "pass",
        "link_local", counters=_cnt(reports=1))
    add("MLDv1 report, bad checksum", _bad_csum(rep.mld_v1, R6, G6), CLOSED, "drop", "malformed",
        counters=malformed)
    add("MLDv1 report of 16 bytes", _short_mld(R6, G6), CLOSED, "drop", "malformed", counters=malformed)
    add("MLDv1 report, hop limit 2: data, not a report", rep.mld_v1(R6, OUT6, hlim=2), CLOSED, "drop",
        "unauthorized", inspected=False)
    add("MLDv2 TO_EX, allowed", _v2(R6, (TO_EX, G6)), CLOSED, "pass", "link_local",
        counters=_cnt(reports=1, kept=1), groups=[(G6, ins)])
    add("MLDv2 three records, the middle one refused", _v2(R6, (TO_EX, G6), (TO_EX, OUT6), (IS_EX, G6B)), CLOSED,
        "pass", refused, _v2(R6, (TO_EX, G6), (IS_EX, G6B)), _cnt(reports=1, kept=2, refused=1, rewritten=1),
        [(OUT6, None, refused, 2)], [(G6, ins), (G6B, ins)])
    add("MLDv2 SSM: a refused and an allowed source", _v2(STRANGER6, (ALLOW, SSM6, [SSM6_BAD, SSM6_OK])), CLOSED,
        "pass", refused, _v2(STRANGER6, (ALLOW, SSM6, [SSM6_OK])), _cnt(reports=1, kept=1, refused=1, rewritten=1),
        [(SSM6, SSM6_BAD, refused, 2)], [(SSM6, ins)])
    add("MLDv2 SSM: TO_IN with every source refused stays, a leave", _v2(STRANGER6, (TO_IN, SSM6, [SSM6_BAD])),
        CLOSED, "pass", refused, _v2(STRANGER6, (TO_IN, SSM6)), _cnt(reports=1, refused=1, leaves=1, rewritten=1),
        [(SSM6, SSM6_BAD, refused, 2)])
    add("MLDv2 without a hop-by-hop header: judged the same",
        _v2(STRANGER6, (TO_EX, G6), (TO_EX, LINK_G6), hop_by_hop=False), CLOSED, "pass", refused,
        _v2(STRANGER6, (TO_EX, LINK_G6), hop_by_hop=False), _cnt(reports=1, refused=1, rewritten=1),
        [(G6, None, refused, 2)])
    add("MLDv2 record type 8 removed", _v2(R6, (8, G6B), (TO_EX, G6)), CLOSED, "pass", "malformed",
        _v2(R6, (TO_EX, G6)), _cnt(reports=1, kept=1, rewritten=1, malformed=1), groups=[(G6, ins)])
    add("MLDv2 bad checksum", _bad_csum(_v2, R6, (TO_EX, G6)), CLOSED, "drop", "malformed", counters=malformed)
    add("MLDv2 a record's sources past the end", _v2(R6, (TO_EX, G6), nrec=2,
                                                      trailer=_truncated_record(G6B, [SSM6_OK], 2)),
        CLOSED, "drop", "malformed", counters=malformed)
    add("MLDv2 record count past the records", _v2(R6, (TO_EX, G6), nrec=3), CLOSED, "drop", "malformed",
        counters=malformed)
    add("MLDv2 in a first fragment", _mld_in_fragment(R6, rep.records((TO_EX, G6))), CLOSED, "drop", "malformed",
        counters=malformed)
    mld_ok = _v2(R6, (TO_EX, G6))
    add("MLDv2 payload length past the frame", _patch(mld_ok, 18, struct.pack("!H", len(mld_ok) - 54 + 8)),
        CLOSED, "drop", "malformed", counters=malformed)
    add("MLDv2 hop-by-hop header longer than the payload", _patch(mld_ok, 55, b"\x04"), CLOSED, "drop",
        "malformed", counters=malformed)
    add("ICMPv6 of 2 bytes behind hop-by-hop to ff02::16",
        rep.ipv6_frame(R6, rep.MLDV2_ROUTERS, 58, b"\x8f\x00"), CLOSED, "drop", "malformed", counters=malformed)
    add("MLDv2, 802.1Q tagged, a refused record", _v2(R6, (TO_EX, OUT6), (TO_EX, G6), vlan=10), CLOSED, "pass",
        refused, _v2(R6, (TO_EX, G6), vlan=10), _cnt(reports=1, kept=1, refused=1, rewritten=1),
        [(OUT6, None, refused, 2)], [(G6, ins)])
    many6 = [(TO_EX, f"ff0e::db8:1:{i + 1:x}") if i % 2 == 0 else (TO_EX, f"ff0e::db8:6:{i:x}") for i in range(100)]
    add("MLDv2 100 records, every other one refused", _v2(R6, *many6), CLOSED, "pass", refused,
        _v2(R6, *many6[::2]), _cnt(reports=1, kept=50, refused=50, rewritten=1),
        [(f"ff0e::db8:6:{i:x}", None, refused, 2) for i in range(1, 100, 2)],
        [(f"ff0e::db8:1:{i + 1:x}", ins) for i in range(0, 100, 2)])
    add("MLDv2 limit: both families count together", _v2(R6, (TO_EX, G6), (TO_EX, G6B)), CLOSED_LIMIT2, "pass",
        limit, _v2(R6, (TO_EX, G6)), _cnt(reports=1, kept=1, limited=1, rewritten=1), [(G6B, None, limit, 2)],
        [(G6, ins)], joined=[G])
    add("MLDv2 monitor: a refused report passes", _v2(R6, (TO_EX, OUT6)), MONITOR, "pass", refused,
        counters=_cnt(reports=1, refused=1, dropped=1), denied=[(OUT6, None, refused, 2)])
    add("MLDv2 open without a limit: not inspected", _v2(STRANGER6, (TO_EX, OUT6)), OPEN, "pass", "link_local",
        inspected=False)
    add("neighbour solicitation to a solicited-node group: untouched",
        rep.ipv6_frame(R6, "ff02::1:ff00:5", 58, b"\x87\x00\x00\x00" + bytes(20), hlim=255, hop_by_hop=False),
        CLOSED, "pass", "link_local",
        inspected=False)
    add("UDP to ff02::1 behind a hop-by-hop header: untouched",
        rep.ipv6_frame(R6, "ff02::1", 17, b"\x10\x00\x10\x01\x00\x0c\x00\x00abcd"), CLOSED, "pass", "link_local",
        inspected=False)
    add("IPv6 data to a group on a closed interface: the sender path",
        rep.ipv6_frame(R6, OUT6, 17, b"\x10\x00\x10\x01\x00\x0c\x00\x00abcd", hlim=8, hop_by_hop=False), CLOSED,
        "drop", "unauthorized", inspected=False)
    return c


RECV_CASES = _recv_cases()
