"""What both filters share: the interface they implement and the decisions they make alike.

Strategy. musersd enforces its rules with one of two filters: the XDP data
plane (dataplane.py: the compiled program and its pinned maps) or the NFQUEUE
fallback (nfqueue.py: iptables sends routable multicast to a queue this
process judges). Both are driven the same way by the protocol server's
backend (dataplane_backend.py) and the daemon, so `Filter` states that one
interface, and everything they must decide the same way is written here
once: the errors and what they mean, the result types, the size bounds and
defaults, which address families a filter holds, how an argument becomes a
rule or a key, the SAP groups, and the difference that `apply()` makes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from mauthcore import rules
from mauthcore.protocol.errors import TableFull
from mauthcore.protocol.model import RECV_COUNTERS as RECV_COUNTERS  # the receiver counters' names, in order
from mauthcore.protocol.model import DeniedEntry, Mode, RuleEntry
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import IPAddress, Rule, RuleError, RuleKey, format_mac

from . import maps

DEFAULT_MAX_RULES = 65536
DEFAULT_MAX_DENIED = 4096
MAX_RULES_RANGE = (1, 16 * 1024 * 1024)
MAX_DENIED_RANGE = (16, 1024 * 1024)


class DataPlaneError(Exception):
    """The data plane refused an operation; the message says why in one sentence."""


class BindingRefused(DataPlaneError):
    """A binding this router cannot hold as asked: an interface it lacks, a rearm of a rule that does not learn."""


class InvalidReceiver(DataPlaneError):
    """A receiver rule or interface policy naming an interface this router does not guard (--iface)."""


class ReceiversUnsupported(DataPlaneError):
    """This filter does not judge membership reports (NFQUEUE): it holds no receiver rules or policies."""


@dataclass(frozen=True)
class ReceiverStats:
    """One receiver rule as the filter holds it."""

    rule: ReceiverRule
    matched: int = 0  # join records (or sources) it allowed
    last_seen: int = 0  # CLOCK_MONOTONIC ns of the last, 0 never


@dataclass(frozen=True)
class DeniedJoin:
    """A refused join, as the denied-receivers table holds it."""

    iface: str  # name ("#N" if gone)
    receiver: IPAddress
    group: IPAddress
    source: IPAddress | None
    reason: str  # "join_refused" | "join_limit"
    records: int
    last_seen: int  # CLOCK_MONOTONIC ns
    version: int  # IGMP 1..3, MLD 1..2 (the family tells which)


@dataclass(frozen=True)
class JoinedGroup:
    """A group joined on a guarded interface, as the joined-groups table holds it."""

    iface: str
    group: IPAddress
    reporter: IPAddress
    first_seen: int  # CLOCK_MONOTONIC ns
    last_seen: int
    reports: int
    left: bool


@dataclass(frozen=True)
class IfaceReceivers:
    """A guarded interface's receiver policy, the groups joined on it now, and its counters (RECV_COUNTERS)."""

    policy: IfacePolicy
    groups: int  # groups joined now (the limit's count)
    counters: dict[str, int]  # RECV_COUNTERS


# A rule that exists, one that does not, a full table: the protocol's own command
# errors (mauthcore/protocol/errors.py), raised as they are and answered with
# their reply codes. DataPlaneError is every other refusal or failure.


# What both filters return: the protocol's own records (mauthcore/protocol/model.py),
# RuleEntry for a rule with its counters and DeniedEntry for a denied pair, with
# times in ms since the Unix epoch (0 = never), so the backend answers with them as they are.


def check_sizes(max_rules: int | None, max_denied: int | None) -> None:
    """Refuse a rule capacity or denied-table size outside what either filter accepts (None: not given)."""
    lo, hi = MAX_RULES_RANGE
    if max_rules is not None and not lo <= max_rules <= hi:
        raise DataPlaneError(f"max rules {max_rules} is outside {lo}-{hi}")
    lo, hi = MAX_DENIED_RANGE
    if max_denied is not None and not lo <= max_denied <= hi:
        raise DataPlaneError(f"denied table size {max_denied} is outside {lo}-{hi}")


def family_name(families: Iterable[int]) -> str:
    return " and ".join(f"IPv{v}" for v in sorted(families))


def not_held(name: str, families: Iterable[int], key: RuleKey) -> str | None:
    """Why a filter called `name`, holding `families`, cannot hold the rule for `key`; None if it can."""
    families = tuple(families)
    if key.family in families:
        return None
    return f"the {name} backend filters {family_name(families)} only, so it cannot hold the rule for {key}"


def not_bindable(name: str, rule: Rule) -> str | None:
    """Why a filter called `name`, which cannot bind rules, cannot hold `rule`; None if it is unbound."""
    if not rule.bound:
        return None
    return (f"the {name} backend cannot bind a rule to an interface, MAC or reverse path, so it cannot hold"
            f" {rule.key} bound to {rule.binding}; run the xdp backend")


def as_rule(rule: Rule | tuple) -> Rule:
    """`rule`, or the Rule made of a (source, group, max_ttl[, pps, bps]) tuple; DataPlaneError if it is not one."""
    if isinstance(rule, Rule):
        return rule
    try:
        return Rule.make(*rule)
    except RuleError as exc:
        raise DataPlaneError(str(exc)) from None
    except TypeError:
        raise DataPlaneError(f"{rule!r} is not a (source, group, max_ttl) rule") from None


def as_key(key: RuleKey | Rule | tuple) -> RuleKey:
    """The RuleKey of a key, a rule or a (source, group) tuple; DataPlaneError if it is none of them."""
    if isinstance(key, Rule):
        return key.key
    if isinstance(key, RuleKey):
        return key
    try:
        return RuleKey.make(*key)
    except RuleError as exc:
        raise DataPlaneError(str(exc)) from None


def parse_mac(mac: str | bytes) -> bytes:
    """The six bytes of a unicast MAC written aa:bb:cc:dd:ee:ff (or with dashes); DataPlaneError if it is not one."""
    try:
        return rules.parse_mac(mac)
    except RuleError as exc:
        raise DataPlaneError(str(exc)) from None


def rpf_ifindex_list(ifaces: Iterable[str | int]) -> tuple[int, ...]:
    """The indexes of the interfaces that check every rule's reverse path; DataPlaneError naming a bad one."""
    out: list[int] = []
    for iface in ifaces:
        try:
            ifindex = Binding.make(iface).ifindex
        except DataPlaneError as exc:
            raise DataPlaneError(f"--rpf-iface: {exc}") from None
        if ifindex not in out:
            out.append(ifindex)
    if len(out) > maps.MAX_RPF_IFACES:
        raise DataPlaneError(f"at most {maps.MAX_RPF_IFACES} interfaces check the reverse path by default,"
                             f" not {len(out)}")
    return tuple(out)


def iface_name(ifindex: int) -> str:
    """The name of interface `ifindex` on this router, or "#N" if it no longer exists."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"#{ifindex}"


@dataclass(frozen=True)
class Binding:
    """Where the sender of a rule may be (ebpf/mauth.h, "Bindings"); every part is optional.

    `ifindex`: the ingress interface its packets must come in on (0: any);
    `rpf`: its source must route back through the ingress interface; `mac`:
    the frame's source MAC must be this one; `learn`: the first packet pins
    (ingress interface, source MAC) and later ones must match it. A prefix
    rule takes `ifindex` and `rpf` only.
    """

    ifindex: int = 0
    rpf: bool = False
    mac: bytes | None = None
    learn: bool = False

    @classmethod
    def make(cls, iface: str | int | None = None, *, rpf: bool = False, mac: str | bytes | None = None,
             learn: bool = False) -> Binding:
        """A Binding from an interface name or index, a MAC written as text, and the two switches."""
        ifindex = 0
        if isinstance(iface, int) and not isinstance(iface, bool):
            if not 0 < iface < 1 << 32:
                raise DataPlaneError(f"interface index {iface} is outside 1-{(1 << 32) - 1}")
            ifindex = iface
        elif iface is not None:
            try:
                ifindex = socket.if_nametoindex(str(iface))
            except OSError:
                raise BindingRefused(f"interface {iface!r} does not exist on this router") from None
        return cls(ifindex, bool(rpf), None if mac is None else parse_mac(mac), bool(learn))

    @property
    def empty(self) -> bool:
        return not (self.ifindex or self.rpf or self.mac or self.learn)

    @property
    def flags(self) -> int:
        """The MAUTH_BIND_* bits of this binding."""
        return ((maps.BIND_IFACE if self.ifindex else 0) | (maps.BIND_RPF if self.rpf else 0)
                | (maps.BIND_MAC if self.mac else 0) | (maps.BIND_LEARN if self.learn else 0))

    def check_for(self, key: RuleKey) -> None:
        """Refuse a binding the rule for `key` cannot take: a MAC, or learning one, for a whole prefix."""
        try:
            rules.Binding(learn=self.learn, mac=self.mac or b"").check_for(key)
        except RuleError as exc:
            raise DataPlaneError(str(exc)) from None

    @classmethod
    def of(cls, binding: rules.Binding) -> Binding:
        """The kernel's form of a rule's binding: its interface name resolved to an index on this router."""
        if binding.per_router is not None:
            raise BindingRefused(f"the interface {binding.iface!r} is named per router; the mediator sends each"
                                 " router its own name")
        return cls.make(binding.iface or None, rpf=binding.rpf, mac=binding.mac or None, learn=binding.learn)

    def named(self) -> rules.Binding:
        """The rule's binding as the protocol says it: the interface by its name ("#N" if it is gone)."""
        return rules.Binding(iface_name(self.ifindex) if self.ifindex else "", self.rpf, self.mac or b"", self.learn)

    def __str__(self) -> str:
        parts = [f"iface {self.ifindex}"] if self.ifindex else []
        parts += ["rpf"] if self.rpf else []
        parts += [f"mac {format_mac(self.mac)}"] if self.mac else []
        parts += ["learn"] if self.learn else []
        return " ".join(parts) or "unbound"


@dataclass(frozen=True)
class BindingState:
    """A rule's binding as the filter holds it: the binding, the pair it learned, and how often it moved."""

    binding: Binding
    learned: tuple[int, bytes] | None  # (ingress ifindex, source MAC) pinned by the first packet; None: not yet
    moved: int  # packets dropped since learning for another interface or MAC than the learned pair


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Plan:
    """What `apply()` changes: rules to add, rules to replace, keys whose rules go."""

    add: list[Rule]
    replace: list[Rule]
    remove: list


@overload
def plan(current: Mapping[RuleKey, Rule], wanted: Iterable[Rule | tuple], capacity: int) -> Plan: ...
@overload
def plan(current: Mapping[K, Rule], wanted: Iterable[Rule | tuple], capacity: int,
         key: Callable[[RuleKey], K]) -> Plan: ...
def plan(current: Mapping[Any, Rule], wanted: Iterable[Rule | tuple], capacity: int,
         key: Callable[[RuleKey], Hashable] = lambda k: k) -> Plan:
    """The difference between the rules held (`current`, by `key(rule.key)`) and `wanted`.

    Every wanted rule is validated, and a set larger than `capacity` refused
    (TableFull), before anything changes. A rule equal to the one held is
    left alone (its counters and rate buckets stay).
    """
    desired: dict[Hashable, Rule] = {}
    for r in wanted:
        rule = as_rule(r)
        desired[key(rule.key)] = rule
    if len(desired) > capacity:
        raise TableFull(f"the rule table is full ({capacity} rules)")
    add = [r for k, r in desired.items() if k not in current]
    replace = [r for k, r in desired.items() if k in current and current[k] != r]
    remove = [k for k in current if k not in desired]
    return Plan(add, replace, remove)


_LINK_LOCAL_GROUPS = ipaddress.IPv4Network("224.0.0.0/24")


def sap_group_list(groups: Iterable[str]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Validate the SAP groups given to the program: routable multicast, distinct, at most four per family."""
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for g in groups:
        try:
            addr = ipaddress.ip_address(str(g).strip())
        except ValueError:
            raise DataPlaneError(f"SAP group {g!r} is not an IP address") from None
        if addr.version == 4 and (not addr.is_multicast or addr in _LINK_LOCAL_GROUPS):
            raise DataPlaneError(f"SAP group {addr} is not a routable multicast group (224.0.1.0-239.255.255.255)")
        if addr.version == 6 and (not addr.is_multicast or addr.packed[1] & 0x0F <= 2):
            raise DataPlaneError(f"SAP group {addr} is not a routable IPv6 multicast group "
                                 "(ff00::/8, scope 3 or wider)")
        if addr not in out:
            out.append(addr)
    for version in (4, 6):
        n = sum(1 for a in out if a.version == version)
        if n > maps.MAX_SAP_GROUPS:
            raise DataPlaneError(f"at most {maps.MAX_SAP_GROUPS} IPv{version} SAP groups can be given, not {n}")
    return tuple(out)




class Filter(Protocol):
    """The interface of a filter (DataPlane, NfqueueFilter), as the backend and the daemon use it.

    Every method that changes state validates first and raises
    DataPlaneError (one sentence) without changing anything when its input
    is bad; Exists, NotFound and TableFull say which refusal it was.
    """

    name: str
    families: tuple[int, ...]  # the address families whose rules it can hold
    binds: bool  # whether it can hold bound rules (Binding); one that cannot refuses them as UNSUPPORTED
    @property
    def max_rules(self) -> int | None: ...  # read through the protocol; the filter sets it
    created: bool  # True when load() or open() started from empty state

    def load(self) -> Filter: ...
    def open(self) -> Filter: ...
    def close(self) -> None: ...
    def attach(self, iface: str, mode: str = "auto") -> str: ...
    def detach(self, iface: str) -> bool: ...

    @property
    def mode(self) -> Mode: ...
    def set_mode(self, mode: Mode | str) -> Mode: ...
    @property
    def state_id(self) -> int: ...

    def add_rule(self, rule: Rule | tuple) -> None: ...
    def replace_rule(self, rule: Rule | tuple) -> bool: ...
    def remove_rule(self, key: RuleKey | Rule | tuple) -> Rule: ...
    def flush(self) -> int: ...
    def apply(self, wanted: Iterable[Rule]) -> tuple[int, int, int]: ...

    def get_rule(self, key: RuleKey | Rule | tuple) -> RuleEntry | None: ...
    def rules(self) -> list[RuleEntry]: ...
    def rule_keys(self) -> list[RuleKey]: ...
    def rule_count(self) -> int: ...
    def counters(self) -> dict[str, dict[str, int]]: ...
    def denied(self) -> list[DeniedEntry]: ...
    def clear_denied(self) -> int: ...
    def clear_learned(self, key: RuleKey | Rule | tuple) -> BindingState: ...
