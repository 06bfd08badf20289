"""A pure-Python model of the XDP packet policy, branch for branch.

Strategy (the faucet "fake that executes"): `decide()` takes the same raw
Ethernet frame the XDP program sees and the same rule table, and returns the
same verdict and reason. Unit tests assert on it cheaply; the very same table
of cases (tests/policy_cases.py) is then run against the compiled program with
BPF_PROG_TEST_RUN and through the namespace lab, so the model and the kernel
program cannot drift apart. Keep the order of checks identical to
ebpf/mauth_xdp.c.

    Ethernet  dst(6) src(6) type(2)  [VLAN tci(2) type(2)] x 0..2
    IPv4      0      4      8      16     19             31
              +------+------+------+----------------------+
              |ver|ihl| tos |        total length         |
              |  identification    |flags| fragment off   |
              |  TTL  | proto |      header checksum      |
              |             source address                |
              |           destination address             |
              |         options (ihl*4 - 20 bytes)        |
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Mapping

from .maps import DEFAULT_SAP_GROUPS, SAP_PORT, Mode

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
MAX_VLAN_TAGS = 2
IPPROTO_IGMP = 2
IPPROTO_UDP = 17

PASS = "pass"
DROP = "drop"

# rules: (source, group) -> max TTL, IPv4Address keys
RuleTable = Mapping[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address], int]


@dataclass(frozen=True)
class Verdict:
    action: str  # PASS or DROP (what the program returns)
    reason: str  # name in musersd.maps.REASONS (what it counts)
    key: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    ttl: int | None = None
    new_ttl: int | None = None  # the TTL the program writes into the packet, if it rewrites it

    @property
    def would_drop(self) -> bool:
        return self.reason in ("unauthorized", "ttl", "rate")


def _pass(reason: str) -> Verdict:
    return Verdict(PASS, reason)


def decide(frame: bytes, rules: RuleTable, mode: Mode = Mode.ENFORCE,
           sap_groups: tuple[str, ...] = DEFAULT_SAP_GROUPS) -> Verdict:
    """The verdict of the XDP program on `frame` given `rules`, `mode` and the program's SAP groups."""
    if len(frame) < 14:
        return _pass("malformed")
    (proto,) = struct.unpack_from("!H", frame, 12)
    off = 14
    for _ in range(MAX_VLAN_TAGS):
        if proto not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        if len(frame) < off + 4:
            return _pass("malformed")
        (proto,) = struct.unpack_from("!H", frame, off + 2)
        off += 4

    if proto == ETH_P_IPV6:
        return _pass("ipv6")
    if proto != ETH_P_IP:
        return _pass("not_ip")

    if len(frame) < off + 20:
        return _pass("malformed")
    ver_ihl, _tos, tot_len, _id, frag, ttl, proto, _csum, src, dst = struct.unpack_from(
        "!BBHHHBBH4s4s", frame, off
    )
    version, ihl = ver_ihl >> 4, ver_ihl & 0x0F
    if version != 4 or ihl < 5:
        return _pass("malformed")
    if off + ihl * 4 > len(frame):
        return _pass("malformed")
    if tot_len < ihl * 4 or off + tot_len > len(frame):
        return _pass("malformed")

    if dst[0] & 0xF0 != 0xE0:
        return _pass("not_multicast")
    if dst[0] == 224 and dst[1] == 0 and dst[2] == 0:
        return _pass("link_local")
    if proto == IPPROTO_IGMP:
        return _pass("igmp")

    key = (ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst))
    max_ttl = rules.get(key)
    if max_ttl is None:
        reason = "unauthorized"
    elif ttl > max_ttl:
        reason = "ttl"
    else:
        return Verdict(PASS, "passed", key, ttl)
    if _is_sap(frame, off, ihl, proto, frag, key[1], sap_groups):
        rewrite = ttl > 1 and mode is not Mode.MONITOR
        return Verdict(PASS, "sap_local", key, ttl, 1 if rewrite else None)
    action = PASS if mode is Mode.MONITOR else DROP
    return Verdict(action, reason, key, ttl)


def _is_sap(frame: bytes, off: int, ihl: int, proto: int, frag: int, group: ipaddress.IPv4Address,
            sap_groups: tuple[str, ...]) -> bool:
    """UDP to the SAP port on a SAP group, not a fragment, with its UDP header in the frame."""
    if str(group) not in sap_groups or proto != IPPROTO_UDP or frag & 0x3FFF:
        return False
    udp = off + ihl * 4
    if len(frame) < udp + 8:
        return False
    (dport,) = struct.unpack_from("!H", frame, udp + 2)
    return dport == SAP_PORT
