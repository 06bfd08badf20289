"""SDP session descriptions (RFC 8866) with source filters (RFC 4570): sans-IO.

Strategy: ``parse_sdp(bytes)`` returns a frozen :class:`SessionDescription` or
raises :class:`~sap.errors.SDPDecodeError` naming the line; ``encode_sdp()``
writes a canonical description back. What mauth needs from a description is
*who sends what where*: the session identity (``o=``), the groups each media
uses with their TTL (``c=``, ``m=``) and the senders declared by
``a=source-filter``. :attr:`SessionDescription.flows` computes that view once,
at parse time, so a description that parses is also one whose view is sound.

Tolerant where it costs nothing, strict where a wrong guess would mislead:

* tolerated: LF-only line ends, trailing/leading blanks, blank lines, trailing
  NUL bytes, lines out of RFC order, session-only lines (``t=``, ``o=``...)
  after the first ``m=``, unknown line types (kept in ``unknown``; RFC 8866 §5
  says to ignore the whole description, but a new type cannot change what
  ``c=``/``m=`` say), text that is not UTF-8 (read as Latin-1, as old sdr
  announcements are), ``a=source-filter:incl`` without the space, and the
  colon-less ``a=source-filter incl`` spelling of RFC 4570 §3.2.5.
* refused with the line number: a ``c=`` whose address does not parse or does
  not match its address type, an IPv4 multicast ``c=`` without TTL (RFC 8866
  §5.7 "MUST also have a time to live"; ``allow_missing_ttl=True`` relaxes
  this for senders such as PulseAudio), a TTL outside 0-255, a zero or
  out-of-range address count, a TTL on IPv6, a media without any ``c=``, a
  malformed ``m=``/``t=``/``o=``, a source filter that is malformed, names a
  destination that no ``c=`` carries, or contradicts another filter.

Why not a library: ``sdp-transform`` 1.1.0 (the maintained PyPI parser, a port
of the JavaScript one; tried on real bodies) matches each line against a
regular expression. Its ``c=`` rule ``^IN IP(\\d) (\\S*)`` returns
``"ip": "224.2.1.1/127/3"`` (no TTL, no count) and accepts ``224.2.1.256``; a
malformed ``a=source-filter`` is moved to an ``invalid`` list without an
error; a second ``source-filter`` or ``c=`` at one level overwrites the first;
``sess-id`` becomes an int. Nothing else on PyPI parses RFC 4570. That is the
"silently wrong result" a filter policy cannot afford, so the few lines that
matter are parsed here, strictly, with no runtime dependency.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple, TypeVar

from sap.errors import SDPDecodeError, SDPUsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Host = ipaddress.IPv4Address | ipaddress.IPv6Address | str
"""An IP address, or a lower-case FQDN (RFC 8866 and RFC 4570 allow names)."""

NTP_UNIX_OFFSET = 2208988800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""

MAX_ADDRESS_COUNT = 256
"""Largest <number of addresses> in one c= line that we expand."""

_V4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_V6_MULTICAST = ipaddress.IPv6Network("ff00::/8")
_DECIMAL = re.compile(r"[0-9]{1,20}")
_LONG_DECIMAL = re.compile(r"[0-9]{1,64}")
_V4_CHARS = re.compile(r"[0-9.]+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BLANKS = re.compile(r"[ \t]+")
_LINE_TYPE = re.compile(r"[A-Za-z]")
_SESSION_ONLY = frozenset("vosueptrz")  # line types that exist only at session level


def ntp_to_unix(ntp: int) -> int:
    """Convert an SDP time (decimal NTP seconds, RFC 8866 §5.9) to Unix time.

    SDP times are arbitrary-length decimals, so there is no 2036 wrap to undo.
    0 means "unbounded" in ``t=`` and is not a time: see Timing.stop_unix.
    """
    return int(ntp) - NTP_UNIX_OFFSET


def unix_to_ntp(unix: float) -> int:
    """Convert Unix time to SDP's NTP seconds (for building ``t=`` lines)."""
    return int(unix) + NTP_UNIX_OFFSET


# --------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``.

    RFC 8866 §5.2: "the tuple of <username>, <sess-id>, <nettype>, <addrtype>,
    and <unicast-address> forms a globally unique identifier for the session";
    <sess-version> orders versions of one session ("a version number for this
    session description ... the <sess-version> is increased when a
    modification is made"). The address is kept as written (it may be a name).
    """

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str
    line: int = field(default=0, compare=False)

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        return (self.username, self.sess_id, self.nettype, self.addrtype, self.address)

    @property
    def ip(self) -> IPAddress | None:
        """The unicast address as an IP address, or None if it is a name."""
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None

    def to_line(self) -> str:
        return (
            f"o={self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """One ``c=<nettype> <addrtype> <connection-address>`` line (RFC 8866 §5.7).

    ``224.2.1.1/127/3`` is address 224.2.1.1, TTL 127, count 3: the groups
    224.2.1.1, .2 and .3 (:attr:`addresses`). IPv6 has no TTL:
    ``ff15::1/3`` is a count. ``address`` is a lower-case name for an FQDN,
    which is kept but never expanded (we do no DNS).
    """

    nettype: str
    addrtype: str
    address: Host
    ttl: int | None = None
    count: int = 1
    line: int = field(default=0, compare=False)

    @property
    def is_fqdn(self) -> bool:
        return isinstance(self.address, str)

    @property
    def is_multicast(self) -> bool:
        return not isinstance(self.address, str) and self.address.is_multicast

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        """Every address this line stands for; empty for an FQDN."""
        if isinstance(self.address, str):
            return ()
        base = int(self.address)
        cls = type(self.address)
        return tuple(cls(base + i) for i in range(self.count))

    def value(self) -> str:
        text = str(self.address)
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count != 1:
            text += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {text}"


@dataclass(frozen=True)
class SourceFilter:
    """``a=source-filter: <mode> <nettype> <address-types> <dest-address> <src-list>``.

    RFC 4570 §3: "incl" means "an incoming packet is accepted only if its
    source address is in the set specified by <src-list>"; "excl" that it is
    rejected if it is. ``dest`` is an address, a lower-case FQDN, or "*"
    ("to match any/all of the session's connection-address values").
    """

    mode: str
    nettype: str
    addrtype: str
    dest: Host
    sources: tuple[Host, ...]
    line: int = field(default=0, compare=False)

    def applies_to(self, addr: IPAddress) -> bool:
        """True if this filter covers destination ``addr``."""
        if self.addrtype == "IP4" and addr.version != 4:
            return False
        if self.addrtype == "IP6" and addr.version != 6:
            return False
        return self.dest == "*" or self.dest == addr

    @property
    def source_ips(self) -> tuple[IPAddress, ...]:
        return tuple(s for s in self.sources if not isinstance(s, str))

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s for s in self.sources if isinstance(s, str))


@dataclass(frozen=True)
class Timing:
    """``t=<start-time> <stop-time>`` and its ``r=`` lines (RFC 8866 §5.9-5.10).

    Times are NTP seconds. "If the <stop-time> is set to zero, then the
    session is not bounded, though it will not become active until after the
    <start-time>. If the <start-time> is also zero, the session is regarded as
    permanent." With ``r=`` lines, t= spans the whole repeat sequence, so its
    stop time still bounds the session. ``r=`` values are kept verbatim.
    """

    start: int
    stop: int
    repeats: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)

    @property
    def start_unix(self) -> int | None:
        return None if self.start == 0 else ntp_to_unix(self.start)

    @property
    def stop_unix(self) -> int | None:
        return None if self.stop == 0 else ntp_to_unix(self.stop)


class Group(NamedTuple):
    """A multicast group a session sends to, with the TTL it announces (None for IPv6).

    A named tuple, so ``Group(addr, 127) == (addr, 127)``.
    """

    address: IPAddress
    ttl: int | None


Attribute = tuple[str, str | None]
"""(name, value); value None for a property attribute such as ``a=recvonly``."""


@dataclass(frozen=True)
class Media:
    """One media description, from its ``m=`` line to the next (RFC 8866 §5.14).

    ``m=<media> <port>/<number of ports> <proto> <fmt> ...``. ``connections``
    and ``source_filters`` are media-level only; see
    SessionDescription.flows for what applies once session-level lines are
    taken into account. ``source_filters`` is parsed from ``attributes``.
    """

    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[str, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    source_filters: tuple[SourceFilter, ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()
    line: int = field(default=0, compare=False)

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute called ``name`` ("" if it has none)."""
        return _first_attribute(self.attributes, name)


@dataclass(frozen=True)
class Flow:
    """One (media, destination group): who may send there under RFC 4570.

    ``mode`` is "any" (no filter covers the group: any-source), "incl" (only
    ``sources`` are legitimate senders) or "excl" (anyone but ``excluded``).
    Sources given as names, which we cannot resolve, are in ``*_names``.
    ``media_index`` is None for a description without media, whose
    session-level ``c=`` is then reported on its own.
    """

    media_index: int | None
    group: IPAddress
    ttl: int | None
    mode: str
    sources: tuple[IPAddress, ...] = ()
    excluded: tuple[IPAddress, ...] = ()
    source_names: tuple[str, ...] = ()
    excluded_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionDescription:
    """A parsed session description. Text fields are str; line numbers do not count for ==."""

    origin: Origin
    name: str
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[str, ...] = ()
    timings: tuple[Timing, ...] = ()
    timezones: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    source_filters: tuple[SourceFilter, ...] = ()
    media: tuple[Media, ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The value of the first session-level attribute called ``name``."""
        return _first_attribute(self.attributes, name)

    # -- the computed view: who sends what where -------------------------

    @cached_property
    def flows(self) -> tuple[Flow, ...]:
        """Every (media, multicast group) with the senders RFC 4570 allows.

        Raises SDPDecodeError if the filters cannot be applied unambiguously;
        parse_sdp() evaluates this before returning, so a parsed description
        never raises here.
        """
        return _compute_flows(self)

    @property
    def groups(self) -> tuple[Group, ...]:
        """Distinct (multicast group, TTL) pairs used by any media, in order of appearance."""
        seen: dict[tuple[IPAddress, int | None], None] = {}
        for flow in self.flows:
            seen.setdefault((flow.group, flow.ttl))
        return tuple(Group(address, ttl) for address, ttl in seen)

    @property
    def media_groups(self) -> tuple[tuple[Group, ...], ...]:
        """For each media, in order, the distinct (group, TTL) pairs it sends to."""
        per_media: list[dict[tuple[IPAddress, int | None], None]] = [{} for _ in self.media]
        for flow in self.flows:
            if flow.media_index is not None:
                per_media[flow.media_index].setdefault((flow.group, flow.ttl))
        return tuple(tuple(Group(a, t) for a, t in groups) for groups in per_media)

    @property
    def senders(self) -> dict[IPAddress, tuple[IPAddress, ...]]:
        """Declared senders ("incl" sources) per group; groups without incl filters are absent."""
        out: dict[IPAddress, dict[IPAddress, None]] = {}
        for flow in self.flows:
            if flow.mode == "incl":
                bucket = out.setdefault(flow.group, {})
                for src in flow.sources:
                    bucket.setdefault(src)
        return {group: tuple(srcs) for group, srcs in out.items()}

    @property
    def excluded(self) -> dict[IPAddress, tuple[IPAddress, ...]]:
        """Excluded sources ("excl" filters) per group."""
        out: dict[IPAddress, dict[IPAddress, None]] = {}
        for flow in self.flows:
            if flow.mode == "excl":
                bucket = out.setdefault(flow.group, {})
                for src in flow.excluded:
                    bucket.setdefault(src)
        return {group: tuple(srcs) for group, srcs in out.items()}

    @property
    def declared_senders(self) -> tuple[IPAddress, ...]:
        """Every address an "incl" filter names, across all groups, in order."""
        seen: dict[IPAddress, None] = {}
        for flow in self.flows:
            if flow.mode == "incl":
                for src in flow.sources:
                    seen.setdefault(src)
        return tuple(seen)

    @property
    def is_any_source(self) -> bool:
        """True if no "incl" filter restricts any group (classic ASM session)."""
        return not any(flow.mode == "incl" for flow in self.flows)

    @property
    def unresolved(self) -> tuple[str, ...]:
        """Destinations given as names (FQDN c= lines), which have no flows."""
        names: dict[str, None] = {}
        for conn in self.connections + tuple(c for m in self.media for c in m.connections):
            if isinstance(conn.address, str):
                names.setdefault(conn.address)
        return tuple(names)

    @property
    def start_unix(self) -> int | None:
        """Earliest bounded start time (Unix), None if every t= starts at 0 or there is none."""
        starts = [t.start_unix for t in self.timings if t.start != 0]
        return min(starts) if starts else None  # type: ignore[type-var]

    @property
    def stop_unix(self) -> int | None:
        """When the session ends (Unix), or None if it is unbounded.

        RFC 8866 §5.9 allows several t= lines; the session ends with the last
        one, and a single t= with stop 0 makes it unbounded (as does no t=).
        """
        if not self.timings or any(t.stop == 0 for t in self.timings):
            return None
        return max(ntp_to_unix(t.stop) for t in self.timings)


def _first_attribute(attributes: tuple[Attribute, ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return "" if value is None else value
    return None


# --------------------------------------------------------------------------
# Parsing


def _fail(message: str, line: int | None, reason: str) -> SDPDecodeError:
    return SDPDecodeError(message, reason=reason, line=line)


def _fields(value: str) -> list[str]:
    value = value.strip(" \t")
    return _BLANKS.split(value) if value else []


def _is_fqdn(text: str) -> bool:
    if not text or len(text) > 253:
        return False
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return False
    # "224.2.1.256" is a broken IPv4 address, not a host name: top-level
    # labels are never all-numeric.
    return not labels[-1].isdigit()


def _parse_host(text: str, addrtype: str | None, line: int, what: str) -> Host:
    """An IP literal of family ``addrtype`` ("IP4"/"IP6"; None = either) or an FQDN."""
    if not text or not text.isascii():
        raise _fail(f"{what} {text!r} is not an address", line, "bad-address")
    if ":" in text:
        try:
            addr: IPAddress = ipaddress.IPv6Address(text)
        except ValueError:
            raise _fail(f"{what} {text!r} is not a valid IPv6 address", line, "bad-address") from None
        if addrtype == "IP4":
            raise _fail(f"{what} {text} is IPv6 but the address type is IP4", line, "addrtype-mismatch")
        return addr
    if _V4_CHARS.fullmatch(text):
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            raise _fail(f"{what} {text!r} is not a valid IPv4 address", line, "bad-address") from None
        if addrtype == "IP6":
            raise _fail(f"{what} {text} is IPv4 but the address type is IP6", line, "addrtype-mismatch")
        return addr
    if _is_fqdn(text):
        return text.lower()
    raise _fail(f"{what} {text!r} is neither an IP address nor a host name", line, "bad-address")


def _decimal(text: str, what: str, line: int, reason: str, lo: int, hi: int | None) -> int:
    if not _DECIMAL.fullmatch(text):
        raise _fail(f"{what} {text!r} is not a decimal number", line, reason)
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise _fail(f"{what} {value} is outside {bound}", line, reason)
    return value


def _net_and_addrtype(
    nettype: str, addrtype: str, line: int, what: str, star: bool = False
) -> tuple[str, str]:
    if nettype.upper() != "IN":
        raise _fail(f"{what} network type {nettype!r} is not IN", line, "nettype")
    upper = addrtype.upper()
    if upper not in ("IP4", "IP6") and not (star and upper == "*"):
        raise _fail(f"{what} address type {addrtype!r} is not IP4 or IP6", line, "addrtype")
    return "IN", upper


# RFC 8866 §5.7:
#   c=<nettype> <addrtype> <connection-address>
#   IPv4 multicast:  <base multicast address>/<ttl>[/<number of addresses>]
#   IPv6 multicast:  <base multicast address>[/<number of addresses>]
#   "Sessions using an IPv4 multicast connection address MUST also have a
#    time to live (TTL) value present"; "TTL values MUST be in the range
#    0-255"; "IPv6 multicast does not use TTL scoping, and hence the TTL value
#    MUST NOT be present for IPv6 multicast."
def _parse_connection(value: str, line: int, allow_missing_ttl: bool) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise _fail(
            f"c= {value!r} is not '<nettype> <addrtype> <connection-address>'", line, "bad-connection"
        )
    nettype, addrtype = _net_and_addrtype(parts[0], parts[1], line, "c=")
    pieces = parts[2].split("/")
    base = _parse_host(pieces[0], addrtype, line, "c= address")
    extra = pieces[1:]
    ttl: int | None
    if isinstance(base, str):
        # A name: we cannot tell multicast from unicast without DNS, and we
        # never expand it, so keep its numbers as written (RFC 4570 §3.2.6
        # shows "c=IN IP6 channel-1.example.com/127").
        if len(extra) > 2:
            raise _fail(f"c= {parts[2]!r} has too many '/' fields", line, "bad-connection")
        nums = [_decimal(x, "c= number", line, "bad-connection", 0, None) for x in extra]
        if addrtype == "IP4":
            ttl = nums[0] if nums else None
            count = nums[1] if len(nums) > 1 else 1
        else:
            ttl, count = (nums[0], nums[1]) if len(nums) == 2 else (None, nums[0] if nums else 1)
        if count < 1:
            raise _fail("c= number of addresses must be at least 1", line, "bad-count")
        return Connection(nettype, addrtype, base, ttl, count, line)

    ttl = None
    count = 1
    if base.version == 4:
        if len(extra) > 2:
            raise _fail(f"c= {parts[2]!r} has too many '/' fields", line, "bad-connection")
        if base.is_multicast:
            if extra:
                ttl = _decimal(extra[0], "c= TTL", line, "bad-ttl", 0, 255)
            elif not allow_missing_ttl:
                raise _fail(
                    f"c= IPv4 multicast address {base} has no TTL (RFC 8866 section 5.7: it MUST be present)",
                    line,
                    "missing-ttl",
                )
            if len(extra) == 2:
                count = _decimal(extra[1], "c= number of addresses", line, "bad-count", 1, MAX_ADDRESS_COUNT)
        else:
            if len(extra) == 2:
                raise _fail(f"c= unicast address {base} cannot have a number of addresses", line, "bad-count")
            if extra:
                ttl = _decimal(extra[0], "c= TTL", line, "bad-ttl", 0, 255)
    else:
        if len(extra) > 1:
            raise _fail(
                f"c= IPv6 address {base} carries a TTL; IPv6 uses <address>/<number of "
                "addresses> only (RFC 8866 section 5.7)",
                line,
                "bad-ttl",
            )
        if extra:
            if not base.is_multicast:
                raise _fail(f"c= unicast address {base} cannot have a number of addresses", line, "bad-count")
            count = _decimal(extra[0], "c= number of addresses", line, "bad-count", 1, MAX_ADDRESS_COUNT)
    if count > 1:
        last = int(base) + count - 1
        network = _V4_MULTICAST if base.version == 4 else _V6_MULTICAST
        if last > int(network.broadcast_address):
            raise _fail(f"c= {count} addresses from {base} run past the end of {network}", line, "bad-count")
    return Connection(nettype, addrtype, base, ttl, count, line)


# RFC 8866 §5.14: m=<media> <port>/<number of ports> <proto> <fmt> ...
def _parse_media_line(value: str, line: int) -> _Level:
    parts = _fields(value)
    if len(parts) < 3:
        raise _fail(f"m= {value!r} is not '<media> <port> <proto> <fmt> ...'", line, "bad-media")
    port_text, _, count_text = parts[1].partition("/")
    port = _decimal(port_text, "m= port", line, "bad-media", 0, 65535)
    port_count = 1
    if count_text or parts[1].endswith("/"):
        port_count = _decimal(count_text, "m= number of ports", line, "bad-media", 1, 65536)
    return _Level(media_line=(parts[0], port, port_count, parts[2], tuple(parts[3:]), line))


# RFC 8866 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
def _parse_origin(value: str, line: int) -> Origin:
    parts = _fields(value)
    if len(parts) != 6:
        raise _fail(
            f"o= {value!r} is not '<username> <sess-id> <sess-version> <nettype> "
            "<addrtype> <unicast-address>'",
            line,
            "bad-origin",
        )
    username, sess_id, version_text, nettype, addrtype, address = parts
    if not _LONG_DECIMAL.fullmatch(version_text):
        raise _fail(f"o= session version {version_text!r} is not a decimal number", line, "bad-origin")
    return Origin(username, sess_id, int(version_text), nettype, addrtype, address, line)


# RFC 8866 §5.9: t=<start-time> <stop-time>
def _parse_timing(value: str, line: int) -> Timing:
    parts = _fields(value)
    if len(parts) != 2:
        raise _fail(f"t= {value!r} is not '<start-time> <stop-time>'", line, "bad-time")
    start = _decimal(parts[0], "t= start time", line, "bad-time", 0, None)
    stop = _decimal(parts[1], "t= stop time", line, "bad-time", 0, None)
    return Timing(start, stop, (), line)


# RFC 4570 §3 and appendix A:
#   a=source-filter: <filter-mode> <nettype> <address-types> <dest-address> <src-list>
#   filter-mode = "excl" / "incl"; address-types = "*" / addrtype;
#   dest-address = "*" / basic-multicast-address / unicast-address
#   src-list = *(unicast-address SP) unicast-address
# §3.1: "When the <dest-address> value is a multicast address, the field value
# MUST NOT include the sub-fields <ttl> and <number of addresses>"; "When the
# <addrtype> value is the "*" wildcard, the <dest-address> MUST be either an
# FQDN or "*"" (and the ABNF says the sources must be FQDNs too).
def _parse_source_filter(value: str, line: int) -> SourceFilter:
    parts = _fields(value)
    if len(parts) < 5:
        raise _fail(
            f"source-filter {value.strip()!r} is not '<incl|excl> <nettype> <address-types> "
            "<dest-address> <src-list>'",
            line,
            "bad-source-filter",
        )
    mode = parts[0].lower()
    if mode not in ("incl", "excl"):
        raise _fail(f"source-filter mode {parts[0]!r} is not incl or excl", line, "bad-source-filter")
    nettype, addrtype = _net_and_addrtype(parts[1], parts[2], line, "source-filter", star=True)
    family = None if addrtype == "*" else addrtype
    dest_text = parts[3]
    if "/" in dest_text:
        raise _fail(
            f"source-filter destination {dest_text!r} must not carry a TTL or number of "
            "addresses (RFC 4570 section 3.1)",
            line,
            "bad-source-filter",
        )
    dest: Host = (
        "*" if dest_text == "*" else _parse_host(dest_text, family, line, "source-filter destination")
    )
    if addrtype == "*" and not isinstance(dest, str):
        raise _fail(
            "source-filter with address type * needs an FQDN or * as destination (RFC 4570 section 3.1)",
            line,
            "bad-source-filter",
        )
    sources: list[Host] = []
    for text in parts[4:]:
        src = _parse_host(text, family, line, "source-filter source")
        if isinstance(src, str):
            pass
        elif addrtype == "*":
            raise _fail(
                f"source-filter with address type * lists the IP address {src}; only names "
                "may be used with * (RFC 4570 appendix A)",
                line,
                "bad-source-filter",
            )
        elif src.is_multicast or src.is_unspecified:
            raise _fail(f"source-filter source {src} is not a unicast address", line, "bad-source-filter")
        sources.append(src)
    return SourceFilter(mode, nettype, addrtype, dest, tuple(sources), line)


def _attribute(value: str, line: int) -> tuple[str, str | None, SourceFilter | None]:
    if value.startswith(("source-filter ", "source-filter\t")):
        # RFC 4570 §3.2.5 prints "a=source-filter incl IN IP6 ..." (no colon).
        rest = value[len("source-filter") :]
        return "source-filter", rest, _parse_source_filter(rest, line)
    name, colon, rest = value.partition(":")
    attr_value: str | None = rest if colon else None
    if name == "source-filter":
        return name, attr_value, _parse_source_filter(attr_value or "", line)
    return name, attr_value, None


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 8866 §5.13 a=charset; old sdr announcements used ISO-8859-1.
        return raw.decode("latin-1")


class _Level:
    """Lines collected for the session level or for one media, while parsing."""

    def __init__(self, media_line: tuple[str, int, int, str, tuple[str, ...], int] | None = None) -> None:
        self.media_line = media_line
        self.connections: list[Connection] = []
        self.bandwidths: list[str] = []
        self.attributes: list[Attribute] = []
        self.source_filters: list[SourceFilter] = []
        self.unknown: list[tuple[str, str]] = []
        self.info: str | None = None
        self.key: str | None = None

    def freeze_media(self) -> Media:
        assert self.media_line is not None
        media, port, port_count, proto, formats, line = self.media_line
        return Media(
            media=media,
            port=port,
            port_count=port_count,
            proto=proto,
            formats=formats,
            title=self.info,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
            source_filters=tuple(self.source_filters),
            unknown=tuple(self.unknown),
            line=line,
        )


class _Parse:
    """The state of one parse: the session level, the media so far, the one-off lines."""

    def __init__(self, allow_missing_ttl: bool) -> None:
        self.allow_missing_ttl = allow_missing_ttl
        self.session = _Level()
        self.media: list[_Level] = []
        self.origin: Origin | None = None
        self.name: str | None = None
        self.uri: str | None = None
        self.emails: list[str] = []
        self.phones: list[str] = []
        self.timings: list[Timing] = []
        self.timezones: str | None = None

    def freeze(self) -> SessionDescription:
        if self.origin is None:
            raise _fail("session description has no o= line", None, "no-origin")
        s = self.session
        return SessionDescription(
            origin=self.origin,
            name=self.name or "",
            info=s.info,
            uri=self.uri,
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            connections=tuple(s.connections),
            bandwidths=tuple(s.bandwidths),
            timings=tuple(self.timings),
            timezones=self.timezones,
            key=s.key,
            attributes=tuple(s.attributes),
            source_filters=tuple(s.source_filters),
            media=tuple(m.freeze_media() for m in self.media),
            unknown=tuple(s.unknown),
        )


# One handler per line type: (parse state, level the line belongs to, value,
# line number). RFC 8866 §5 gives the order; we accept any order and send the
# session-only types (_SESSION_ONLY) to the session level wherever they are.


def _on_version(p: _Parse, level: _Level, value: str, line: int) -> None:
    raise _fail("second v= line: one payload holds one session description", line, "duplicate")


def _on_origin(p: _Parse, level: _Level, value: str, line: int) -> None:
    if p.origin is not None:
        raise _fail("second o= line", line, "duplicate")
    p.origin = _parse_origin(value, line)


def _on_name(p: _Parse, level: _Level, value: str, line: int) -> None:
    # RFC 8866 §5.3: "There MUST be one and only one "s=" line".
    if p.name is not None:
        raise _fail("second s= line", line, "duplicate")
    p.name = value


def _on_info(p: _Parse, level: _Level, value: str, line: int) -> None:
    if level.info is None:
        level.info = value


def _on_uri(p: _Parse, level: _Level, value: str, line: int) -> None:
    if p.uri is None:
        p.uri = value


def _on_email(p: _Parse, level: _Level, value: str, line: int) -> None:
    p.emails.append(value)


def _on_phone(p: _Parse, level: _Level, value: str, line: int) -> None:
    p.phones.append(value)


def _on_connection(p: _Parse, level: _Level, value: str, line: int) -> None:
    level.connections.append(_parse_connection(value, line, p.allow_missing_ttl))


def _on_bandwidth(p: _Parse, level: _Level, value: str, line: int) -> None:
    level.bandwidths.append(value)


def _on_time(p: _Parse, level: _Level, value: str, line: int) -> None:
    p.timings.append(_parse_timing(value, line))


def _on_repeat(p: _Parse, level: _Level, value: str, line: int) -> None:
    if not p.timings:
        raise _fail("r= line without a preceding t= line", line, "bad-time")
    last = p.timings[-1]
    p.timings[-1] = Timing(last.start, last.stop, last.repeats + (value,), last.line)


def _on_zone(p: _Parse, level: _Level, value: str, line: int) -> None:
    if p.timezones is None:
        p.timezones = value


def _on_key(p: _Parse, level: _Level, value: str, line: int) -> None:
    if level.key is None:
        level.key = value


def _on_attribute(p: _Parse, level: _Level, value: str, line: int) -> None:
    name, attr_value, source_filter = _attribute(value, line)
    level.attributes.append((name, attr_value))
    if source_filter is not None:
        level.source_filters.append(source_filter)


def _on_media(p: _Parse, level: _Level, value: str, line: int) -> None:
    p.media.append(_parse_media_line(value, line))


_LINE_HANDLERS = {
    "v": _on_version,
    "o": _on_origin,
    "s": _on_name,
    "i": _on_info,
    "u": _on_uri,
    "e": _on_email,
    "p": _on_phone,
    "c": _on_connection,
    "b": _on_bandwidth,
    "t": _on_time,
    "r": _on_repeat,
    "z": _on_zone,
    "k": _on_key,
    "a": _on_attribute,
    "m": _on_media,
}


def _lines(data: bytes | str) -> list[str | bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return list(bytes(data).rstrip(b"\0").split(b"\n"))
    if isinstance(data, str):
        return list(data.rstrip("\0").split("\n"))
    raise SDPUsageError(f"parse_sdp() takes bytes or str, not {type(data).__name__}")


def parse_sdp(data: bytes | str, *, allow_missing_ttl: bool = False) -> SessionDescription:
    """Parse a session description; raise SDPDecodeError (with ``line``) if it is unusable."""
    state = _Parse(allow_missing_ttl)
    seen_version = False
    for lineno, raw in enumerate(_lines(data), 1):
        if isinstance(raw, bytes):
            if b"\0" in raw:
                raise _fail("line contains a NUL byte", lineno, "nul")
            text = _decode_line(raw)
        elif "\0" in raw:
            raise _fail("line contains a NUL byte", lineno, "nul")
        else:
            text = raw
        text = text.strip(" \t\r")
        if not text:
            continue
        if "\r" in text:
            # RFC 8866 §5: CR is allowed only as part of a CRLF line end.
            raise _fail("line contains a CR that does not end it", lineno, "bad-line")
        if len(text) < 2 or text[1] != "=" or not _LINE_TYPE.fullmatch(text[0]):
            raise _fail(f"{text[:40]!r} is not a '<type>=<value>' line", lineno, "bad-line")
        kind, value = text[0], text[2:]
        if not seen_version:
            # RFC 8866 §5.1: the description starts with v=0.
            if kind != "v":
                raise _fail(
                    "a session description must start with v= (RFC 8866 section 5)", lineno, "no-version"
                )
            if value.strip() != "0":
                raise _fail(f"SDP version {value!r} is not 0", lineno, "version")
            seen_version = True
            continue
        level = state.media[-1] if state.media and kind not in _SESSION_ONLY else state.session
        handler = _LINE_HANDLERS.get(kind)
        if handler is None:
            level.unknown.append((kind, value))
        else:
            handler(state, level, value, lineno)
    if not seen_version:
        raise _fail("empty session description", None, "empty")
    desc = state.freeze()
    desc.flows  # noqa: B018 -- apply the RFC 4570 rules now, so errors carry line numbers
    return desc


# RFC 4570 §3.1, the processing rules applied here:
# * "The <dest-address> value in a "source-filter" attribute MUST correspond
#   to an existing <connection-field> value in the session description. The
#   only exception to this is when a "*" wildcard is used".
# * "A media-level source-filter will always completely override a
#   session-level source-filter."
# * "a media-level <source-filter> can reference a session-level
#   <connection-field> value, and a session-level "source-filter" can be
#   applied to all matching media-level <connection-field> values."
# * "An SDP description MUST NOT contain more than one session-level
#   "source-filter" attribute that covers the same destination address, or
#   more than one media-level ..." -- two "incl" (or two "excl") filters for
#   one address are merged, since their meaning is plain; an "incl" and an
#   "excl" for one address contradict each other and are refused.
def _compute_flows(desc: SessionDescription) -> tuple[Flow, ...]:
    every_conn = desc.connections + tuple(c for m in desc.media for c in m.connections)
    for flt in desc.source_filters:
        _check_filter_target(flt, every_conn)
    for medium in desc.media:
        for flt in medium.source_filters:
            _check_filter_target(flt, medium.connections + desc.connections)

    units: list[tuple[int | None, Media | None]] = list(enumerate(desc.media)) or [(None, None)]
    flows: list[Flow] = []
    for index, m in units:
        conns = desc.connections if m is None or not m.connections else m.connections
        filters = m.source_filters if m is not None and m.source_filters else desc.source_filters
        if m is not None and not conns:
            raise _fail(
                f"media {m.media} {m.port} has no c= line and there is no session-level c= "
                "(RFC 8866 section 5.7)",
                m.line,
                "no-connection",
            )
        ttls: dict[IPAddress, tuple[int | None, int]] = {}
        for conn in conns:
            for addr in conn.addresses:
                if addr in ttls:
                    if ttls[addr][0] != conn.ttl:
                        raise _fail(
                            f"c= lines give {addr} two different TTLs ({ttls[addr][0]} and {conn.ttl})",
                            conn.line,
                            "bad-ttl",
                        )
                    continue
                ttls[addr] = (conn.ttl, conn.line)
        for addr, (ttl, _line) in ttls.items():
            covering = [f for f in filters if f.applies_to(addr)]
            modes = {f.mode for f in covering}
            if len(modes) > 1:
                raise _fail(
                    f"both incl and excl source-filters cover {addr} (RFC 4570 section 3.1)",
                    max(f.line for f in covering),
                    "filter-conflict",
                )
            if not addr.is_multicast:
                continue
            if not covering:
                flows.append(Flow(index, addr, ttl, "any"))
                continue
            ips = _unique(ip for f in covering for ip in f.source_ips)
            names = _unique(n for f in covering for n in f.source_names)
            if "incl" in modes:
                flows.append(Flow(index, addr, ttl, "incl", sources=ips, source_names=names))
            else:
                flows.append(Flow(index, addr, ttl, "excl", excluded=ips, excluded_names=names))
    return tuple(flows)


def _check_filter_target(flt: SourceFilter, conns: tuple[Connection, ...]) -> None:
    if flt.dest == "*":
        for conn in conns:
            if isinstance(conn.address, str):
                if flt.addrtype in ("*", conn.addrtype):
                    return
            elif any(flt.applies_to(addr) for addr in conn.addresses):
                return
        raise _fail(
            f"source-filter '*' with address type {flt.addrtype} matches no c= address",
            flt.line,
            "filter-no-target",
        )
    for conn in conns:
        if isinstance(flt.dest, str):
            if conn.address == flt.dest:
                return
        elif flt.dest in conn.addresses:
            return
    raise _fail(
        f"source-filter destination {flt.dest} does not correspond to any c= address (RFC 4570 section 3.1)",
        flt.line,
        "filter-no-target",
    )


_T = TypeVar("_T")


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------
# Deletions and encoding


def parse_origin_line(line: bytes | str) -> Origin:
    """Parse one ``o=`` line (with or without the ``o=`` and line end)."""
    text = _decode_line(line) if isinstance(line, (bytes, bytearray)) else line
    text = text.strip(" \t\r\n\0")
    if text.startswith("o="):
        text = text[2:]
    return _parse_origin(text, 1)


def deletion_origin(payload: bytes | str) -> Origin:
    """The origin a SAP deletion names.

    RFC 2974 §6: "If the payload format is `application/sdp' the deletion
    message is a single SDP line consisting of the origin field of the
    announcement to be deleted." Some announcers send the whole description
    instead; either way only the one ``o=`` line is read, so a deletion is
    honoured even if the rest of the description would not parse.
    """
    text = payload.decode("utf-8", "replace") if isinstance(payload, (bytes, bytearray)) else payload
    found: Origin | None = None
    for lineno, raw in enumerate(text.rstrip("\0").split("\n"), 1):
        line = raw.strip(" \t\r")
        if line.startswith("o="):
            if found is not None:
                raise _fail("deletion names two o= lines", lineno, "duplicate")
            found = _parse_origin(line[2:], lineno)
    if found is None:
        raise _fail("deletion payload has no o= line", None, "no-origin")
    return found


def deletion_payload(origin: Origin) -> bytes:
    """The payload of a SAP deletion for ``origin`` (RFC 2974 §6)."""
    line = origin.to_line()
    _check_text(line, "origin")
    return (line + "\r\n").encode("utf-8")


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise SDPUsageError(f"{what} must be a str")
    if any(ch in value for ch in "\r\n\0"):
        raise SDPUsageError(f"{what} {value!r} contains CR, LF or NUL")


def encode_sdp(desc: SessionDescription) -> bytes:
    """Write ``desc`` in RFC 8866 order with CRLF line ends (UTF-8).

    parse_sdp(encode_sdp(d)) == d for every parsed description. Source
    filters are written from ``attributes``; unknown lines go last in their
    level.
    """
    if not isinstance(desc, SessionDescription):
        raise SDPUsageError(f"encode_sdp() takes a SessionDescription, not {type(desc).__name__}")
    lines = [f"v={desc.version}", desc.origin.to_line(), f"s={desc.name or ' '}"]
    if desc.info is not None:
        lines.append(f"i={desc.info}")
    if desc.uri is not None:
        lines.append(f"u={desc.uri}")
    lines += [f"e={v}" for v in desc.emails]
    lines += [f"p={v}" for v in desc.phones]
    lines += [f"c={c.value()}" for c in desc.connections]
    lines += [f"b={v}" for v in desc.bandwidths]
    for timing in desc.timings:
        lines.append(f"t={timing.start} {timing.stop}")
        lines += [f"r={v}" for v in timing.repeats]
    if desc.timezones is not None:
        lines.append(f"z={desc.timezones}")
    if desc.key is not None:
        lines.append(f"k={desc.key}")
    lines += [_attribute_line(a) for a in desc.attributes]
    lines += [f"{kind}={v}" for kind, v in desc.unknown]
    for m in desc.media:
        port = f"{m.port}/{m.port_count}" if m.port_count != 1 else str(m.port)
        lines.append(" ".join([f"m={m.media}", port, m.proto, *m.formats]))
        if m.title is not None:
            lines.append(f"i={m.title}")
        lines += [f"c={c.value()}" for c in m.connections]
        lines += [f"b={v}" for v in m.bandwidths]
        if m.key is not None:
            lines.append(f"k={m.key}")
        lines += [_attribute_line(a) for a in m.attributes]
        lines += [f"{kind}={v}" for kind, v in m.unknown]
    for line in lines:
        _check_text(line, "line")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _attribute_line(attr: Attribute) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"
