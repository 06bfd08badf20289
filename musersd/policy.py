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
    IPv6      ver(4) class(8) flow(20) | payload length(16) next(8) hop limit(8)
              source(16) destination(16), then extension headers, each
              next(8) len(8) ...: (len+1)*8 bytes, AH (len+2)*4, fragment 8
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mauthcore.protocol.model import Mode
from mauthcore.rules import Rule

from .filter import Binding
from .maps import DROP_REASONS, MIN_BIT_BURST, MIN_PKT_BURST, NSEC, SAP_GROUPS, SAP_PORT, bucket

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
MAX_VLAN_TAGS = 2
IPPROTO_IGMP = 2
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
NEXTHDR_HOP = 0
NEXTHDR_FRAGMENT = 44
NEXTHDR_AUTH = 51
IPV6_EXTENSIONS = frozenset({NEXTHDR_HOP, 43, NEXTHDR_FRAGMENT, NEXTHDR_AUTH, 60})  # hop, routing, frag, AH, dest
IPV6_MAX_EXT = 8  # MAUTH_IPV6_MAX_EXT
MLD_TYPES = frozenset({130, 131, 132, 143})

PASS = "pass"
DROP = "drop"

# rules: (source, group) -> max TTL, or -> a Rule (which may carry rate
# limits). Each side of a key is an address, or a network for a prefix
# rule (one side at most, as in mauthcore.rules), both of one family.
Side = ipaddress.IPv4Address | ipaddress.IPv4Network | ipaddress.IPv6Address | ipaddress.IPv6Network
_Networks = (ipaddress.IPv4Network, ipaddress.IPv6Network)
RuleMapping = Mapping[tuple[Side, Side], int | Rule]
# within_rate(rule key, rule, frame length) -> whether the packet fits the rule's rate (and is charged)
RateOracle = Callable[[tuple[Side, Side], Rule, int], bool]


@dataclass(frozen=True)
class Verdict:
    action: str  # PASS or DROP (what the program returns)
    reason: str  # name in musersd.maps.REASONS (what it counts)
    key: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None = None
    ttl: int | None = None  # TTL, or hop limit
    new_ttl: int | None = None  # the TTL (hop limit) the program writes into the packet, if it rewrites it
    rule: tuple[Side, Side] | None = None  # the key of the rule the packet fell under, if any

    @property
    def would_drop(self) -> bool:
        return self.reason in DROP_REASONS


class Bindings:
    """The program's bindings map, for decide(): each bound rule's Binding, its learned pair and `moved`.

    `routes(source)` is the ifindex the FIB sends `source` back through, or
    None when it has no route (what bpf_fib_lookup() answers the program).
    Like the program, learning happens whatever the mode: monitor mode only
    stops the drop.
    """

    def __init__(self, table: Mapping[tuple[Side, Side], Binding],
                 routes: Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], int | None] = lambda _: None,
                 rpf_ifaces: frozenset[int] = frozenset()):
        self.table = dict(table)
        self.routes = routes
        self.rpf_ifaces = rpf_ifaces  # interfaces that check every rule's reverse path (musersd --rpf-iface)
        self.learned: dict[tuple[Side, Side], tuple[int, bytes]] = {}
        self.moved: dict[tuple[Side, Side], int] = {}

    def clear_learned(self, key: tuple[Side, Side]) -> None:
        """Re-arm a rule's learning (what DataPlane.clear_learned() does): no pair, nothing moved."""
        self.learned.pop(key, None)
        self.moved.pop(key, None)

    def check(self, key: tuple[Side, Side], ifindex: int, mac: bytes, source) -> str:
        """mauth_bound(): "passed" or the reason to drop a packet of the rule `key` (bound or not)."""
        b = self.table.get(key)
        if b is None or b.empty:
            return "passed"
        if b.ifindex and b.ifindex != ifindex:
            return "wrong_iif"
        if b.mac and b.mac != mac:
            return "wrong_mac"
        if b.rpf and self.routes(source) != ifindex:
            return "rpf_fail"
        if b.learn:
            pinned = self.learned.setdefault(key, (ifindex, mac))
            reason = "passed" if pinned == (ifindex, mac) else "wrong_iif" if pinned[0] != ifindex else "wrong_mac"
            if reason != "passed":
                self.moved[key] = self.moved.get(key, 0) + 1
            return reason
        return "passed"


@dataclass(frozen=True)
class Origin:
    """Where a packet came from, as a bound rule's check sees it."""

    bindings: Bindings
    ifindex: int  # the ingress interface (xdp_md.ingress_ifindex)
    mac: bytes  # the frame's source MAC


def _pass(reason: str) -> Verdict:
    return Verdict(PASS, reason)


def find_rule(rules: RuleMapping, source, group) -> tuple[tuple[Side, Side], int | Rule] | None:
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
        if g == group and isinstance(s, _Networks) and source in s:
            if best is None or s.prefixlen > best[0][0].prefixlen:
                best = ((s, g), value)
    if best is not None:
        return best
    for (s, g), value in rules.items():  # group prefixes for this source
        if s == source and isinstance(g, _Networks) and group in g:
            if best is None or g.prefixlen > best[0][1].prefixlen:
                best = ((s, g), value)
    return best


def decide(frame: bytes, rules: RuleMapping, mode: Mode = Mode.ENFORCE,
           sap_groups: tuple[str, ...] = SAP_GROUPS, *,
           within_rate: RateOracle | None = None, bindings: Bindings | None = None, ingress: int = 0) -> Verdict:
    """The verdict of the XDP program on `frame` given `rules`, `mode` and the program's SAP groups.

    `within_rate` decides for a packet of a rate-limited rule (one given as a
    Rule with pps or bps) whether it fits the rule's rate; None: it always
    does (a program whose buckets never run dry). `bindings` holds the bound
    rules' bindings (None: no rule is bound), `ingress` the ifindex the frame
    came in on.
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

    origin = Origin(bindings, ingress, frame[6:12]) if bindings is not None else None
    if proto == ETH_P_IPV6:
        return _decide6(frame, off, rules, mode, sap_groups, within_rate, origin)
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
    matched, reason = _judge(rules, key, ttl, len(frame), within_rate, origin)
    if reason == "passed":
        return Verdict(PASS, "passed", key, ttl, rule=matched)
    if _is_sap(frame, off, ihl, proto, frag, key[1], sap_groups):
        rewrite = ttl > 1 and mode is not Mode.MONITOR
        return Verdict(PASS, "sap_local", key, ttl, 1 if rewrite else None, rule=matched)
    action = PASS if mode is Mode.MONITOR else DROP
    return Verdict(action, reason, key, ttl, rule=matched)


def _judge(rules: RuleMapping, key: tuple, ttl: int, length: int,
           within_rate: RateOracle | None, origin: Origin | None = None) -> tuple[tuple[Side, Side] | None, str]:
    """(the key of the rule the packet falls under or None, "passed" or the reason to drop it)."""
    found = find_rule(rules, *key)
    if found is None:
        return None, "unauthorized"
    matched, rule = found
    if origin is not None:
        bound = origin.bindings.check(matched, origin.ifindex, origin.mac, key[0])
        if bound != "passed":
            return matched, bound
        if origin.ifindex in origin.bindings.rpf_ifaces and origin.bindings.routes(key[0]) != origin.ifindex:
            return matched, "rpf_fail"
    max_ttl = rule.max_ttl if isinstance(rule, Rule) else rule
    if ttl > max_ttl:
        return matched, "ttl"
    if (isinstance(rule, Rule) and rule.rate_limited and within_rate is not None
            and not within_rate(matched, rule, length)):
        return matched, "rate"
    return matched, "passed"


def _walk6(frame: bytes, off: int, end: int, nexthdr: int) -> tuple[int, int, bool, bool] | None:
    """Walk IPv6 extension headers as the program does: (upper protocol, its offset, fragment, later fragment).

    None if the headers cannot be walked: one truncated or beyond the
    payload (`end`), hop-by-hop anywhere but first, or more than IPV6_MAX_EXT.
    """
    frag = later = False
    for i in range(IPV6_MAX_EXT):
        if nexthdr not in IPV6_EXTENSIONS:
            return nexthdr, off, frag, later
        if nexthdr == NEXTHDR_HOP and i > 0:
            return None
        if off + 8 > len(frame):
            return None
        if nexthdr == NEXTHDR_FRAGMENT:
            hlen = 8
            frag = True
            later = struct.unpack_from("!H", frame, off + 2)[0] & 0xFFF8 != 0
        elif nexthdr == NEXTHDR_AUTH:
            hlen = (frame[off + 1] + 2) * 4
        else:
            hlen = (frame[off + 1] + 1) * 8
        if off + hlen > end:
            return None
        nexthdr = frame[off]
        off += hlen
        if later:
            return nexthdr, off, frag, later
    if nexthdr in IPV6_EXTENSIONS:
        return None
    return nexthdr, off, frag, later


def _decide6(frame: bytes, l3: int, rules: RuleMapping, mode: Mode, sap_groups: tuple[str, ...],
             within_rate: RateOracle | None, origin: Origin | None = None) -> Verdict:
    """decide() for the IPv6 packet at `l3` (the program's mauth_ipv6())."""
    if len(frame) < l3 + 40:
        return _pass("malformed")
    if frame[l3] >> 4 != 6:
        return _pass("malformed")
    plen, nexthdr, hop_limit = struct.unpack_from("!HBB", frame, l3 + 4)
    src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
    if dst[0] != 0xFF:
        return _pass("not_multicast")
    if dst[1] & 0x0F <= 2:
        return _pass("link_local")
    drop = PASS if mode is Mode.MONITOR else DROP
    end = l3 + 40 + plen
    walked = _walk6(frame, l3 + 40, end, nexthdr) if end <= len(frame) else None
    if walked is None:
        return Verdict(drop, "malformed")
    upper, off, frag, later = walked
    if (upper == IPPROTO_ICMPV6 and not later and hop_limit == 1 and off < end
            and frame[off] in MLD_TYPES):
        return _pass("mld")
    key = (ipaddress.IPv6Address(src), ipaddress.IPv6Address(dst))
    matched, reason = _judge(rules, key, hop_limit, len(frame), within_rate, origin)
    if reason == "passed":
        return Verdict(PASS, "passed", key, hop_limit, rule=matched)
    if (upper == IPPROTO_UDP and not frag and off + 8 <= end
            and struct.unpack_from("!H", frame, off + 2)[0] == SAP_PORT and _in_sap_groups(key[1], sap_groups)):
        rewrite = hop_limit > 1 and mode is not Mode.MONITOR
        return Verdict(PASS, "sap_local", key, hop_limit, 1 if rewrite else None, rule=matched)
    return Verdict(drop, reason, key, hop_limit, rule=matched)


@functools.lru_cache(maxsize=16)
def _sap_addresses(sap_groups: tuple[str, ...]) -> frozenset:
    return frozenset(ipaddress.ip_address(g) for g in sap_groups)


def _in_sap_groups(group, sap_groups: tuple[str, ...]) -> bool:
    """Whether `group` is one of the SAP groups (parsed once per tuple: NFQUEUE asks for every denied packet)."""
    return group in _sap_addresses(tuple(sap_groups))


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
    if not _in_sap_groups(group, sap_groups) or proto != IPPROTO_UDP or frag & 0x3FFF:
        return False
    udp = off + ihl * 4
    if len(frame) < udp + 8:
        return False
    (dport,) = struct.unpack_from("!H", frame, udp + 2)
    return dport == SAP_PORT


ETH_HEADER_IP = bytes(12) + struct.pack("!H", ETH_P_IP)  # what decide_ip() puts in front of a packet


def decide_ip(packet: bytes, rules: RuleMapping, mode: Mode = Mode.ENFORCE,
              sap_groups: tuple[str, ...] = SAP_GROUPS, *,
              within_rate: RateOracle | None = None) -> Verdict:
    """decide() for an IPv4 packet without its link layer (what NFQUEUE hands to user space).

    Rate limits are charged the packet's length plus 14 bytes, as the XDP
    filter charges an untagged Ethernet frame.
    """
    return decide(ETH_HEADER_IP + packet, rules, mode, sap_groups, within_rate=within_rate)
