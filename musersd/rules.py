"""Sender rules: the one validated value type every layer of mauth passes around.

Strategy: a rule is a frozen dataclass built only through `Rule.make()`, which
validates everything an operator can get wrong (a group that is not multicast,
a link-local control group that the filter never looks at, a source that is not
a unicast host, a TTL outside 1..255) and raises `RuleError` with one clear
sentence. Everything below this layer (the protocol codecs, the data plane,
the mediator) may then assume a rule is well formed.

A rule's identity is its key (source, group). IPv4 only for now; the key
already carries the address family so that IPv6 rules slot in later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MIN_TTL = 1
MAX_TTL = 255

_V4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_V4_LINK_LOCAL_GROUPS = ipaddress.IPv4Network("224.0.0.0/24")


class RuleError(ValueError):
    """A rule an operator asked for is invalid; the message says why in one sentence."""


def parse_address(text: str | IPAddress, what: str) -> IPAddress:
    """Parse an IP address, raising RuleError naming `what` on failure."""
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise RuleError(f"{what} {text!r} is not an IP address") from None


def check_group(group: IPAddress) -> None:
    """Raise RuleError unless `group` is a multicast group the filter guards."""
    if group.version != 4:
        raise RuleError(f"group {group} is IPv6, which this version of mauth does not filter yet")
    if group not in _V4_MULTICAST:
        raise RuleError(f"group {group} is not a multicast address (224.0.0.0/4)")
    if group in _V4_LINK_LOCAL_GROUPS:
        raise RuleError(
            f"group {group} is a link-local control group (224.0.0.0/24), which the filter always passes"
        )


def check_source(source: IPAddress) -> None:
    """Raise RuleError unless `source` could be the address of a sending host."""
    if source.version != 4:
        raise RuleError(f"source {source} is IPv6, which this version of mauth does not filter yet")
    if source.is_multicast:
        raise RuleError(f"source {source} is a multicast address, not a sender")
    if source.is_unspecified or source == ipaddress.IPv4Address("255.255.255.255"):
        raise RuleError(f"source {source} cannot be the address of a sender")


def check_ttl(max_ttl: object) -> int:
    """Return max_ttl as an int, or raise RuleError unless it is in 1..255."""
    if isinstance(max_ttl, bool):
        raise RuleError(f"max TTL {max_ttl!r} is not a number")
    try:
        value = int(str(max_ttl).strip()) if not isinstance(max_ttl, int) else max_ttl
    except ValueError:
        raise RuleError(f"max TTL {max_ttl!r} is not a number") from None
    if not MIN_TTL <= value <= MAX_TTL:
        raise RuleError(f"max TTL {value} is outside {MIN_TTL}-{MAX_TTL}")
    return value


@dataclass(frozen=True, order=True)
class RuleKey:
    """The identity of a rule: which sender, to which group."""

    source: IPAddress
    group: IPAddress

    @classmethod
    def make(cls, source: str | IPAddress, group: str | IPAddress) -> "RuleKey":
        src = parse_address(source, "source")
        grp = parse_address(group, "group")
        check_group(grp)
        check_source(src)
        if src.version != grp.version:
            raise RuleError(f"source {src} and group {grp} are of different address families")
        return cls(src, grp)

    @property
    def family(self) -> int:
        return self.group.version

    def __str__(self) -> str:
        return f"({self.source}, {self.group})"


@dataclass(frozen=True, order=True)
class Rule:
    """An authorization: `source` may send to `group` with a TTL of at most `max_ttl`."""

    key: RuleKey
    max_ttl: int

    @classmethod
    def make(cls, source: str | IPAddress, group: str | IPAddress, max_ttl: object) -> "Rule":
        key = RuleKey.make(source, group)
        return cls(key, check_ttl(max_ttl))

    @property
    def source(self) -> IPAddress:
        return self.key.source

    @property
    def group(self) -> IPAddress:
        return self.key.group

    def __str__(self) -> str:
        return f"{self.key.source} -> {self.key.group} max-ttl {self.max_ttl}"
