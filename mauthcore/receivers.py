"""Receiver rules and interface policies: who may join which groups on a guarded interface.

Strategy: the receiver half mirrors the sender half (mauthcore/rules.py):
frozen values built only through `make()`, which validates everything an
operator can get wrong and raises `RuleError` with one sentence, so that the
codecs, the filter and the mediator below may assume a value is well formed.

A **receiver rule** allows joins: hosts of `receiver` (a host or a prefix;
0.0.0.0/0 or ::/0 is every host) may join `group` (a group or a range of
groups), from `source` only if one is given (a source-specific join, SSM),
on the interface `iface` only if one is given (else on every guarded
interface). A rule is its own identity: two rules differing in any field
are two rules, and there is nothing else to a rule (no TTL, no limit).

An **interface policy** says what the filter does with the membership
reports (IGMP, MLD) arriving on one guarded interface:

* `open`: every join is kept (mauth's behaviour before receiver rules, and
  the default of every interface);
* `closed`: only joins a receiver rule allows are kept;
* `monitor`: judged as `closed`, counted and recorded as refused, but kept:
  a dry run before closing the interface.

and `limit`: at most that many groups may be joined on the interface at
once (0: no limit), in every mode; in `open` mode it is the only check.

What a join is, and what is never judged (docs/operations.md, "Authorizing
receivers"): leaves are never refused; queries are never touched; joins of
link-scope groups (224.0.0.0/24, IPv6 scope 2 or smaller) are always kept,
since no router forwards them. MLD reports come from the host's link-local
address (RFC 3810 5), so an IPv6 receiver prefix is typically fe80::/10 or
::/0 with an interface.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass

from .rules import (
    Endpoint,
    IPAddress,
    IPNetwork,
    RuleError,
    _is_prefix,
    _json_fields,
    _json_text,
    check_group,
    check_iface_name,
    parse_address,
    parse_endpoint,
)

MAX_RECEIVER_RULES = 512  # per router: the filter scans them for each record of a report (ebpf/mauth.h)
MAX_GROUP_LIMIT = 65535  # the largest per-interface limit on joined groups
MAX_RECEIVER_CURSOR = 1 + 16 + 1 + 16 + 1 + 1 + 16 + 1 + 15  # 68: ReceiverRule.cursor of the longest rule

_V4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_V6_MULTICAST = ipaddress.IPv6Network("ff00::/8")


def _network(value: Endpoint) -> IPNetwork:
    """A host as its /32 (/128) network, a prefix as itself."""
    if _is_prefix(value):
        return value
    return ipaddress.ip_network(value)


def _text(net: IPNetwork) -> str:
    """A /32 (/128) as its address, a prefix as ADDR/LEN: the canonical text of either side."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def check_receiver(value: Endpoint) -> IPNetwork:
    """A receiver host or prefix; RuleError unless it could hold hosts that send reports.

    IPv4 0.0.0.0 and IPv6 :: are allowed (a host without an address yet
    reports from them, RFC 3376 4.2.13 and RFC 3810 5.2.13), and IPv6
    link-local addresses are the normal source of MLD reports.
    """
    net = _network(value)
    multicast = _V4_MULTICAST if net.version == 4 else _V6_MULTICAST
    if net.prefixlen and net.overlaps(multicast):
        raise RuleError(f"receiver {_text(net)} overlaps the multicast range {multicast}, which holds no receiver")
    return net


@functools.total_ordering
@dataclass(frozen=True)
class ReceiverRule:
    """Hosts of `receiver` may join `group` (from `source` only, if given) on `iface` (any guarded one if "")."""

    receiver: IPNetwork
    group: IPNetwork
    source: IPAddress | None = None
    iface: str = ""

    @classmethod
    def make(cls, receiver: object, group: object, source: object = None, iface: object = None) -> ReceiverRule:
        """Validate and build a rule; RuleError (one sentence) for anything a filter could not hold."""
        rcv = check_receiver(parse_endpoint(_as_text(receiver), "receiver"))
        grp = parse_endpoint(_as_text(group), "group")
        check_group(grp)
        grp_net = _network(grp)
        if rcv.version != grp_net.version:
            raise RuleError(f"receiver {_text(rcv)} and group {_text(grp_net)} are of different address families")
        src: IPAddress | None = None
        if source not in (None, ""):
            src = parse_address(str(source), "source")
            if src.version != grp_net.version:
                raise RuleError(f"source {src} and group {_text(grp_net)} are of different address families")
            if src.is_multicast or src.is_unspecified or src.is_loopback or src == ipaddress.IPv4Address(
                    "255.255.255.255"):
                raise RuleError(f"source {src} cannot be the address of a sender")
        name = "" if iface in (None, "") else check_iface_name(iface)
        return cls(rcv, grp_net, src, name)

    @property
    def family(self) -> int:
        return self.group.version

    @property
    def ssm(self) -> bool:
        """Source-specific: allows joins of (source, group) only."""
        return self.source is not None

    def allows(self, receiver: IPAddress, group: IPAddress, source: IPAddress | None, iface: str) -> bool:
        """Whether this rule allows `receiver` on `iface` to join `group` (from `source`; None: any source).

        A rule without a source allows any-source and source-specific joins
        of its groups; a rule with one allows only joins from that source.
        """
        if receiver.version != self.family or group.version != self.family:
            return False
        if self.iface and iface != self.iface:
            return False
        if receiver not in self.receiver or group not in self.group:
            return False
        return self.source is None or self.source == source

    @functools.cached_property
    def cursor(self) -> bytes:
        """Bytes whose order is the rules' order (family, receiver, group, source, interface).

        At most MAX_RECEIVER_CURSOR bytes; RECV_LIST hands them out as its
        paging cursor (docs/protocol.md).
        """
        src = self.source.packed if self.source is not None else b""
        iface = self.iface.encode()
        return (bytes([self.family]) + self.receiver.network_address.packed + bytes([self.receiver.prefixlen])
                + self.group.network_address.packed + bytes([self.group.prefixlen])
                + bytes([1 if src else 0]) + src + bytes([len(iface)]) + iface)

    def as_json(self) -> dict[str, object]:
        """{"receiver", "group"} and "source", "iface" when set, in canonical text."""
        out: dict[str, object] = {"receiver": _text(self.receiver), "group": _text(self.group)}
        if self.source is not None:
            out["source"] = str(self.source)
        if self.iface:
            out["iface"] = self.iface
        return out

    @classmethod
    def from_json(cls, obj: object) -> ReceiverRule:
        receiver, group = _json_fields(obj, ("receiver", "group"), "a receiver rule")
        assert isinstance(obj, dict)
        unknown = sorted(set(obj) - {"receiver", "group", "source", "iface"})
        if unknown:
            raise RuleError(f"a receiver rule has no field {unknown[0]!r}; it has receiver, group, source and iface")
        return cls.make(_json_text(receiver, "receiver"), _json_text(group, "group"), obj.get("source"),
                        obj.get("iface"))

    def words(self) -> list[str]:
        """The rule file's line: receiver RECEIVER GROUP [source=S] [iface=IF]."""
        out = ["receiver", _text(self.receiver), _text(self.group)]
        if self.source is not None:
            out.append(f"source={self.source}")
        if self.iface:
            out.append(f"iface={self.iface}")
        return out

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ReceiverRule):
            return NotImplemented
        return self.cursor < other.cursor

    def __str__(self) -> str:
        text = f"{_text(self.receiver)} may join {_text(self.group)}"
        if self.source is not None:
            text += f" from {self.source}"
        if self.iface:
            text += f" on {self.iface}"
        return text


class ReceiverMode(enum.IntEnum):
    """What an interface does with joins. The value is the wire's; `code` the filter's (value - 1)."""

    OPEN = 1
    CLOSED = 2
    MONITOR = 3

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def code(self) -> int:
        return self.value - 1

    @classmethod
    def from_code(cls, code: int) -> ReceiverMode:
        return cls(code + 1)

    @classmethod
    def parse(cls, value: object) -> ReceiverMode:
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise RuleError(f"receiver mode {value!r} is not open, closed or monitor")


@dataclass(frozen=True)
class IfacePolicy:
    """What the filter does with joins on one guarded interface: a mode, and at most `limit` groups (0: any)."""

    iface: str
    mode: ReceiverMode = ReceiverMode.OPEN
    limit: int = 0

    @classmethod
    def make(cls, iface: object, mode: object = "open", limit: object = 0) -> IfacePolicy:
        name = check_iface_name(iface)
        if isinstance(limit, bool) or not isinstance(limit, int):
            try:
                limit = int(str(limit), 10)
            except ValueError:
                raise RuleError(f"group limit {limit!r} is not a whole number") from None
        if not 0 <= limit <= MAX_GROUP_LIMIT:
            raise RuleError(f"group limit {limit} is outside 0..{MAX_GROUP_LIMIT} (0: no limit)")
        return cls(name, ReceiverMode.parse(mode), limit)

    @property
    def inspects(self) -> bool:
        """Whether the filter looks at reports on this interface at all (open without a limit: it does not)."""
        return self.mode is not ReceiverMode.OPEN or self.limit > 0

    def as_json(self) -> dict[str, object]:
        return {"iface": self.iface, "mode": str(self.mode), "limit": self.limit}

    @classmethod
    def from_json(cls, obj: object) -> IfacePolicy:
        (iface,) = _json_fields(obj, ("iface",), "an interface policy")
        assert isinstance(obj, dict)
        unknown = sorted(set(obj) - {"iface", "mode", "limit"})
        if unknown:
            raise RuleError(f"an interface policy has no field {unknown[0]!r}; it has iface, mode and limit")
        return cls.make(iface, obj.get("mode", "open"), obj.get("limit", 0))

    def words(self) -> list[str]:
        """The rule file's line: interface IF open|closed|monitor [limit=N]."""
        return ["interface", self.iface, str(self.mode)] + ([f"limit={self.limit}"] if self.limit else [])

    def __str__(self) -> str:
        return f"{self.iface} {self.mode}" + (f" limit {self.limit}" if self.limit else "")


def parse_receiver_words(words: list[str]) -> ReceiverRule:
    """A rule file's `receiver RECEIVER GROUP [source=S] [iface=IF]` line, split into words."""
    if len(words) < 3 or words[0] != "receiver":
        raise RuleError("a receiver line is: receiver RECEIVER GROUP [source=ADDRESS] [iface=NAME]")
    opts: dict[str, str] = {}
    for word in words[3:]:
        name, eq, value = word.partition("=")
        if not eq or name not in ("source", "iface"):
            raise RuleError(f"{word!r} is not source=ADDRESS or iface=NAME")
        if name in opts:
            raise RuleError(f"{name} is given twice")
        opts[name] = value
    return ReceiverRule.make(words[1], words[2], opts.get("source"), opts.get("iface"))


def parse_interface_words(words: list[str]) -> IfacePolicy:
    """A rule file's `interface IF open|closed|monitor [limit=N]` line, split into words."""
    if len(words) not in (3, 4) or words[0] != "interface":
        raise RuleError("an interface line is: interface NAME open|closed|monitor [limit=N]")
    limit: object = 0
    if len(words) == 4:
        name, eq, value = words[3].partition("=")
        if name != "limit" or not eq:
            raise RuleError(f"{words[3]!r} is not limit=N")
        limit = value
    return IfacePolicy.make(words[1], words[2], limit)


def _as_text(value: object) -> str | Endpoint:
    if isinstance(value, (str, ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                          ipaddress.IPv6Network)):
        return value
    raise RuleError(f"{value!r} is not an address")
