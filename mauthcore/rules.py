"""Sender rules: the one validated value type every layer of mauth passes around.

Strategy: a rule is a frozen dataclass built only through `Rule.make()`, which
validates everything an operator can get wrong (a group that is not multicast,
a link-local control group that the filter never looks at, a source that is not
a unicast host, a TTL outside 1..255, a prefix the filter cannot look up, a
rate it cannot count) and raises `RuleError` with one clear sentence.
Everything below this layer (the protocol codecs, the data plane, the
mediator) may then assume a rule is well formed.

A rule's identity is its key (source, group). Each side is a host (an
`IPv4Address`) or a prefix shorter than the address (an `IPv4Network`):

* a **source prefix** (192.0.2.0/24 -> 239.1.1.1): every host of the subnet
  may send to the group;
* a **group prefix** (192.0.2.10 -> 239.192.0.0/14): the trusted source may
  send to every group of the range, e.g. an administratively scoped one.

A key never has both: the filter finds a rule by an exact (source, group),
then by the longest source prefix for the exact group, then by the longest
group prefix for the exact source (ebpf/mauth.h), so a rule needs one exact
side to be found. A host is always written and stored as an address, never
as a /32, so `str()` of either side is its canonical text ("192.0.2.0/24",
"192.0.2.10") everywhere: files, the database, JSON.

A rule may also carry rate limits, packets per second and bits per second
(0 = unlimited), enforced by the filter per rule.

IPv4 and IPv6 rules follow the same shape; the two families never mix within
a rule. What a rule may name follows the filter's policy (README.md, "Packet
policy"; ebpf/mauth_xdp.c), so that no rule is accepted that the filter would never match:

* IPv4 groups lie in 224.0.0.0/4 outside the control block 224.0.0.0/24;
  IPv6 groups lie in ff00::/8 with a scope above 2 (RFC 4291 2.7: the scope
  is the low nibble of the second byte), since the filter passes interface-
  and link-scope groups (ff01::, ff02::, ff12::, ff32::...) untouched. A
  group prefix may be as wide as the whole multicast range but not lie
  wholly inside the groups the filter passes.
* A source is a unicast host, or a prefix of them. For IPv6 that also rules
  out the loopback ::1, link-local fe80::/10 (routers never forward packets
  with a link-local source, RFC 4291 2.5.6) and IPv4-mapped ::ffff:0:0/96
  (the filter sees such a sender as IPv4), and an address with a zone index.
* The max TTL is the IPv6 hop limit, in the same 1..255.

Addresses print in their canonical text (RFC 5952 compressed form for IPv6,
"2001:db8::10"), whatever the operator typed.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotations only (Python 3.13 has it in typing)
    from typing_extensions import TypeIs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Endpoint = IPAddress | IPNetwork  # a host, or a prefix shorter than the address width

MIN_TTL = 1
MAX_TTL = 255

# Rate limits. pps travels as a u32 in protocol v2; bps up to 100 Gbit/s is
# what the filter's token arithmetic holds without overflow (ebpf/mauth.h).
MAX_PPS = (1 << 32) - 1
MAX_BPS = 100_000_000_000

_V4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_V4_LINK_LOCAL_GROUPS = ipaddress.IPv4Network("224.0.0.0/24")
_V6_MULTICAST = ipaddress.IPv6Network("ff00::/8")
_V6_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_V6_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_MAX_LOCAL_SCOPE = 2  # scopes 0 (reserved), 1 (interface) and 2 (link): the filter passes them
_RATE = re.compile(r"(\d+(?:\.\d+)?)([kKMG]?)")
_SI = {"": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3}


class RuleError(ValueError):
    """A rule an operator asked for is invalid; the message says why in one sentence."""


def parse_address(text: str | IPAddress, what: str) -> IPAddress:
    """Parse an IP address, raising RuleError naming `what` on failure."""
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    try:
        address = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise RuleError(f"{what} {text!r} is not an IP address") from None
    _check_no_zone(address, what)
    return address


def _check_no_zone(value: Endpoint, what: str) -> None:
    """A zone index (fe80::1%eth0) names an interface, which no rule on a router's filter can mean."""
    address = value.network_address if _is_prefix(value) else value
    zone = getattr(address, "scope_id", None)
    if zone:
        raise RuleError(f"{what} {value} has a zone index (%{zone}); a rule names an address"
                        " without one")


def parse_endpoint(text: str | Endpoint, what: str) -> Endpoint:
    """Parse "ADDR" or "ADDR/LEN": an address, or a network if LEN is shorter than the address.

    A /32 (/128) is the host itself. Bits set beyond the prefix length are an
    error rather than silently cleared: 192.0.2.10/24 is more likely a typo
    for a host than a wish for the whole subnet.
    """
    if isinstance(text, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = text
    elif isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    else:
        s = str(text).strip()
        if "/" not in s:
            return parse_address(s, what)
        try:
            net = ipaddress.ip_network(s, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(s, strict=False)
            except ValueError:
                raise RuleError(f"{what} {text!r} is not an IP address or prefix") from None
            raise RuleError(f"{what} {s} has bits set beyond its prefix length (did you mean {loose}?)") from None
    _check_no_zone(net, what)
    if net.prefixlen == net.max_prefixlen:
        return net.network_address
    return net


_V6 = (ipaddress.IPv6Address, ipaddress.IPv6Network)  # an Endpoint of version 6


def _is_prefix(value: Endpoint) -> TypeIs[IPNetwork]:
    return isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network))


def v6_scope(address: ipaddress.IPv6Address) -> int:
    """The scope of an IPv6 multicast address: the low nibble of its second byte (RFC 4291 2.7)."""
    return address.packed[1] & 0x0F


def check_group(group: Endpoint) -> None:
    """Raise RuleError unless `group` is a multicast group (or range of groups) the filter guards."""
    if isinstance(group, _V6):
        _check_group_v6(group)
        return
    if _is_prefix(group):
        if group.prefixlen == 0:
            raise RuleError("group prefix /0 is not a multicast range; the widest is 224.0.0.0/4 (every group)")
        if not group.subnet_of(_V4_MULTICAST):
            raise RuleError(f"group prefix {group} is not inside the multicast range 224.0.0.0/4")
        if group.subnet_of(_V4_LINK_LOCAL_GROUPS):
            raise RuleError(f"group prefix {group} holds only link-local control groups (224.0.0.0/24),"
                            " which the filter always passes")
        return
    if group not in _V4_MULTICAST:
        raise RuleError(f"group {group} is not a multicast address (224.0.0.0/4)")
    if group in _V4_LINK_LOCAL_GROUPS:
        raise RuleError(
            f"group {group} is a link-local control group (224.0.0.0/24), which the filter always passes"
        )


def _check_group_v6(group: ipaddress.IPv6Address | ipaddress.IPv6Network) -> None:
    if _is_prefix(group):
        if group.prefixlen == 0:
            raise RuleError("group prefix /0 is not a multicast range; the widest is ff00::/8 (every group)")
        if not group.subnet_of(_V6_MULTICAST):
            raise RuleError(f"group prefix {group} is not inside the multicast range ff00::/8")
        # The last address of a prefix has every free bit set, so the largest scope in it.
        if v6_scope(group.broadcast_address) <= _V6_MAX_LOCAL_SCOPE:
            raise RuleError(f"group prefix {group} holds only link-scope groups (scope 2 or smaller),"
                            " which the filter always passes")
        return
    if group not in _V6_MULTICAST:
        raise RuleError(f"group {group} is not a multicast address (ff00::/8)")
    if v6_scope(group) <= _V6_MAX_LOCAL_SCOPE:
        raise RuleError(f"group {group} is a link-scope group (scope 2 or smaller), which the filter always passes")


def check_source(source: Endpoint) -> None:
    """Raise RuleError unless `source` could be the address of a sending host (or a subnet of them)."""
    if isinstance(source, _V6):
        _check_source_v6(source)
        return
    if _is_prefix(source):
        if source.prefixlen == 0:
            raise RuleError("source prefix /0 would authorize every host; give the sending subnets instead")
        if source.overlaps(_V4_MULTICAST):
            raise RuleError(f"source prefix {source} overlaps the multicast range 224.0.0.0/4, which holds no sender")
        return
    if source.is_multicast:
        raise RuleError(f"source {source} is a multicast address, not a sender")
    if source.is_unspecified or source == ipaddress.IPv4Address("255.255.255.255"):
        raise RuleError(f"source {source} cannot be the address of a sender")


def _check_source_v6(source: ipaddress.IPv6Address | ipaddress.IPv6Network) -> None:
    if _is_prefix(source):
        if source.prefixlen == 0:
            raise RuleError("source prefix /0 would authorize every host; give the sending subnets instead")
        if source.overlaps(_V6_MULTICAST):
            raise RuleError(f"source prefix {source} overlaps the multicast range ff00::/8, which holds no sender")
        if source.overlaps(_V6_LINK_LOCAL):
            raise RuleError(f"source prefix {source} overlaps the link-local range fe80::/10, whose senders"
                            " routers never forward")
        if source.subnet_of(_V6_V4_MAPPED):
            v4 = ipaddress.IPv4Network((source.network_address.ipv4_mapped, source.prefixlen - 96))
            raise RuleError(f"source prefix {source} is IPv4-mapped; write the IPv4 prefix {v4} instead")
        return
    if source.is_multicast:
        raise RuleError(f"source {source} is a multicast address, not a sender")
    if source.is_unspecified or source.is_loopback:
        raise RuleError(f"source {source} cannot be the address of a sender")
    if source in _V6_LINK_LOCAL:
        raise RuleError(f"source {source} is link-local (fe80::/10), and routers never forward packets"
                        " with a link-local source")
    if source in _V6_V4_MAPPED:
        raise RuleError(f"source {source} is an IPv4-mapped address; write the IPv4 address"
                        f" {source.ipv4_mapped} instead")


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


def check_rate(value: object, what: str, maximum: int) -> int:
    """A rate limit as an int (0 = unlimited): an integer, or text like "500", "2k", "1.5M", "10G".

    The suffixes are decimal (k = 1000), as rates on links are. Raises
    RuleError naming `what` ("pps" or "bps") unless it is a whole number in
    0..maximum.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or isinstance(value, float):
        raise RuleError(f"{what} limit {value!r} is not a whole number")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        m = _RATE.fullmatch(text.lstrip("-"))
        if m is not None and text.startswith("-"):
            raise RuleError(f"{what} limit {text} is negative; 0 means unlimited")
        if m is None:
            raise RuleError(f"{what} limit {value!r} is not a number (e.g. 500, 2k, 1.5M, 10G)")
        digits, suffix = m.groups()
        whole, _, frac = digits.partition(".")
        scaled = int(whole + frac) * _SI[suffix]
        number, rest = divmod(scaled, 10 ** len(frac))
        if rest:
            raise RuleError(f"{what} limit {value!r} is not a whole number")
    if number < 0:
        raise RuleError(f"{what} limit {number} is negative; 0 means unlimited")
    if number > maximum:
        raise RuleError(f"{what} limit {number} is above the largest the filter counts ({maximum})")
    return number


IFNAMSIZ = 16  # Linux: an interface name is at most 15 bytes
MAX_IFACE_LIST = 255  # router=name pairs, as protocol v2 carries them
_ROUTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_iface_name(name: object, what: str = "interface") -> str:
    """A Linux interface name as the kernel accepts it (1-15 bytes, no '/', ':' or white space, not '.' or '..').

    '=' and ',' are refused too: they write one name per router ("r1=eth1,r2=ens4").
    """
    text = str(name) if isinstance(name, str) else None
    if text is None or not text:
        raise RuleError(f"{what} name {name!r} is empty or not text")
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) >= IFNAMSIZ:
        raise RuleError(f"{what} name {text!r} is longer than {IFNAMSIZ - 1} bytes, the most Linux allows")
    if text in (".", "..") or any(c in text for c in "/:=,") or any(c.isspace() or not c.isprintable() for c in text):
        raise RuleError(f"{what} name {text!r} is not a Linux interface name")
    return text


def parse_mac(mac: object) -> bytes:
    """The six bytes of a unicast sender's MAC written aa:bb:cc:dd:ee:ff (or with dashes), or given as bytes."""
    if isinstance(mac, (bytes, bytearray)):
        raw = bytes(mac)
    else:
        parts = str(mac).strip().replace("-", ":").split(":")
        try:
            if len(parts) != 6 or any(len(p) != 2 for p in parts):
                raise ValueError(mac)
            raw = bytes(int(p, 16) for p in parts)
        except ValueError:
            raise RuleError(f"MAC address {mac!r} is not six hexadecimal bytes like 02:00:5e:10:00:01") from None
    if len(raw) != 6:
        raise RuleError(f"MAC address {raw.hex()} is not six bytes long")
    if raw[0] & 1:
        raise RuleError(f"MAC address {format_mac(raw)} is a multicast address, which no sender has")
    if raw == bytes(6):
        raise RuleError("MAC address 00:00:00:00:00:00 names no sender")
    return raw


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@functools.total_ordering
@dataclass(frozen=True)
class Binding:
    """Where the sender of a rule may be (docs/operations.md, "Binding a sender"); every part is optional.

    * `iface`: the ingress interface its packets must arrive on, as the
      router names it ("eth1"); or, in mauthserver, one name per router
      ("r1=eth1,r2=ens4"): the routers named get the interface, the MAC and
      learning (they are the sender's first hop), the others the rule with
      `rpf` only (`on()`).
    * `rpf`: the source must route back through the interface the packet came in on.
    * `mac`: the frame's source MAC must be this one.
    * `learn`: the first packet pins (interface, MAC); later ones must match it.

    A prefix rule takes `iface` and `rpf` only (a subnet has no one MAC).
    The empty Binding() is an unbound rule.
    """

    iface: str = ""
    rpf: bool = False
    mac: bytes = b""
    learn: bool = False

    @classmethod
    def make(cls, iface: object = None, *, rpf: object = False, mac: object = None, learn: object = False) -> Binding:
        """Validate and build a binding; RuleError (one sentence) for a bad interface name or MAC."""
        for name, flag in (("rpf", rpf), ("learn", learn)):
            if not isinstance(flag, bool):
                raise RuleError(f"{name} is true or false, not {flag!r}")
        assert isinstance(rpf, bool) and isinstance(learn, bool)
        return cls(_canonical_iface(iface) if iface not in (None, "") else "", rpf,
                   parse_mac(mac) if mac not in (None, "") else b"", learn)

    @property
    def empty(self) -> bool:
        return not (self.iface or self.rpf or self.mac or self.learn)

    @property
    def per_router(self) -> dict[str, str] | None:
        """{router: interface} when the interface is named per router, else None."""
        if "=" not in self.iface:
            return None
        return dict(part.split("=", 1) for part in self.iface.split(","))

    def on(self, router: str) -> Binding:
        """The binding a router holds: a per-router interface resolved for `router`.

        A router the per-router list does not name is not the sender's first
        hop: it gets `rpf` alone, since the interface, the MAC and learning
        describe the sender's own link.
        """
        names = self.per_router
        if names is None:
            return self
        if router in names:
            return Binding(names[router], self.rpf, self.mac, self.learn)
        return Binding(rpf=self.rpf)

    def check_for(self, key: RuleKey) -> None:
        """Refuse a binding the rule for `key` cannot take: a MAC, or learning one, for a whole prefix."""
        if not key.is_exact and (self.mac or self.learn):
            what = "a MAC address" if self.mac else "a learned MAC address"
            raise RuleError(f"the prefix rule {key} cannot be bound to {what}, since a subnet has no one MAC;"
                            " bind it to an interface or the reverse path instead")

    def as_json(self) -> dict[str, object]:
        """{"iface", "rpf", "mac", "learn"}, only the parts set."""
        out: dict[str, object] = {}
        if self.iface:
            out["iface"] = self.iface
        if self.rpf:
            out["rpf"] = True
        if self.mac:
            out["mac"] = format_mac(self.mac)
        if self.learn:
            out["learn"] = True
        return out

    @classmethod
    def from_json(cls, obj: object) -> Binding:
        if not isinstance(obj, dict):
            raise RuleError(f"a binding is a JSON object with iface, rpf, mac and learn, not {type(obj).__name__}")
        unknown = sorted(set(obj) - {"iface", "rpf", "mac", "learn"})
        if unknown:
            raise RuleError(f"a binding has no field {unknown[0]!r}; it has iface, rpf, mac and learn")
        return cls.make(obj.get("iface"), rpf=obj.get("rpf", False), mac=obj.get("mac"), learn=obj.get("learn", False))

    def words(self) -> list[str]:
        """The rule file's words for this binding: iface=IF rpf mac=MAC learn."""
        out = [f"iface={self.iface}"] if self.iface else []
        out += ["rpf"] if self.rpf else []
        out += [f"mac={format_mac(self.mac)}"] if self.mac else []
        out += ["learn"] if self.learn else []
        return out

    def _order(self) -> tuple[str, bool, bytes, bool]:
        return (self.iface, self.rpf, self.mac, self.learn)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Binding):
            return NotImplemented
        return self._order() < other._order()

    def __str__(self) -> str:
        return " ".join(self.words()) or "unbound"


UNBOUND = Binding()


def _canonical_iface(value: object) -> str:
    """One interface name, or "router=iface" pairs separated by commas (sorted, each router once)."""
    if not isinstance(value, str):
        raise RuleError(f"interface {value!r} is not a name")
    text = value.strip()
    if "=" not in text:
        return check_iface_name(text)
    pairs: dict[str, str] = {}
    for part in text.split(","):
        router, eq, iface = part.strip().partition("=")
        router = router.strip()
        if not eq or not _ROUTER_NAME.fullmatch(router):
            raise RuleError(f"{part.strip()!r} is not ROUTER=INTERFACE (a router's name, '=', its interface)")
        if router in pairs:
            raise RuleError(f"router {router} is given two interfaces")
        pairs[router] = check_iface_name(iface.strip(), f"router {router}'s interface")
    text = ",".join(f"{r}={i}" for r, i in sorted(pairs.items()))
    if len(text.encode()) > MAX_IFACE_LIST:
        raise RuleError(f"the interfaces of {len(pairs)} routers take more than {MAX_IFACE_LIST} bytes;"
                        " name the interface once for every router, or bind fewer routers")
    return text


def _width(value: Endpoint) -> int:
    return 32 if value.version == 4 else 128


def _packed(value: Endpoint) -> bytes:
    return value.network_address.packed if _is_prefix(value) else value.packed


@functools.total_ordering
@dataclass(frozen=True)
class RuleKey:
    """The identity of a rule: which sender (or subnet), to which group (or range)."""

    source: Endpoint
    group: Endpoint

    @classmethod
    def make(cls, source: str | Endpoint, group: str | Endpoint) -> RuleKey:
        src = parse_endpoint(source, "source")
        grp = parse_endpoint(group, "group")
        check_group(grp)
        check_source(src)
        if src.version != grp.version:
            raise RuleError(f"source {src} and group {grp} are of different address families")
        if _is_prefix(src) and _is_prefix(grp):
            raise RuleError(f"rule ({src}, {grp}) has a source prefix and a group prefix; a rule may have one"
                            " or the other, since the filter finds a rule by its exact source or exact group")
        return cls(src, grp)

    @property
    def family(self) -> int:
        return self.group.version

    @property
    def source_len(self) -> int:
        return self.source.prefixlen if _is_prefix(self.source) else _width(self.source)

    @property
    def group_len(self) -> int:
        return self.group.prefixlen if _is_prefix(self.group) else _width(self.group)

    @property
    def source_address(self) -> IPAddress:
        """The source, or the first address of the source prefix."""
        return self.source.network_address if _is_prefix(self.source) else self.source

    @property
    def group_address(self) -> IPAddress:
        """The group, or the first address of the group prefix."""
        return self.group.network_address if _is_prefix(self.group) else self.group

    @property
    def is_exact(self) -> bool:
        """A host sending to one group (the filter's fast path)."""
        return not (_is_prefix(self.source) or _is_prefix(self.group))

    @functools.cached_property
    def cursor(self) -> bytes:
        """Bytes whose order is the keys' order: family, source, group, source length, group length.

        11 bytes for IPv4, 35 for IPv6 (CURSOR_SIZES); listings hand it out as
        their paging cursor (docs/protocol.md, "Listing cursors"). Computed
        once per key (keys are sorted by it, a million at a time).
        """
        return (bytes([self.family]) + _packed(self.source) + _packed(self.group)
                + bytes([self.source_len, self.group_len]))

    def covers(self, source: IPAddress, group: IPAddress) -> bool:
        """Whether a packet from `source` to `group` falls under this key (the filter may still prefer another)."""
        return (source == self.source if not _is_prefix(self.source) else source in self.source) and (
            group == self.group if not _is_prefix(self.group) else group in self.group)

    def as_json(self) -> dict[str, str]:
        """{"source", "group"} in canonical text: how every file, answer and event of mauth writes a key."""
        return {"source": str(self.source), "group": str(self.group)}

    @classmethod
    def from_json(cls, obj: object) -> RuleKey:
        """The key `as_json()` wrote (validated as `make()` does); RuleError naming what is missing or wrong."""
        source, group = _json_fields(obj, ("source", "group"), "a rule key")
        return cls.make(_json_text(source, "source"), _json_text(group, "group"))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, RuleKey):
            return NotImplemented
        return self.cursor < other.cursor

    def __str__(self) -> str:
        return f"({self.source}, {self.group})"


CURSOR_SIZES = {4: 1 + 4 + 4 + 2, 6: 1 + 16 + 16 + 2}  # RuleKey.cursor length of each family
MAX_CURSOR_SIZE = max(CURSOR_SIZES.values())  # 35


def check_cursor(cursor: bytes) -> bytes:
    """`cursor` if it has the shape of a `RuleKey.cursor` (a listing position), else RuleError.

    A cursor names a position in the keys' order, not a key that must still
    exist: a listing resumes after it even if its rule was removed meanwhile.
    """
    cursor = bytes(cursor)
    family = cursor[0] if cursor else 0
    size = CURSOR_SIZES.get(family)
    if size is None or len(cursor) != size:
        raise RuleError(f"a listing cursor is {CURSOR_SIZES[4]} bytes starting with 4 or {CURSOR_SIZES[6]} bytes"
                        f" starting with 6, not {len(cursor)} bytes starting with {family}")
    width = 32 if family == 4 else 128
    if cursor[-2] > width or cursor[-1] > width:
        raise RuleError(f"a listing cursor's prefix lengths are at most {width}, not {cursor[-2]} and {cursor[-1]}")
    return cursor


@dataclass(frozen=True, order=True)
class Rule:
    """An authorization: `source` may send to `group` with a TTL of at most `max_ttl`.

    `pps` and `bps` limit the rule's packets and bits per second (0 = no limit).
    """

    key: RuleKey
    max_ttl: int
    pps: int = 0
    bps: int = 0
    binding: Binding = UNBOUND

    @classmethod
    def make(cls, source: str | Endpoint, group: str | Endpoint, max_ttl: object, *,
             pps: object = 0, bps: object = 0, binding: Binding | None = None) -> Rule:
        key = RuleKey.make(source, group)
        if binding is not None and not isinstance(binding, Binding):
            raise RuleError(f"{binding!r} is not a binding")
        binding = binding or UNBOUND
        binding.check_for(key)
        return cls(key, check_ttl(max_ttl), check_rate(pps, "pps", MAX_PPS), check_rate(bps, "bps", MAX_BPS),
                   binding)

    @property
    def source(self) -> Endpoint:
        return self.key.source

    @property
    def group(self) -> Endpoint:
        return self.key.group

    @property
    def rate_limited(self) -> bool:
        return bool(self.pps or self.bps)

    @property
    def bound(self) -> bool:
        return not self.binding.empty

    @property
    def terms(self) -> tuple[int, int, int]:
        """What a router must hold for this key to hold this rule: (max TTL, pps, bps); the binding apart."""
        return (self.max_ttl, self.pps, self.bps)

    def on(self, router: str) -> Rule:
        """The rule as `router` holds it: a per-router interface resolved (Binding.on)."""
        binding = self.binding.on(router)
        return self if binding is self.binding else Rule(self.key, self.max_ttl, self.pps, self.bps, binding)

    def as_json(self, *, limits: bool = True) -> dict[str, object]:
        """The rule as JSON: its key's fields, "max_ttl", "pps" and "bps" unless `limits` is false, and
        "binding" if it is bound."""
        out: dict[str, object] = {**self.key.as_json(), "max_ttl": self.max_ttl}
        if limits:
            out["pps"] = self.pps
            out["bps"] = self.bps
        if self.bound:
            out["binding"] = self.binding.as_json()
        return out

    @classmethod
    def from_json(cls, obj: object) -> Rule:
        """The rule `as_json()` wrote, validated as `make()` does ("pps" and "bps" default to 0)."""
        source, group, max_ttl = _json_fields(obj, ("source", "group", "max_ttl"), "a rule")
        assert isinstance(obj, dict)
        binding = Binding.from_json(obj["binding"]) if obj.get("binding") is not None else None
        return cls.make(_json_text(source, "source"), _json_text(group, "group"), max_ttl,
                        pps=obj.get("pps", 0), bps=obj.get("bps", 0), binding=binding)

    def __str__(self) -> str:
        text = f"{self.key.source} -> {self.key.group} max-ttl {self.max_ttl}"
        if self.pps:
            text += f" pps {self.pps}"
        if self.bps:
            text += f" bps {self.bps}"
        if self.bound:
            text += f" {self.binding}"
        return text


def _json_fields(obj: object, names: tuple[str, ...], what: str) -> tuple[object, ...]:
    if not isinstance(obj, dict):
        raise RuleError(f"{what} is a JSON object with {', '.join(names)}, not {type(obj).__name__}")
    missing = [n for n in names if n not in obj]
    if missing:
        raise RuleError(f"{what} lacks {', '.join(missing)}")
    return tuple(obj[n] for n in names)


def _json_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise RuleError(f"the {what} is an address in a string, not {value!r}")
    return value
