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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mauthcore.protocol.model import Mode
from mauthcore.receivers import IfacePolicy, ReceiverMode, ReceiverRule
from mauthcore.rules import Rule

from .filter import RECV_COUNTERS, Binding
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


# -- receivers: membership reports ---------------------------------------------------------------------------
#
# The receiver half of the model (docs/operations.md, "Authorizing receivers"; ebpf/mauth.h, "Receivers"):
# what the program does with an IGMP or MLD message arriving on a guarded interface whose IfacePolicy
# inspects. judge_report() is the executable statement of that policy: tests/policy_cases.py RECV_CASES
# runs every row through it and through the compiled program (BPF_PROG_TEST_RUN), and the output frames
# must agree byte for byte.
#
#     IGMP (RFC 2236, RFC 3376 4)             MLD (RFC 2710 3, RFC 3810 5), after the extension headers
#     type(8) code(8) checksum(16)            type(8) code(8) checksum(16) [v1: max delay(16) reserved(16)]
#     v1/v2: group(32)                        v1: group(128)
#     v3 report: reserved(16) nrec(16)        v2 report: reserved(16) nrec(16)
#       record: rtype(8) auxlen(8)              record: rtype(8) auxlen(8) nsrc(16) group(128)
#               nsrc(16) group(32)                      source(128) x nsrc, aux data auxlen*4
#               source(32) x nsrc, aux data auxlen*4

IGMP_QUERY, IGMP_V1_REPORT, IGMP_V2_REPORT, IGMP_V2_LEAVE, IGMP_V3_REPORT = 0x11, 0x12, 0x16, 0x17, 0x22
MLD_QUERY, MLD_V1_REPORT, MLD_V1_DONE, MLD_V2_REPORT = 130, 131, 132, 143
IS_IN, IS_EX, TO_IN, TO_EX, ALLOW, BLOCK = 1, 2, 3, 4, 5, 6  # group record types (RFC 3376 4.2.12)
RECV_BUF = 16384  # the longest IP packet the program judges (MAUTH_RECV_BUF); longer: malformed
RECV_OLD_REASONS = frozenset({"link_local", "igmp", "mld"})  # what a report kept whole counts under

# message type -> (version, what it is): everything of a family not listed is left as it is (queries too)
_IGMP_KINDS = {IGMP_V1_REPORT: (1, "join"), IGMP_V2_REPORT: (2, "join"), IGMP_V2_LEAVE: (2, "leave"),
               IGMP_V3_REPORT: (3, "records")}
_MLD_KINDS = {MLD_V1_REPORT: (1, "join"), MLD_V1_DONE: (1, "leave"), MLD_V2_REPORT: (2, "records")}
_MIN_LENGTH = {(4, "join"): 8, (4, "leave"): 8, (4, "records"): 8, (6, "join"): 24, (6, "leave"): 24,
               (6, "records"): 8}  # a message shorter than this is malformed

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class JoinOutcome:
    """What became of one group record, one of its sources, or a v1/v2 message.

    outcome: "kept" (a join allowed), "refused" (by the receiver rules),
    "limited" (by the group limit), "leave" (a leave message or record: kept,
    its group marked left), "block" (BLOCK_OLD_SOURCES: kept, not judged),
    "link_scope" (a link-scope group: kept, never judged or counted),
    "malformed" (a record of an unknown type: removed). `record` is the
    record's index in the report (0 for a v1/v2 message), `source` None for an
    any-source join or a whole record, `rule` the first receiver rule that
    allowed a kept join (None on an open interface).
    """

    record: int
    rtype: int  # the record type, or the v1/v2 message type
    group: IPAddr
    source: IPAddr | None
    outcome: str
    rule: ReceiverRule | None = None


@dataclass(frozen=True)
class RefusedJoin:
    """A join to record in the denied-receivers table (key: interface, receiver, group, source or zero)."""

    receiver: IPAddr
    group: IPAddr
    source: IPAddr | None
    reason: str  # "join_refused" | "join_limit"
    version: int  # IGMP 1..3, MLD 1..2


@dataclass(frozen=True)
class GroupEvent:
    """A change the report makes to the joined-groups table, in the order the program makes it.

    event: "inserted" (a new group, which takes a place of the limit),
    "refreshed" (its last report, reporter and report count), "left" (its
    left time; only a group the table holds is marked).
    """

    group: IPAddr
    event: str


@dataclass(frozen=True)
class ReportVerdict:
    """The program's verdict on one frame on an interface, as the receiver half sees it.

    `action` "pass" or "drop"; `frame` the exact bytes the program passes on
    (the input when nothing was refused, or in monitor, or when it drops);
    `reason` the one reason the reasons map counts; `inspected` whether the
    receiver code judged the frame at all (False: it took the sender path
    and `reason` is decide()'s); `counters` what the interface's receiver
    counters (musersd/filter.py RECV_COUNTERS) gain.
    """

    action: str
    frame: bytes
    reason: str
    inspected: bool = False
    version: int = 0
    outcomes: tuple[JoinOutcome, ...] = ()
    denied: tuple[RefusedJoin, ...] = ()
    groups: tuple[GroupEvent, ...] = ()
    counters: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(RECV_COUNTERS, 0))

    def _events(self, kind: str) -> tuple[IPAddr, ...]:
        return tuple(e.group for e in self.groups if e.event == kind)

    @property
    def inserted(self) -> tuple[IPAddr, ...]:
        return self._events("inserted")

    @property
    def refreshed(self) -> tuple[IPAddr, ...]:
        return self._events("refreshed")

    @property
    def left(self) -> tuple[IPAddr, ...]:
        return self._events("left")


class _Malformed(Exception):
    """The report cannot be judged: dropped (passed in monitor) and counted malformed, nothing else done."""


@dataclass
class _Judge:
    """One report's judgement in progress: the interface's state as the report changes it, and what it did."""

    iface: str
    policy: IfacePolicy
    rules: Sequence[ReceiverRule]
    receiver: IPAddr
    version: int
    joined: set[IPAddr]  # groups of this interface in the table
    count: int  # the limit's count of this interface
    outcomes: list[JoinOutcome] = field(default_factory=list)
    denied: list[RefusedJoin] = field(default_factory=list)
    groups: list[GroupEvent] = field(default_factory=list)

    def join(self, record: int, rtype: int, group: IPAddr, source: IPAddr | None) -> bool:
        """Judge one join (docs/operations.md: rules in closed and monitor mode, then the limit): allowed?"""
        rule = None
        if self.policy.mode is not ReceiverMode.OPEN:
            rule = next((r for r in self.rules if r.allows(self.receiver, group, source, self.iface)), None)
            if rule is None:
                return self._refuse(record, rtype, group, source, "refused", "join_refused")
        if group in self.joined:
            self.groups.append(GroupEvent(group, "refreshed"))
        elif self.policy.limit and self.count >= self.policy.limit:
            return self._refuse(record, rtype, group, source, "limited", "join_limit")
        else:
            self.joined.add(group)
            self.count += 1
            self.groups.append(GroupEvent(group, "inserted"))
        self.outcomes.append(JoinOutcome(record, rtype, group, source, "kept", rule))
        return True

    def _refuse(self, record: int, rtype: int, group: IPAddr, source: IPAddr | None, outcome: str,
                reason: str) -> bool:
        self.outcomes.append(JoinOutcome(record, rtype, group, source, outcome))
        self.denied.append(RefusedJoin(self.receiver, group, source, reason, self.version))
        return False

    def leave(self, record: int, rtype: int, group: IPAddr) -> None:
        self.outcomes.append(JoinOutcome(record, rtype, group, None, "leave"))
        if group in self.joined:
            self.groups.append(GroupEvent(group, "left"))

    def keep(self, record: int, rtype: int, group: IPAddr, outcome: str) -> None:
        self.outcomes.append(JoinOutcome(record, rtype, group, None, outcome))

    def tally(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


def link_scope(group: IPAddr) -> bool:
    """Whether joins of `group` are never judged: 224.0.0.0/24, or an IPv6 multicast group of scope 2 or less."""
    packed = group.packed
    if group.version == 4:
        return packed[:3] == b"\xe0\x00\x00"
    return packed[0] == 0xFF and packed[1] & 0x0F <= 2


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's complement of the one's complement sum of `data` (an odd byte padded with zero)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo6(ip6: bytes, length: int) -> bytes:
    """The ICMPv6 pseudo-header (RFC 8200 8.1) of the IPv6 header `ip6` for a message of `length` bytes."""
    return ip6[8:40] + struct.pack("!IxxxB", length, IPPROTO_ICMPV6)


def _l3_offset(frame: bytes) -> int:
    off, proto = 14, int.from_bytes(frame[12:14], "big")
    for _ in range(MAX_VLAN_TAGS):
        if proto not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        proto, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
    return off


def judge_report(frame: bytes, iface: str, policy: IfacePolicy, rules: Sequence[ReceiverRule],
                 joined: set[tuple[str, IPAddr]], group_count: int, monitor: bool = False, *,
                 sender_rules: RuleMapping | None = None) -> ReportVerdict:
    """The program's verdict on `frame` arriving on `iface`, whose receiver policy is `policy`.

    `rules` are the receiver rules in the order the program scans them (the
    first that allows a join gets its hit); `joined` the (interface, group)
    pairs the joined-groups table holds before the frame; `group_count` the
    interface's count of joined groups (what the limit compares); `monitor`
    the router's global mode. Nothing passed in is changed: the verdict says
    what the program changes (`groups`, `denied`, `counters`).

    Which frames the receiver code sees (everything else takes decide()'s
    path with `sender_rules`, unchanged, and so does every frame when the
    policy does not inspect: open without a limit costs nothing):

    * IPv4 IGMP (protocol 2) to a multicast destination, 224.0.0.0/24 included
      (IGMPv3 reports go to 224.0.0.22), whose IP header decide() accepts;
    * IPv6 to a link-scope destination (scope <= 2; MLDv2 reports go to
      ff02::16) whose next header is ICMPv6 or an extension header, and MLD
      with hop limit 1 to a routable group (decide()'s "mld").

    Then, in this order (the old reason is decide()'s: link_local, igmp or mld):

    1. IPv6 only: ICMPv6 right after the fixed header whose type (if the
       frame holds it) is not MLD (130-132, 143): old reason, untouched.
    2. Malformed: the IP packet past the frame or longer than RECV_BUF; an
       IPv6 extension header that does not walk (decide()'s walk) or a ninth;
       an ICMPv6 message shorter than 4 bytes; an IPv4 fragment (MF or an
       offset). IPv6: a non-first fragment, anything but ICMPv6 after the
       headers, or a type that is not MLD: old reason, untouched; then a first
       fragment: malformed.
    3. No message byte at all: malformed. A query (0x11, 130) or any IGMP type
       but 0x12, 0x16, 0x17, 0x22: old reason, untouched, never counted.
    4. Malformed: a message shorter than its type's minimum (IGMP 8, MLDv1 24,
       MLDv2 report 8), a wrong IGMP or ICMPv6 checksum (with the
       pseudo-header), for a v3/v2 report a record header or its sources and
       aux data past the message, or bytes after the last record. A malformed
       report is judged not at all: no join counted, no group touched,
       nothing recorded; counters reports, malformed, dropped; reason
       "malformed"; dropped (passed in monitor).
    5. A leave (0x17, 132): kept; its group marked left (if the table holds
       it) and counted a leave, unless of link scope. A v1/v2 report: one
       any-source join of its group (none for a link-scope group); refused:
       dropped. Either way the message is otherwise untouched.
    6. A v3/v2 report: each record in order (`_records()` says what becomes of
       each); the kept records are moved together in order, and if anything
       was removed the report is rewritten (`_rewrite()`), or dropped if no
       record is left. Nothing removed: passed byte for byte.

    A join (receiver: the IP source address; group; source or None) is
    allowed, in mode closed or monitor, iff some rule allows it
    (ReceiverRule.allows), else refused "join_refused"; then with a limit a
    group the table does not hold is refused "join_limit" when the interface
    holds `limit` groups; an allowed join inserts or refreshes its group (on
    every inspecting interface, limit or not). Monitor (the interface's mode
    or the router's) judges, counts and records exactly the same but passes
    the frame unchanged.

    The reason: the old reason when nothing was removed; else "join_refused"
    if a join was refused by the rules, "join_limit" if every refusal was the
    limit's, "malformed" if only unknown records went.
    """
    mode = Mode.MONITOR if monitor or policy.mode is ReceiverMode.MONITOR else Mode.ENFORCE
    sender = decide(frame, sender_rules or {}, Mode.MONITOR if monitor else Mode.ENFORCE)
    untouched = ReportVerdict(sender.action, frame, sender.reason)
    if not policy.inspects or sender.reason not in RECV_OLD_REASONS:
        return untouched
    l3 = _l3_offset(frame)
    family = 4 if frame[l3] >> 4 == 4 else 6
    if family == 4 and frame[l3 + 9] != IPPROTO_IGMP:
        return untouched  # link_local, but not IGMP
    if family == 6 and frame[l3 + 6] != IPPROTO_ICMPV6 and frame[l3 + 6] not in IPV6_EXTENSIONS:
        return untouched  # link_local, neither ICMPv6 nor behind an extension header
    drop = PASS if mode is Mode.MONITOR else DROP
    try:
        found = _message(frame, l3, family)
        if found is None:
            return untouched
        moff, end = found
        return _judge_message(frame, l3, family, moff, end, iface, policy, rules, joined, group_count,
                              sender.reason, drop)
    except _Malformed:
        counters = dict.fromkeys(RECV_COUNTERS, 0)
        counters.update(reports=1, malformed=1, dropped=1)
        return ReportVerdict(drop, frame, "malformed", True, counters=counters)


def _message(frame: bytes, l3: int, family: int) -> tuple[int, int] | None:
    """(offset of the IGMP/MLD message, end of the IP packet) in `frame`; None: not a report, left alone.

    Steps 1-3 of judge_report(); raises _Malformed.
    """
    if family == 4:
        ihl = (frame[l3] & 0x0F) * 4
        (end,) = struct.unpack_from("!H", frame, l3 + 2)
        if end > RECV_BUF:
            raise _Malformed
        if struct.unpack_from("!H", frame, l3 + 6)[0] & 0x3FFF:
            raise _Malformed  # a fragment
        moff, end = l3 + ihl, l3 + end
    else:
        nexthdr = frame[l3 + 6]
        if nexthdr == IPPROTO_ICMPV6:
            if len(frame) < l3 + 41:
                raise _Malformed
            if frame[l3 + 40] not in MLD_TYPES:
                return None  # neighbour discovery and the like
        end = l3 + 40 + struct.unpack_from("!H", frame, l3 + 4)[0]
        if end - l3 > RECV_BUF or end > len(frame):
            raise _Malformed
        walked = _walk6(frame, l3 + 40, end, nexthdr)
        if walked is None:
            raise _Malformed
        upper, moff, frag, later = walked
        if later or upper != IPPROTO_ICMPV6:
            return None  # a non-first fragment is not known to be MLD
        if moff + 4 > end:
            raise _Malformed
        if frame[moff] not in MLD_TYPES:
            return None
        if frag:
            raise _Malformed
    if moff >= end:
        raise _Malformed  # not even a type
    kinds = _IGMP_KINDS if family == 4 else _MLD_KINDS
    if frame[moff] not in kinds:
        return None  # a query, or another IGMP message
    return moff, end


def _judge_message(frame: bytes, l3: int, family: int, moff: int, end: int, iface: str, policy: IfacePolicy,
                   rules: Sequence[ReceiverRule], joined: set[tuple[str, IPAddr]], group_count: int,
                   old: str, drop: str) -> ReportVerdict:
    """Steps 4-6 of judge_report() for the message at frame[moff:end]; raises _Malformed."""
    msg = frame[moff:end]
    version, kind = (_IGMP_KINDS if family == 4 else _MLD_KINDS)[msg[0]]
    if len(msg) < _MIN_LENGTH[family, kind]:
        raise _Malformed
    pseudo = _pseudo6(frame[l3:l3 + 40], len(msg)) if family == 6 else b""
    if internet_checksum(pseudo + msg):
        raise _Malformed
    width = 4 if family == 4 else 16
    receiver = ipaddress.ip_address(frame[l3 + 12:l3 + 16] if family == 4 else frame[l3 + 8:l3 + 24])
    judge = _Judge(iface, policy, rules, receiver, version, {g for i, g in joined if i == iface}, group_count)
    out = frame
    if kind == "records":
        records = _parse_records(msg, width)
        kept = _records(judge, records)
        if kept != [r.raw for r in records]:
            out = _rewrite(frame, l3, family, moff, msg, kept) if kept else b""
    else:
        goff = 4 if family == 4 else 8
        group = ipaddress.ip_address(msg[goff:goff + width])
        if link_scope(group):
            judge.keep(0, msg[0], group, "link_scope")
        elif kind == "leave":
            judge.leave(0, msg[0], group)
        elif not judge.join(0, msg[0], group, None):
            out = b""
    counters = dict.fromkeys(RECV_COUNTERS, 0)
    counters.update(reports=1, kept=judge.tally("kept"), refused=judge.tally("refused"),
                    limited=judge.tally("limited"), leaves=judge.tally("leave"),
                    malformed=1 if judge.tally("malformed") else 0)
    if out is frame:
        reason, action, sent = old, PASS, frame
    else:
        reason = ("join_refused" if judge.tally("refused") else "join_limit" if judge.tally("limited")
                  else "malformed")
        if out:
            counters["rewritten"] = 1
            action, sent = PASS, out if drop == DROP else frame
        else:
            counters["dropped"] = 1
            action, sent = drop, frame
    return ReportVerdict(action, sent, reason, True, version, tuple(judge.outcomes), tuple(judge.denied),
                         tuple(judge.groups), counters)


@dataclass(frozen=True)
class _Record:
    rtype: int
    group: IPAddr
    sources: tuple[bytes, ...]  # packed
    aux: bytes
    raw: bytes


def _parse_records(msg: bytes, width: int) -> list[_Record]:
    """The group records of a v3/v2 report, all of them within the message and nothing after; else _Malformed."""
    (count,) = struct.unpack_from("!H", msg, 6)
    out, pos = [], 8
    for _ in range(count):
        if pos + 4 + width > len(msg):
            raise _Malformed
        rtype, auxw, nsrc = struct.unpack_from("!BBH", msg, pos)
        size = 4 + width + nsrc * width + auxw * 4
        if pos + size > len(msg):
            raise _Malformed
        group = ipaddress.ip_address(msg[pos + 4:pos + 4 + width])
        first = pos + 4 + width
        sources = tuple(msg[first + i * width:first + (i + 1) * width] for i in range(nsrc))
        aux = msg[first + nsrc * width:pos + size]
        out.append(_Record(rtype, group, sources, aux, msg[pos:pos + size]))
        pos += size
    if pos != len(msg):
        raise _Malformed  # bytes after the last record
    return out


def _records(judge: _Judge, records: list[_Record]) -> list[bytes]:
    """Judge each record in order; the records as kept (bytes, refused sources taken out).

    * type 0 or > 6: removed (malformed), whatever its group;
    * a link-scope group: kept whole, never judged or counted;
    * BLOCK_OLD_SOURCES: kept whole (a partial leave, never judged);
    * IS_IN/TO_IN without a source: kept, a leave;
    * IS_EX/TO_EX: an any-source join (the sources are an exclude list):
      kept whole if allowed, else removed;
    * IS_IN/TO_IN/ALLOW with sources: each (source, group) judged alone and
      the refused ones taken out (nsrc lowered, aux data kept after the rest);
      none left: TO_IN stays with no source (then it is a leave: its group is
      marked left and counted a leave), IS_IN and ALLOW are removed.
    """
    kept: list[bytes] = []
    for i, r in enumerate(records):
        if r.rtype == 0 or r.rtype > BLOCK:
            judge.keep(i, r.rtype, r.group, "malformed")
        elif link_scope(r.group):
            judge.keep(i, r.rtype, r.group, "link_scope")
            kept.append(r.raw)
        elif r.rtype == BLOCK:
            judge.keep(i, r.rtype, r.group, "block")
            kept.append(r.raw)
        elif r.rtype in (IS_IN, TO_IN) and not r.sources:
            judge.leave(i, r.rtype, r.group)
            kept.append(r.raw)
        elif r.rtype in (IS_EX, TO_EX):
            if judge.join(i, r.rtype, r.group, None):
                kept.append(r.raw)
        else:
            allowed = [s for s in r.sources if judge.join(i, r.rtype, r.group, ipaddress.ip_address(s))]
            if len(allowed) == len(r.sources):
                kept.append(r.raw)
            elif allowed or r.rtype == TO_IN:
                if not allowed:
                    judge.leave(i, r.rtype, r.group)
                kept.append(r.raw[:2] + struct.pack("!H", len(allowed)) + r.raw[4:4 + len(r.group.packed)]
                            + b"".join(allowed) + r.aux)
    return kept


def _rewrite(frame: bytes, l3: int, family: int, moff: int, msg: bytes, kept: list[bytes]) -> bytes:
    """The frame carrying only the `kept` records: the message's record count and checksum, the IP length,
    the IPv4 header checksum; shortened to the new packet's end (Ethernet padding, if any, goes too).

    The IGMP/ICMPv6 checksum is computed afresh over the new message (ICMPv6
    with its pseudo-header); the IPv4 header checksum is updated for the new
    total length as RFC 1624 eqn. 3 says, so a header that was sound stays
    sound and one that was not (which the kernel drops) stays so.
    """
    body = msg[:2] + b"\0\0" + msg[4:6] + struct.pack("!H", len(kept)) + b"".join(kept)
    if family == 4:
        ihl = (frame[l3] & 0x0F) * 4
        header = bytearray(frame[l3:l3 + ihl])
        old_len, new_len = struct.unpack_from("!H", header, 2)[0], ihl + len(body)
        struct.pack_into("!H", header, 2, new_len)
        (csum,) = struct.unpack_from("!H", header, 10)
        s = (~csum & 0xFFFF) + (~old_len & 0xFFFF) + new_len
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        struct.pack_into("!H", header, 10, ~s & 0xFFFF)
        msg_csum = internet_checksum(body)
        return frame[:l3] + bytes(header) + frame[l3 + ihl:moff] + body[:2] + struct.pack("!H", msg_csum) + body[4:]
    header = bytearray(frame[l3:l3 + 40])
    struct.pack_into("!H", header, 4, moff - l3 - 40 + len(body))
    msg_csum = internet_checksum(_pseudo6(bytes(header), len(body)) + body)
    return frame[:l3] + bytes(header) + frame[l3 + 40:moff] + body[:2] + struct.pack("!H", msg_csum) + body[4:]
