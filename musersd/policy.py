"""A pure-Python model of the XDP packet policy, branch for branch.

Strategy (the faucet "fake that executes"): `decide()` takes the same raw
Ethernet frame the XDP program sees and the same rule table, and returns the
same verdict and reason. Unit tests assert on it cheaply; the very same table
of cases (tests/policy_cases.py) is then run against the compiled program with
BPF_PROG_TEST_RUN and through the namespace lab, so the model and the kernel
program cannot drift apart. Keep the order of checks identical to
ebpf/mauth_xdp.c.

Rules are found as the program finds them (ebpf/mauth.h): the exact
(source, group) first, then the longest source prefix for the group, then
the longest group prefix for the source. Rate limits need a clock, which a
pure function has not: `decide()` takes an oracle, `within_rate`, and
`RateBuckets` is one that runs the program's token buckets, integer for
integer, on a clock the caller moves.

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
from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

from .maps import DEFAULT_SAP_GROUPS, MIN_BIT_BURST, MIN_PKT_BURST, NSEC, SAP_PORT, Mode, bucket
from .rules import Rule

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
MAX_VLAN_TAGS = 2
IPPROTO_IGMP = 2
IPPROTO_UDP = 17

PASS = "pass"
DROP = "drop"

# rules: (source, group) -> max TTL, or -> a Rule (which may carry rate
# limits). Each side of a key is an IPv4Address, or an IPv4Network for a
# prefix rule (one side at most, as in musersd.rules).
Side = Union[ipaddress.IPv4Address, ipaddress.IPv4Network]
RuleTable = Mapping[tuple[Side, Side], Union[int, Rule]]
# within_rate(rule key, rule, frame length) -> whether the packet fits the rule's rate (and is charged)
RateOracle = Callable[[tuple[Side, Side], Rule, int], bool]


@dataclass(frozen=True)
class Verdict:
    action: str  # PASS or DROP (what the program returns)
    reason: str  # name in musersd.maps.REASONS (what it counts)
    key: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    ttl: int | None = None
    new_ttl: int | None = None  # the TTL the program writes into the packet, if it rewrites it
    rule: tuple[Side, Side] | None = None  # the key of the rule the packet fell under, if any

    @property
    def would_drop(self) -> bool:
        return self.reason in ("unauthorized", "ttl", "rate")


def _pass(reason: str) -> Verdict:
    return Verdict(PASS, reason)


def find_rule(rules: RuleTable, source: ipaddress.IPv4Address,
              group: ipaddress.IPv4Address) -> tuple[tuple[Side, Side], int | Rule] | None:
    """(key, value) of the rule a packet from `source` to `group` falls under, or None.

    The exact key; else the longest source prefix holding `source` whose
    group is `group`; else the longest group prefix holding `group` whose
    source is `source`.
    """
    value = rules.get((source, group))
    if value is not None:
        return (source, group), value
    best: tuple | None = None
    for (s, g), value in rules.items():  # source prefixes for this group
        if g == group and isinstance(s, ipaddress.IPv4Network) and source in s:
            if best is None or s.prefixlen > best[0][0].prefixlen:
                best = ((s, g), value)
    if best is not None:
        return best
    for (s, g), value in rules.items():  # group prefixes for this source
        if s == source and isinstance(g, ipaddress.IPv4Network) and group in g:
            if best is None or g.prefixlen > best[0][1].prefixlen:
                best = ((s, g), value)
    return best


def decide(frame: bytes, rules: RuleTable, mode: Mode = Mode.ENFORCE,
           sap_groups: tuple[str, ...] = DEFAULT_SAP_GROUPS, *,
           within_rate: RateOracle | None = None) -> Verdict:
    """The verdict of the XDP program on `frame` given `rules`, `mode` and the program's SAP groups.

    `within_rate` decides for a packet of a rate-limited rule (one given as a
    Rule with pps or bps) whether it fits the rule's rate; None: it always
    does (a program whose buckets never run dry).
    """
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
    found = find_rule(rules, *key)
    matched = found[0] if found is not None else None
    if found is None:
        reason = "unauthorized"
    else:
        rule = found[1]
        max_ttl = rule.max_ttl if isinstance(rule, Rule) else rule
        if ttl > max_ttl:
            reason = "ttl"
        elif (isinstance(rule, Rule) and rule.rate_limited and within_rate is not None
              and not within_rate(matched, rule, len(frame))):
            reason = "rate"
        else:
            return Verdict(PASS, "passed", key, ttl, rule=matched)
    if _is_sap(frame, off, ihl, proto, frag, key[1], sap_groups):
        rewrite = ttl > 1 and mode is not Mode.MONITOR
        return Verdict(PASS, "sap_local", key, ttl, 1 if rewrite else None, rule=matched)
    action = PASS if mode is Mode.MONITOR else DROP
    return Verdict(action, reason, key, ttl, rule=matched)


U64 = (1 << 64) - 1


@dataclass
class _Buckets:
    pps: int
    bps: int
    last: int
    pkt: int
    bit: int
    pkt_burst: int = field(init=False)
    pkt_fill: int = field(init=False)
    bit_burst: int = field(init=False)
    bit_fill: int = field(init=False)

    def __post_init__(self) -> None:
        self.pkt_burst, self.pkt_fill = bucket(self.pps, MIN_PKT_BURST)
        self.bit_burst, self.bit_fill = bucket(self.bps, MIN_BIT_BURST)


def _refill(tokens: int, rate: int, burst: int, fill: int, elapsed: int) -> int:
    """mauth_refill() of ebpf/mauth_xdp.c; asserts the C code's u64 arithmetic cannot overflow."""
    add = min(elapsed, fill) * rate
    assert add <= U64 and burst <= U64 and tokens <= burst, "the program's u64 arithmetic would overflow"
    return burst if add >= burst - tokens else tokens + add


class RateBuckets:
    """A `within_rate` oracle running the program's token buckets (mauth_within_rate()) on a fake clock.

    One pair of buckets per rule key, made full the first time the rule is
    seen or when its limits change (as musersd writes them). `now` is the
    program's clock in nanoseconds; move it with `advance()`.
    """

    def __init__(self, now: int = 0) -> None:
        self.now = now
        self._state: dict[tuple, _Buckets] = {}

    def advance(self, ns: int) -> None:
        self.now += ns

    def forget(self, key: tuple) -> None:
        """Drop a rule's buckets (the rule was removed): they start full if it comes back, as in the program."""
        self._state.pop(key, None)

    def __call__(self, key: tuple, rule: Rule, length: int) -> bool:
        b = self._state.get(key)
        if b is None or (b.pps, b.bps) != (rule.pps, rule.bps):
            b = self._state[key] = _Buckets(rule.pps, rule.bps, self.now, 0, 0)
            b.pkt, b.bit = b.pkt_burst, b.bit_burst
        elapsed = 0
        if self.now > b.last:
            elapsed, b.last = self.now - b.last, self.now
        pkt, bit, cost = b.pkt, b.bit, length * 8 * NSEC
        ok = True
        if b.pps:
            pkt = _refill(pkt, b.pps, b.pkt_burst, b.pkt_fill, elapsed)
            ok = pkt >= NSEC
        if b.bps:
            bit = _refill(bit, b.bps, b.bit_burst, b.bit_fill, elapsed)
            ok = ok and bit >= cost
        if ok:
            pkt -= NSEC if b.pps else 0
            bit -= cost if b.bps else 0
        b.pkt, b.bit = pkt, bit
        return ok


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


ETH_HEADER_IP = bytes(12) + struct.pack("!H", ETH_P_IP)  # what decide_ip() puts in front of a packet


def decide_ip(packet: bytes, rules: RuleTable, mode: Mode = Mode.ENFORCE,
              sap_groups: tuple[str, ...] = DEFAULT_SAP_GROUPS, *,
              within_rate: RateOracle | None = None) -> Verdict:
    """decide() for an IPv4 packet without its link layer (what NFQUEUE hands to user space).

    Rate limits are charged the packet's length plus 14 bytes, as the XDP
    filter charges an untagged Ethernet frame.
    """
    return decide(ETH_HEADER_IP + packet, rules, mode, sap_groups, within_rate=within_rate)
