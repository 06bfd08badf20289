"""Value types shared by the v2 codec, the server core and the backends.

Strategy: frozen dataclasses holding exactly what travels on the wire, so
that a backend's answer can be encoded without translation and a decoded
reply compares equal to what the backend returned. Counters are plain ints
(packets, octets) and times are integer milliseconds since the Unix epoch
(0 = never), the wire's units, so nothing is lost in a round trip.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from mauthcore.rules import IPAddress, Rule

T = TypeVar("T")


class Mode(enum.IntEnum):
    """Filter mode: enforce drops; monitor counts exactly as enforce would but passes everything."""

    ENFORCE = 1
    MONITOR = 2

    def __str__(self) -> str:
        return self.name.lower()


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

    def __reduce_ex__(self, protocol: object) -> tuple[type[Reason], tuple[int]]:
        return type(self), (self._value_,)

    @property
    def known(self) -> bool:
        """False for a reason this version does not know (see `_missing_`)."""
        return self._name_ in type(self).__members__

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class RuleEntry:
    """A rule with its traffic counters."""

    rule: Rule
    packets: int = 0
    octets: int = 0
    last_seen: int = 0  # ms since the Unix epoch, 0 = never


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
