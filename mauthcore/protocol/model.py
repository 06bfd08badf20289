"""Value types shared by the v2 codec, the server core and the backends.

Strategy: frozen dataclasses holding exactly what travels on the wire, so
that a backend's answer can be encoded without translation and a decoded
reply compares equal to what the backend returned. Counters are plain ints
(packets, octets) and times are integer milliseconds since the Unix epoch
(0 = never), the wire's units, so nothing is lost in a round trip.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mauthcore.protocol.errors import BadCursor
from mauthcore.receivers import MAX_RECEIVER_CURSOR, IfacePolicy, ReceiverRule
from mauthcore.rules import IPAddress, Rule, RuleError, RuleKey, check_cursor, format_mac

T = TypeVar("T")


class Mode(enum.IntEnum):
    """Filter mode: enforce drops; monitor counts exactly as enforce would but passes everything.

    The value is the wire's (docs/protocol.md); `code` is the filter's
    (`struct mauth_cfg.mode` in ebpf/mauth.h); `str()` is the word files,
    logs, metrics and JSON use.
    """

    ENFORCE = 1
    MONITOR = 2

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def code(self) -> int:
        """The filter's value: 0 enforce, 1 monitor."""
        return self.value - 1

    @classmethod
    def from_code(cls, code: int) -> Mode:
        return cls.MONITOR if code == 1 else cls.ENFORCE

    @classmethod
    def parse(cls, value: Mode | str) -> Mode:
        """A Mode from itself or its word ("enforce", "monitor"); ValueError naming both otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise ValueError(f"mode {value!r} is neither enforce nor monitor")


class Reason(enum.IntEnum):
    """Why the filter counted a packet where it did (README.md, "Packet policy"; ebpf/mauth_xdp.c)."""

    # Wire value = the filter's MAUTH_R_* index (ebpf/mauth.h) + 1.
    PASSED = 1  # matched a rule within its TTL
    UNAUTHORIZED = 2  # no rule for (source, group)
    TTL = 3  # rule found, TTL above the rule's max TTL
    NOT_MULTICAST = 4  # unicast or broadcast destination
    MALFORMED = 5  # truncated or inconsistent header
    LINK_LOCAL = 6  # 224.0.0.0/24 control traffic; IPv6 groups of scope 2 or smaller
    NOT_IP = 7  # neither IPv4 nor IPv6
    MLD = 8  # MLD with hop limit 1 to a routable IPv6 group (MLDv1 reports go to the group)
    RATE = 9  # over the rule's rate limit
    IGMP = 10  # IGMP to a routable group (IGMPv1/v2 reports)
    SAP_LOCAL = 11  # SAP from a sender without a rule: delivered to the router only, TTL 1
    WRONG_IIF = 12  # bound rule: another ingress interface than its own or the one it learned
    RPF_FAIL = 13  # bound rule: the source does not route back through the ingress interface
    WRONG_MAC = 14  # bound rule: another source MAC than its own or the one it learned
    JOIN_REFUSED = 15  # a membership report with a join no receiver rule allows (closed or monitor interface)
    JOIN_LIMIT = 16  # a membership report with a join of a new group beyond the interface's group limit

    @classmethod
    def _missing_(cls, value: object) -> Reason | None:
        """A reason this version does not know (a newer filter's): kept, with its code.

        Reason(12) is `Reason.UNKNOWN_12` ("unknown_12"), an int 12 that encodes
        back to 12, so that a COUNTERS or DENIED answer of a newer server decodes
        and shows whole (docs/protocol.md, "COUNTERS"). Only wire values, 0..255.
        """
        if type(value) is not int or not 0 <= value <= 255:
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]  # a Reason: built above

    @property
    def binding(self) -> bool:
        """A bound rule's binding dropped it: wrong_iif, rpf_fail or wrong_mac."""
        return self in BINDING_REASONS

    def __reduce_ex__(self, protocol: object) -> tuple[type[Reason], tuple[int]]:
        return type(self), (self._value_,)

    @property
    def known(self) -> bool:
        """False for a reason this version does not know (see `_missing_`)."""
        return self._name_ in type(self).__members__

    def __str__(self) -> str:
        return self.name.lower()


BINDING_REASONS = frozenset({Reason.WRONG_IIF, Reason.RPF_FAIL, Reason.WRONG_MAC})


@dataclass(frozen=True)
class RuleEntry:
    """A rule with its traffic counters."""

    rule: Rule
    packets: int = 0
    octets: int = 0
    last_seen: int = 0  # ms since the Unix epoch, 0 = never
    moved: int = 0  # a learning rule: packets dropped since it learned, from another interface or MAC
    learned: tuple[str, bytes] | None = None  # a learning rule: the (interface, MAC) its first packet pinned

    def as_json(self) -> dict[str, object]:
        """The rule's fields, then "packets", "bytes" and "last_seen" (Unix seconds, null = never); a bound
        rule's "moved" and "learned" ({"iface", "mac"} or null)."""
        out = {**self.rule.as_json(), "packets": self.packets, "bytes": self.octets,
               "last_seen": seconds(self.last_seen)}
        if self.rule.bound:
            out["moved"] = self.moved
            out["learned"] = None if self.learned is None else {"iface": self.learned[0],
                                                                "mac": format_mac(self.learned[1])}
        return out


@dataclass(frozen=True)
class DeniedEntry:
    """A (source, group) pair the filter dropped (or, in monitor mode, would have)."""

    source: IPAddress
    group: IPAddress
    reason: Reason
    packets: int = 0
    octets: int = 0
    last_ttl: int = 0
    last_seen: int = 0  # ms since the Unix epoch, 0 = never
    # A pair its rule's binding dropped (wrong_iif, rpf_fail, wrong_mac): the ingress interface and source
    # MAC of the last packet the binding dropped ("" and b"" otherwise).
    iface: str = ""
    mac: bytes = b""

    @property
    def key(self) -> RuleKey:
        """The (source, group) as a rule key: a denied listing is in the keys' order."""
        return RuleKey(self.source, self.group)

    def as_json(self) -> dict[str, object]:
        """"source", "group", "reason", "packets", "bytes", "last_ttl", "last_seen" (Unix seconds, null = never);
        "iface" and "mac" of a pair its rule's binding dropped."""
        out: dict[str, object] = {"source": str(self.source), "group": str(self.group), "reason": str(self.reason),
                                  "packets": self.packets, "bytes": self.octets, "last_ttl": self.last_ttl,
                                  "last_seen": seconds(self.last_seen)}
        if self.iface or self.mac:
            out["iface"] = self.iface
            out["mac"] = format_mac(self.mac) if self.mac else ""
        return out


@dataclass(frozen=True)
class ReasonCounter:
    reason: Reason
    packets: int = 0
    octets: int = 0


@dataclass(frozen=True)
class Counters:
    """Filter-wide counters (COUNTERS reply)."""

    rule_count: int
    mode: Mode
    backend: str
    reasons: tuple[ReasonCounter, ...] = ()

    def by_reason(self) -> dict[Reason, ReasonCounter]:
        return {c.reason: c for c in self.reasons}


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; `cursor` is opaque, and empty when there are no more pages."""

    items: tuple[T, ...]
    cursor: bytes = b""


def seconds(ms: int) -> float | None:
    """A wire time (ms since the Unix epoch, 0 = never) as Unix seconds, None for never."""
    return ms / 1000 if ms else None


def millis(unix: float | None) -> int:
    """Unix seconds (None = never) as a wire time: ms since the Unix epoch, 0 = never."""
    return int(unix * 1000) if unix else 0


def page_start(cursors: Sequence[bytes], cursor: bytes, issuer: str,
               check: Callable[[bytes], bytes] = check_cursor) -> int:
    """Where a listing resumes: the index of the first of the sorted `cursors` after `cursor` (0 if empty).

    A cursor names a position in the keys' order (`RuleKey.cursor`; for the
    receiver listings `check_receiver_cursor`'s), not a key that must still
    exist. One that has no cursor's shape (`check`) is refused with
    BadCursor, naming the `issuer` ("router", "server") that hands them out.
    """
    if not cursor:
        return 0
    try:
        position = check(cursor)
    except RuleError as exc:
        raise BadCursor(f"the listing cursor is not one this {issuer} issued: {exc}") from None
    return bisect.bisect_right(cursors, position)


def page_of(items: Sequence[T], cursors: Sequence[bytes], cursor: bytes, limit: int, issuer: str,
            check: Callable[[bytes], bytes] = check_cursor) -> Page[T]:
    """The page of `items` (sorted, with their `cursors`) after `cursor`, at most `limit` long."""
    start = page_start(cursors, cursor, issuer, check)
    chunk = items[start:start + max(limit, 0)]
    end = start + len(chunk)
    return Page(tuple(chunk), cursors[end - 1] if chunk and end < len(items) else b"")


# =============================================================================
# Receivers (docs/protocol.md, "Receiver commands")
# =============================================================================

# An interface's receiver counters, in the order RECV_POLICY sends them (docs/protocol.md, "RECV_POLICY"):
# reports judged, kept whole, with a join refused by the rules, with a join over the limit, leaves, rewritten
# (records or sources removed), dropped whole, malformed.
RECV_COUNTERS = ("reports", "kept", "refused", "limited", "leaves", "rewritten", "dropped", "malformed")


def check_receiver_cursor(cursor: bytes) -> bytes:
    """`cursor` if it could be a receiver listing's position (RECV_LIST, RECV_DENIED, RECV_JOINED), else RuleError.

    Those cursors are the `cursor` of an entry (`ReceiverRule.cursor` and the
    like): an address family byte, 4 or 6, then addresses and a name, at most
    MAX_RECEIVER_CURSOR bytes. Any such bytes name a position in that order.
    """
    cursor = bytes(cursor)
    if not cursor or cursor[0] not in (4, 6) or len(cursor) > MAX_RECEIVER_CURSOR:
        raise RuleError(f"a receiver listing cursor is 1 to {MAX_RECEIVER_CURSOR} bytes starting with 4 or 6,"
                        f" not {len(cursor)} bytes starting with {cursor[0] if cursor else 'nothing'}")
    return cursor


def _name_bytes(iface: str) -> bytes:
    raw = iface.encode("utf-8", "replace")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True)
class ReceiverEntry:
    """A receiver rule with the joins it allowed."""

    rule: ReceiverRule
    matched: int = 0  # join records (or sources of a record) it allowed
    last_seen_ms: int = 0  # ms since the Unix epoch of the last, 0 = never

    @property
    def cursor(self) -> bytes:
        return self.rule.cursor

    def as_json(self) -> dict[str, object]:
        """The rule's fields, then "matched" and "last_seen" (Unix seconds, null = never)."""
        return {**self.rule.as_json(), "matched": self.matched, "last_seen": seconds(self.last_seen_ms)}


@dataclass(frozen=True)
class DeniedJoinEntry:
    """A join the filter refused (or, in monitor, would have): who, which group, where, why, how often."""

    iface: str  # the interface's name ("#N" if it is gone)
    receiver: IPAddress  # the report's source address
    group: IPAddress
    source: IPAddress | None  # a source-specific join's source; None: any source
    reason: Reason  # JOIN_REFUSED or JOIN_LIMIT
    records: int = 0  # refused join records (or sources)
    last_seen: int = 0  # ms since the Unix epoch, 0 = never
    version: int = 0  # of the last report: IGMP 1..3, MLD 1..2 (the family tells which)

    @property
    def family(self) -> int:
        return self.group.version

    @property
    def cursor(self) -> bytes:
        """Position in the listing's order: family, receiver, group, source, interface (at most 66 bytes)."""
        src = bytes([1]) + self.source.packed if self.source is not None else bytes([0])
        return (bytes([self.family]) + self.receiver.packed + self.group.packed + src
                + _name_bytes(self.iface))

    def as_json(self) -> dict[str, object]:
        """"iface", "receiver", "group", "source" (null: any), "reason", "records", "last_seen" (Unix seconds,
        null = never), "version"."""
        return {"iface": self.iface, "receiver": str(self.receiver), "group": str(self.group),
                "source": None if self.source is None else str(self.source), "reason": str(self.reason),
                "records": self.records, "last_seen": seconds(self.last_seen), "version": self.version}


@dataclass(frozen=True)
class JoinedEntry:
    """A group joined on a guarded interface, as the joined-groups table holds it (one per interface and group)."""

    iface: str
    group: IPAddress
    reporter: IPAddress  # the address of the last report
    first_seen: int = 0  # ms since the Unix epoch
    last_seen: int = 0
    reports: int = 0
    left: bool = False  # a leave came after the last report

    @property
    def cursor(self) -> bytes:
        """Position in the listing's order: family, group, interface (at most 33 bytes)."""
        return bytes([self.group.version]) + self.group.packed + _name_bytes(self.iface)

    def as_json(self) -> dict[str, object]:
        """"iface", "group", "reporter", "first_seen", "last_seen" (Unix seconds, null = never), "reports", "left"."""
        return {"iface": self.iface, "group": str(self.group), "reporter": str(self.reporter),
                "first_seen": seconds(self.first_seen), "last_seen": seconds(self.last_seen),
                "reports": self.reports, "left": self.left}


@dataclass(frozen=True)
class IfaceReceiversEntry:
    """One guarded interface's receiver policy, the groups joined on it now, and its counters (RECV_COUNTERS)."""

    policy: IfacePolicy
    groups: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECV_COUNTERS, 0))

    def as_json(self) -> dict[str, object]:
        """The policy's "iface", "mode", "limit", then "groups" and "counters" (every name of RECV_COUNTERS)."""
        return {**self.policy.as_json(), "groups": self.groups,
                "counters": {name: self.counters.get(name, 0) for name in RECV_COUNTERS}}
