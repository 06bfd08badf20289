"""Protocol version 2: authenticated call/response with sessions (docs/protocol.md).

Strategy: sans-IO like h11. `encode_*` turn frozen dataclasses into bytes,
`decode_*` turn bytes into dataclasses or raise a `RemoteProtocolError`
carrying the reply code. Every check on the bytes lives here, including the
HMAC, so the server and the fuzz tests exercise the same code. Requests are
opened in two steps so that the server can run its replay window on an
*authenticated* header before it looks at the body:

    open_request(datagram, keys) -> Envelope      framing + key + HMAC (RFC 2104)
    parse_request(envelope)      -> Request       command and body
    decode_request(datagram, keys) = both

Request (all integers big-endian; body_len bytes of body; tag = 32 bytes):

     0       3    4    5    6    7    8       10      12              20              28              36
    +-------+----+----+----+----+----+-------+-------+---------------+---------------+---------------+------+-----+
    | "MAU" |0x02|kind|cmd |stat|rsvd|key_id |body_ln|     epoch     |    session    |      seq      | body | tag |
    +-------+----+----+----+----+----+-------+-------+---------------+---------------+---------------+------+-----+
      kind 0x01 = request; stat and rsvd are 0

Response: the same 36 bytes (kind 0x02, stat = reply code, epoch = the
server's epoch, session/seq echoed), then `in_reply_to` (16 bytes: the first
16 bytes of the request's tag), then the body and the tag. A response with
key_id 0 is an unauthenticated error notice and has no tag.

    tag = HMAC-SHA256(secret[key_id], every byte before the tag)

A v2 message is never 11 bytes long (a request is at least 68, a response at
least 53), so it cannot be taken for a v1 request (11) or response (2).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from mauthcore.protocol.errors import (
    BadAuth,
    InvalidArgument,
    LocalProtocolError,
    Malformed,
    NotV2,
    RemoteProtocolError,
    ReplyCode,
    UnknownCommand,
    UnknownKey,
)
from mauthcore.protocol.keys import KeyRing
from mauthcore.protocol.model import (
    RECV_COUNTERS,
    Counters,
    DeniedEntry,
    DeniedJoinEntry,
    IfaceReceiversEntry,
    JoinedEntry,
    Mode,
    Reason,
    ReasonCounter,
    ReceiverEntry,
    RuleEntry,
)
from mauthcore.receivers import MAX_RECEIVER_CURSOR, IfacePolicy, ReceiverMode, ReceiverRule
from mauthcore.rules import MAX_CURSOR_SIZE, Binding, Endpoint, IPAddress, Rule, RuleError, RuleKey

MAGIC = b"MAU"
VERSION = 2
KIND_REQUEST = 0x01
KIND_RESPONSE = 0x02

TAG_SIZE = 32
IN_REPLY_TO_SIZE = 16
MAX_DATAGRAM = 1400  # no message this codec produces is longer
# A listing cursor: musersd issues a RuleKey.cursor (11 bytes IPv4, 35 IPv6);
# 48 leaves room for a longer format while LIST and DENIED pages stay 17 and 21 entries.
MAX_CURSOR = 48
MAX_MESSAGE = 255  # error text, bytes of UTF-8
MAX_BACKEND_NAME = 64
U64 = (1 << 64) - 1

_REQ_HEADER = struct.Struct("!3sBBBBBHHQQQ")
_RESP_HEADER = struct.Struct("!3sBBBBBHHQQQ16s")
REQUEST_HEADER_SIZE = _REQ_HEADER.size  # 36
RESPONSE_HEADER_SIZE = _RESP_HEADER.size  # 52
MIN_REQUEST_SIZE = REQUEST_HEADER_SIZE + TAG_SIZE  # 68
MIN_RESPONSE_SIZE = RESPONSE_HEADER_SIZE + 1  # 53: unauthenticated error, empty message
STATUS_OFFSET = 6  # where the status byte sits in a response


class Command(enum.IntEnum):
    HELLO = 0x01
    ADD = 0x02
    REPLACE = 0x03
    REMOVE = 0x04
    LIST = 0x05
    DENIED = 0x06
    COUNTERS = 0x07
    FLUSH = 0x08
    MODE = 0x09
    REARM = 0x0A
    RECV_ADD = 0x0B
    RECV_REMOVE = 0x0C
    RECV_LIST = 0x0D
    RECV_DENIED = 0x0E
    RECV_JOINED = 0x0F
    RECV_POLICY = 0x10

    def __str__(self) -> str:
        return self.name.lower()


# =============================================================================
# Messages
# =============================================================================

# --- request bodies -----------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    command = Command.HELLO


@dataclass(frozen=True)
class Add:
    """Insert a rule; EXISTS if its (source, group) already has one."""

    rule: Rule
    command = Command.ADD


@dataclass(frozen=True)
class Replace:
    """Insert or overwrite a rule."""

    rule: Rule
    command = Command.REPLACE


@dataclass(frozen=True)
class Remove:
    key: RuleKey
    command = Command.REMOVE


@dataclass(frozen=True)
class ListRules:
    """One page of rules: at most `max_count` (0 = as many as fit), after `cursor`."""

    max_count: int = 0
    cursor: bytes = b""
    command = Command.LIST


@dataclass(frozen=True)
class ListDenied:
    max_count: int = 0
    cursor: bytes = b""
    command = Command.DENIED


@dataclass(frozen=True)
class GetCounters:
    command = Command.COUNTERS


@dataclass(frozen=True)
class Flush:
    command = Command.FLUSH


@dataclass(frozen=True)
class ModeRequest:
    """Get the mode (`mode` None) or set it."""

    mode: Mode | None = None
    command = Command.MODE


@dataclass(frozen=True)
class Rearm:
    """Forget the (interface, MAC) a learning rule pinned, so that its next packet pins again."""

    key: RuleKey
    command = Command.REARM


@dataclass(frozen=True)
class RecvAdd:
    """Insert a receiver rule; EXISTS if it is held."""

    rule: ReceiverRule
    command = Command.RECV_ADD


@dataclass(frozen=True)
class RecvRemove:
    """Delete a receiver rule (a rule is its own key); NOT_FOUND if it is not held."""

    rule: ReceiverRule
    command = Command.RECV_REMOVE


@dataclass(frozen=True)
class RecvList:
    """One page of receiver rules: at most `max_count` (0 = as many as fit), after `cursor`."""

    max_count: int = 0
    cursor: bytes = b""
    command = Command.RECV_LIST


@dataclass(frozen=True)
class RecvDenied:
    """One page of refused joins."""

    max_count: int = 0
    cursor: bytes = b""
    command = Command.RECV_DENIED


@dataclass(frozen=True)
class RecvJoined:
    """One page of joined groups."""

    max_count: int = 0
    cursor: bytes = b""
    command = Command.RECV_JOINED


@dataclass(frozen=True)
class RecvPolicy:
    """Get every guarded interface's receiver policy (`policy` None), or set one interface's first."""

    policy: IfacePolicy | None = None
    command = Command.RECV_POLICY


RequestBody = (Hello | Add | Replace | Remove | ListRules | ListDenied | GetCounters | Flush | ModeRequest | Rearm
               | RecvAdd | RecvRemove | RecvList | RecvDenied | RecvJoined | RecvPolicy)
RecvPageRequest = RecvList | RecvDenied | RecvJoined


# --- response bodies ----------------------------------------------------------


@dataclass(frozen=True)
class HelloReply:
    session: int
    state_id: int
    rule_count: int
    mode: Mode
    backend: str


@dataclass(frozen=True)
class Done:
    """The empty body of a successful ADD or REMOVE."""


@dataclass(frozen=True)
class Replaced:
    created: bool


@dataclass(frozen=True)
class RulesPage:
    entries: tuple[RuleEntry, ...]
    cursor: bytes = b""  # empty: last page


@dataclass(frozen=True)
class DeniedPage:
    entries: tuple[DeniedEntry, ...]
    cursor: bytes = b""


@dataclass(frozen=True)
class Flushed:
    removed: int


@dataclass(frozen=True)
class ModeReply:
    mode: Mode


@dataclass(frozen=True)
class ErrorReply:
    """The body of every response whose status is not OK."""

    message: str = ""


@dataclass(frozen=True)
class ReceiversPage:
    entries: tuple[ReceiverEntry, ...]
    cursor: bytes = b""


@dataclass(frozen=True)
class DeniedJoinsPage:
    entries: tuple[DeniedJoinEntry, ...]
    cursor: bytes = b""


@dataclass(frozen=True)
class JoinedPage:
    entries: tuple[JoinedEntry, ...]
    cursor: bytes = b""


@dataclass(frozen=True)
class PolicyReply:
    """Every guarded interface's receiver policy, groups and counters (after a set, as set)."""

    interfaces: tuple[IfaceReceiversEntry, ...]


ResponseBody = (HelloReply | Done | Replaced | RulesPage | DeniedPage | Counters | Flushed | ModeReply | ErrorReply
                | ReceiversPage | DeniedJoinsPage | JoinedPage | PolicyReply)


# --- envelopes ----------------------------------------------------------------


@dataclass(frozen=True)
class RequestHeader:
    """The fixed fields of a request. Trust them only if `authenticated`."""

    command: int
    key_id: int
    epoch: int
    session: int
    seq: int
    tag: bytes = field(repr=False, default=b"")
    authenticated: bool = False

    @property
    def in_reply_to(self) -> bytes:
        return self.tag[:IN_REPLY_TO_SIZE]


@dataclass(frozen=True)
class Envelope:
    """An authenticated request whose body has not been parsed yet."""

    header: RequestHeader
    body: bytes


@dataclass(frozen=True)
class Request:
    body: RequestBody
    key_id: int
    epoch: int = 0
    session: int = 0
    seq: int = 0

    @property
    def command(self) -> Command:
        return self.body.command


@dataclass(frozen=True)
class Response:
    command: int  # a Command, or the raw byte echoed in an unauthenticated notice
    status: int  # a ReplyCode, or a code this implementation does not know
    body: ResponseBody
    key_id: int  # 0: unauthenticated notice (no tag; never trust it)
    epoch: int = 0
    session: int = 0
    seq: int = 0
    in_reply_to: bytes = bytes(IN_REPLY_TO_SIZE)

    @property
    def ok(self) -> bool:
        return self.status == ReplyCode.OK

    @property
    def authenticated(self) -> bool:
        return self.key_id != 0


# =============================================================================
# Primitives
# =============================================================================


def mac(secret: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104, FIPS 198-1) of `data` under `secret`."""
    return hmac.new(secret, data, hashlib.sha256).digest()


class _Reader:
    """Consumes a body; every shortfall is a Malformed naming what was being read."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise Malformed(f"body ends inside {what}")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, st: struct.Struct, what: str) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size, what))

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def end(self, what: str) -> None:
        extra = len(self.data) - self.pos
        if extra:
            raise Malformed(f"{extra} unexpected bytes after {what}")


def _check_int(value: object, bits: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{what} {value!r} does not fit in {bits} bits")


_ADDRESS_SIZE = {4: 4, 6: 16}
_ADDRESS_TYPE: dict[int, Callable[[bytes], IPAddress]] = {
    4: ipaddress.IPv4Address,
    6: ipaddress.IPv6Address,
}


def _address_size(family: int) -> int:
    try:
        return _ADDRESS_SIZE[family]
    except KeyError:
        raise Malformed(f"address family {family} is neither 4 nor 6") from None


def _family_of(*addresses: IPAddress) -> int:
    family = addresses[0].version
    if any(a.version != family for a in addresses):
        raise LocalProtocolError("addresses of different families in one record")
    return family


def _encode_text(text: str, limit: int, what: str) -> bytes:
    raw = text.encode("utf-8", "replace")
    if len(raw) > limit:
        raw = raw[:limit].decode("utf-8", "ignore").encode("utf-8")  # cut on a character boundary
    return bytes([len(raw)]) + raw


def _read_text(r: _Reader, what: str) -> str:
    return r.take(r.u8(f"{what} length"), what).decode("utf-8", "replace")


# =============================================================================
# Rules and keys on the wire
# =============================================================================
#
#  rule:  0 family  1 src_plen  2 grp_plen  3 max_ttl  4 pps(u32)  8 bps(u64)  16 source  16+w group
#  key:   0 family  1 src_plen  2 grp_plen  3 reserved(0)                       4 source    4+w group
#  (w = 4 for family 4, 16 for family 6)

_RULE_FIXED = struct.Struct("!BBBBIQ")  # 16
_KEY_FIXED = struct.Struct("!BBBB")  # 4
#  binding (after a rule whose family byte has BOUND set):
#         0 flags  1 iface_len  2 mac(6)  8 iface
#  binding state (after a bound rule entry's counters):
#         0 moved(u64)  8 learned(0/1)  9 iface_len  10 mac(6)  16 iface
BOUND = 0x80  # in a rule's family byte: a binding follows the addresses
_BINDING_FIXED = struct.Struct("!BB6s")  # 8
_BINDING_STATE_FIXED = struct.Struct("!QBB6s")  # 16
BIND_IFACE, BIND_RPF, BIND_MAC, BIND_LEARN = 0x01, 0x02, 0x04, 0x08
_BIND_ALL = BIND_IFACE | BIND_RPF | BIND_MAC | BIND_LEARN
DENIED_WHERE = 0x01  # a denied entry's flags (once its reserved byte): where the binding's last drop came from
MAX_BINDING_IFACE = 255  # one interface name toward a router (15 bytes); router=name pairs toward mauthserver


def _endpoints(family: int, src: IPAddress, grp: IPAddress, src_plen: int,
               grp_plen: int) -> tuple[Endpoint, Endpoint]:
    """The source and group as rule sides: an address for a full-length prefix, else a network.

    INVALID_ARGUMENT for a length beyond the address or bits set beyond it;
    what a rule of either family may be is up to Rule.make().
    """
    return _side("source", src, src_plen), _side("group", grp, grp_plen)


def _side(what: str, address: IPAddress, plen: int) -> Endpoint:
    """`address`/`plen` as a rule side: the address for a full-length prefix, else the network; INVALID_ARGUMENT
    for a length beyond the address or bits set beyond it."""
    bits = address.max_prefixlen
    if plen > bits:
        raise InvalidArgument(f"{what} prefix length {plen} exceeds {bits}")
    try:
        net = ipaddress.ip_network((address, plen), strict=True)
    except ValueError:
        raise InvalidArgument(f"{what} {address}/{plen} has bits set beyond the prefix length") from None
    return address if plen == bits else net


def _read_addresses(r: _Reader, family: int, what: str) -> tuple[IPAddress, IPAddress]:
    size = _address_size(family)
    make = _ADDRESS_TYPE[family]
    return make(r.take(size, f"{what} source")), make(r.take(size, f"{what} group"))


def _read_rule(r: _Reader) -> Rule:
    family, src_plen, grp_plen, max_ttl, pps, bps = r.unpack(_RULE_FIXED, "rule")
    bound = bool(family & BOUND)
    family &= ~BOUND
    src, grp = _read_addresses(r, family, "rule")
    binding = _read_binding(r) if bound else None
    source, group = _endpoints(family, src, grp, src_plen, grp_plen)
    try:
        return Rule.make(source, group, max_ttl, pps=pps, bps=bps, binding=binding)
    except RuleError as err:
        raise InvalidArgument(str(err)) from None


def _read_binding(r: _Reader) -> Binding:
    flags, iface_len, mac_bytes = r.unpack(_BINDING_FIXED, "binding")
    iface = r.take(iface_len, "binding interface")
    if not flags or flags & ~_BIND_ALL:
        raise Malformed(f"binding flags 0x{flags:02x} are not a non-empty set of 01 iface, 02 rpf, 04 mac, 08 learn")
    if bool(flags & BIND_IFACE) != bool(iface_len):
        raise Malformed("a binding's interface name is given exactly when its iface flag is set")
    if not flags & BIND_MAC and mac_bytes != bytes(6):
        raise Malformed("a binding's MAC bytes are zero unless its mac flag is set")
    try:
        name = iface.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("the binding's interface name is not UTF-8") from None
    try:
        return Binding.make(name or None, rpf=bool(flags & BIND_RPF),
                            mac=mac_bytes if flags & BIND_MAC else None, learn=bool(flags & BIND_LEARN))
    except RuleError as err:
        raise InvalidArgument(str(err)) from None


def _binding_flags(b: Binding) -> int:
    return ((BIND_IFACE if b.iface else 0) | (BIND_RPF if b.rpf else 0) | (BIND_MAC if b.mac else 0)
            | (BIND_LEARN if b.learn else 0))


def _write_binding(b: Binding) -> bytes:
    name = _encode_text(b.iface, MAX_BINDING_IFACE, "binding interface")
    return _BINDING_FIXED.pack(_binding_flags(b), len(name) - 1, b.mac or bytes(6)) + name[1:]


def _write_rule(rule: Rule) -> bytes:
    key = rule.key
    family = _family_of(key.source_address, key.group_address)
    _check_int(rule.max_ttl, 8, "max_ttl")
    _check_int(rule.pps, 32, "pps")
    _check_int(rule.bps, 64, "bps")
    out = (_RULE_FIXED.pack(family | (BOUND if rule.bound else 0), key.source_len, key.group_len, rule.max_ttl,
                            rule.pps, rule.bps)
           + key.source_address.packed + key.group_address.packed)
    return out + _write_binding(rule.binding) if rule.bound else out


def _read_key(r: _Reader) -> RuleKey:
    family, src_plen, grp_plen, reserved = r.unpack(_KEY_FIXED, "rule key")
    src, grp = _read_addresses(r, family, "rule key")
    if reserved:
        raise Malformed("reserved byte of a rule key is not zero")
    source, group = _endpoints(family, src, grp, src_plen, grp_plen)
    try:
        return RuleKey.make(source, group)
    except RuleError as err:
        raise InvalidArgument(str(err)) from None


def _write_key(key: RuleKey) -> bytes:
    family = _family_of(key.source_address, key.group_address)
    return (_KEY_FIXED.pack(family, key.source_len, key.group_len, 0)
            + key.source_address.packed + key.group_address.packed)


# =============================================================================
# Request bodies
# =============================================================================

_PAGE_REQ = struct.Struct("!HB")  # max_count, cursor_len


def _read_cursor(r: _Reader, length: int, most: int = MAX_CURSOR) -> bytes:
    if length > most:
        raise Malformed(f"cursor length {length} exceeds {most}")
    return r.take(length, "cursor")


def _write_cursor(cursor: bytes, most: int = MAX_CURSOR) -> bytes:
    if len(cursor) > most:
        raise LocalProtocolError(f"cursor of {len(cursor)} bytes exceeds {most}")
    return bytes(cursor)


def _cursor_limit(command: Command) -> int:
    """The longest cursor a listing command carries: MAX_RECEIVER_CURSOR for the receiver listings."""
    return MAX_RECEIVER_CURSOR if command in _RECV_LISTINGS else MAX_CURSOR


# A body's encoder and decoder; the tables below pair them with the body's class.
_Encoder = Callable[[Any], bytes]
_Decoder = Callable[[_Reader], Any]


def _dec_empty(cls: type[Any]) -> _Decoder:
    def decode(r: _Reader) -> Any:
        r.end(f"{cls.command} request")
        return cls()
    return decode


def _enc_empty(body: object) -> bytes:
    return b""


def _enc_page_req(body: ListRules | ListDenied | RecvPageRequest) -> bytes:
    _check_int(body.max_count, 16, "max_count")
    cursor = _write_cursor(body.cursor, _cursor_limit(body.command))
    return _PAGE_REQ.pack(body.max_count, len(cursor)) + cursor


def _dec_page_req(cls: type[Any]) -> _Decoder:
    def decode(r: _Reader) -> Any:
        max_count, cursor_len = r.unpack(_PAGE_REQ, "page request")
        cursor = _read_cursor(r, cursor_len, _cursor_limit(cls.command))
        r.end(f"{cls.command} request")
        return cls(max_count, cursor)
    return decode


def _dec_rule_body(cls: type[Any]) -> _Decoder:
    def decode(r: _Reader) -> Any:
        rule = _read_rule(r)
        r.end("rule")
        return cls(rule)
    return decode


def _dec_remove(r: _Reader) -> Remove:
    key = _read_key(r)
    r.end("rule key")
    return Remove(key)


_MODE_GET = 0


def _dec_rearm(r: _Reader) -> Rearm:
    key = _read_key(r)
    r.end("rearm request")
    return Rearm(key)


def _enc_mode_req(body: ModeRequest) -> bytes:
    return bytes([_MODE_GET if body.mode is None else Mode(body.mode)])


def _dec_mode_req(r: _Reader) -> ModeRequest:
    value = r.u8("mode")
    r.end("mode")
    if value == _MODE_GET:
        return ModeRequest(None)
    try:
        return ModeRequest(Mode(value))
    except ValueError:
        raise InvalidArgument(f"mode {value} is neither 1 (enforce) nor 2 (monitor)") from None


# -----------------------------------------------------------------------------
# Receiver rules and interface policies
#
#  receiver record: 0 family  1 flags(01 source)  2 rcv_len  3 grp_len  4 iface_len(0 any)
#                   5 receiver(w)  5+w group(w)  [5+2w source(w)]  iface
#  policy request:  0 op(0 get, 1 set)  [1 mode(1 open, 2 closed, 3 monitor)  2 limit(u16)  4 iface_len  5 iface]

_RECV_FIXED = struct.Struct("!BBBBB")  # 5
RECV_SOURCE = 0x01  # a receiver record's, and a denied-join entry's, flags: a source address follows
JOINED_LEFT = 0x01  # a joined entry's flags: the group was left after its last report
_POLICY_GET, _POLICY_SET = 0, 1
_POLICY_SET_FIXED = struct.Struct("!BHB")  # mode, limit, iface_len
_RECV_LISTINGS = frozenset({Command.RECV_LIST, Command.RECV_DENIED, Command.RECV_JOINED})


def _name(raw: bytes, what: str) -> str:
    """An interface name sent to us: INVALID_ARGUMENT unless it is UTF-8 (what makes a name is the rules')."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"the {what} name is not UTF-8") from None


def _take_receiver(r: _Reader) -> tuple[int, int, IPAddress, IPAddress, IPAddress | None, bytes]:
    """A receiver record's fields, checked for framing only (MALFORMED): lengths, family, flags."""
    family, flags, rcv_len, grp_len, iface_len = r.unpack(_RECV_FIXED, "receiver record")
    size = _address_size(family)
    if flags & ~RECV_SOURCE:
        raise Malformed(f"receiver record flags 0x{flags:02x} are not 00 or 01 (source)")
    make = _ADDRESS_TYPE[family]
    receiver = make(r.take(size, "receiver address"))
    group = make(r.take(size, "receiver group"))
    source = make(r.take(size, "receiver source")) if flags & RECV_SOURCE else None
    iface = r.take(iface_len, "receiver interface")
    return rcv_len, grp_len, receiver, group, source, iface


def _make_receiver(fields: tuple[int, int, IPAddress, IPAddress, IPAddress | None, bytes]) -> ReceiverRule:
    """The rule of a receiver record's fields; INVALID_ARGUMENT for what no rule may be."""
    rcv_len, grp_len, receiver, group, source, iface = fields
    rcv = _side("receiver", receiver, rcv_len)
    grp = _side("group", group, grp_len)
    try:
        return ReceiverRule.make(rcv, grp, source, _name(iface, "receiver interface") or None)
    except RuleError as err:
        raise InvalidArgument(str(err)) from None


def _read_receiver(r: _Reader) -> ReceiverRule:
    return _make_receiver(_take_receiver(r))


def _write_receiver(rule: ReceiverRule) -> bytes:
    src = rule.source.packed if rule.source is not None else b""
    iface = rule.iface.encode()
    if len(iface) > 255:
        raise LocalProtocolError(f"interface name {rule.iface!r} is too long")
    return (_RECV_FIXED.pack(rule.family, RECV_SOURCE if src else 0, rule.receiver.prefixlen, rule.group.prefixlen,
                             len(iface))
            + rule.receiver.network_address.packed + rule.group.network_address.packed + src + iface)


def _dec_receiver_body(cls: type[Any]) -> _Decoder:
    def decode(r: _Reader) -> Any:
        fields = _take_receiver(r)
        r.end("receiver record")
        return cls(_make_receiver(fields))
    return decode


def _enc_policy_req(body: RecvPolicy) -> bytes:
    p = body.policy
    if p is None:
        return bytes([_POLICY_GET])
    _check_int(p.limit, 16, "limit")
    name = p.iface.encode()
    return bytes([_POLICY_SET]) + _POLICY_SET_FIXED.pack(ReceiverMode(p.mode), p.limit, len(name)) + name


def _dec_policy_req(r: _Reader) -> RecvPolicy:
    op = r.u8("policy operation")
    if op == _POLICY_GET:
        r.end("policy request")
        return RecvPolicy(None)
    if op != _POLICY_SET:
        raise Malformed(f"policy operation {op} is neither 0 (get) nor 1 (set)")
    mode, limit, iface_len = r.unpack(_POLICY_SET_FIXED, "policy")
    iface = r.take(iface_len, "policy interface")
    r.end("policy request")
    if mode not in ReceiverMode._value2member_map_:
        raise InvalidArgument(f"receiver mode {mode} is not 1 (open), 2 (closed) or 3 (monitor)")
    try:
        return RecvPolicy(IfacePolicy.make(_name(iface, "policy interface"), ReceiverMode(mode), limit))
    except RuleError as err:
        raise InvalidArgument(str(err)) from None


# command -> (body class, encoder, decoder)
_REQUEST_CODEC: dict[int, tuple[type[Any], _Encoder, _Decoder]] = {
    Command.HELLO: (Hello, _enc_empty, _dec_empty(Hello)),
    Command.ADD: (Add, lambda b: _write_rule(b.rule), _dec_rule_body(Add)),
    Command.REPLACE: (Replace, lambda b: _write_rule(b.rule), _dec_rule_body(Replace)),
    Command.REMOVE: (Remove, lambda b: _write_key(b.key), _dec_remove),
    Command.LIST: (ListRules, _enc_page_req, _dec_page_req(ListRules)),
    Command.DENIED: (ListDenied, _enc_page_req, _dec_page_req(ListDenied)),
    Command.COUNTERS: (GetCounters, _enc_empty, _dec_empty(GetCounters)),
    Command.FLUSH: (Flush, _enc_empty, _dec_empty(Flush)),
    Command.MODE: (ModeRequest, _enc_mode_req, _dec_mode_req),
    Command.REARM: (Rearm, lambda b: _write_key(b.key), _dec_rearm),
    Command.RECV_ADD: (RecvAdd, lambda b: _write_receiver(b.rule), _dec_receiver_body(RecvAdd)),
    Command.RECV_REMOVE: (RecvRemove, lambda b: _write_receiver(b.rule), _dec_receiver_body(RecvRemove)),
    Command.RECV_LIST: (RecvList, _enc_page_req, _dec_page_req(RecvList)),
    Command.RECV_DENIED: (RecvDenied, _enc_page_req, _dec_page_req(RecvDenied)),
    Command.RECV_JOINED: (RecvJoined, _enc_page_req, _dec_page_req(RecvJoined)),
    Command.RECV_POLICY: (RecvPolicy, _enc_policy_req, _dec_policy_req),
}


# =============================================================================
# Response bodies
# =============================================================================

_HELLO_FIXED = struct.Struct("!QQIB")  # session, state_id, rule_count, mode
_ENTRY_COUNTERS = struct.Struct("!QQQ")  # packets, octets, last_seen
_DENIED_FIXED = struct.Struct("!BBBBQQQ")  # family, reason, last_ttl, reserved, packets, octets, last_seen
_PAGE_RESP = struct.Struct("!HB")  # count, cursor_len
_COUNTERS_FIXED = struct.Struct("!IB")  # rule_count, mode
_REASON = struct.Struct("!BQQ")  # reason, packets, octets
_E = TypeVar("_E", bound=enum.Enum)


def _read_enum(enum_type: type[_E], value: int, what: str) -> _E:
    try:
        return enum_type(value)
    except ValueError:
        raise Malformed(f"unknown {what} {value}") from None


def _enc_name(name: str) -> bytes:
    raw = name.encode("utf-8", "replace")
    if len(raw) > MAX_BACKEND_NAME:
        raise LocalProtocolError(f"backend name {name!r} is longer than {MAX_BACKEND_NAME} bytes")
    return bytes([len(raw)]) + raw


def _enc_hello(b: HelloReply) -> bytes:
    _check_int(b.session, 64, "session")
    _check_int(b.state_id, 64, "state_id")
    _check_int(b.rule_count, 32, "rule_count")
    return _HELLO_FIXED.pack(b.session, b.state_id, b.rule_count, Mode(b.mode)) + _enc_name(b.backend)


def _dec_hello(r: _Reader) -> HelloReply:
    session, state_id, rule_count, mode = r.unpack(_HELLO_FIXED, "hello reply")
    name = _read_text(r, "backend name")
    r.end("hello reply")
    return HelloReply(session, state_id, rule_count, _read_enum(Mode, mode, "mode"), name)


def _dec_done(r: _Reader) -> Done:
    r.end("empty reply")
    return Done()


def _enc_replaced(b: Replaced) -> bytes:
    return bytes([1 if b.created else 0])


def _dec_replaced(r: _Reader) -> Replaced:
    value = r.u8("created flag")
    r.end("replace reply")
    if value > 1:
        raise Malformed(f"created flag {value} is neither 0 nor 1")
    return Replaced(bool(value))


def _enc_rule_entry(e: RuleEntry) -> bytes:
    for what in ("packets", "octets", "last_seen", "moved"):
        _check_int(getattr(e, what), 64, what)
    out = _write_rule(e.rule) + _ENTRY_COUNTERS.pack(e.packets, e.octets, e.last_seen)
    if not e.rule.bound:
        return out
    iface, mac_bytes = e.learned or ("", bytes(6))
    name = _encode_text(iface, MAX_BINDING_IFACE, "learned interface")
    return out + _BINDING_STATE_FIXED.pack(e.moved, e.learned is not None, len(name) - 1, mac_bytes) + name[1:]


def _dec_rule_entry(r: _Reader) -> RuleEntry:
    rule = _read_rule(r)
    packets, octets, last_seen = r.unpack(_ENTRY_COUNTERS, "rule counters")
    if not rule.bound:
        return RuleEntry(rule, packets, octets, last_seen)
    moved, learned, iface_len, mac_bytes = r.unpack(_BINDING_STATE_FIXED, "binding state")
    name = r.take(iface_len, "learned interface")
    if learned > 1 or (not learned and (iface_len or mac_bytes != bytes(6))):
        raise Malformed("a binding state that learned nothing has no interface or MAC, and learned is 0 or 1")
    return RuleEntry(rule, packets, octets, last_seen, moved=moved,
                     learned=(name.decode("utf-8", "replace"), mac_bytes) if learned else None)


def entry_size(e: RuleEntry | DeniedEntry) -> int:
    """The bytes `e` takes in its page: a rule entry 48 or 72, more for a bound rule (docs/protocol.md, "Rule
    entry"); a denied entry 36 or 60, more where a binding dropped it ("Denied entry"). Only the longer
    entries are encoded to be measured: a page is encoded once more when it is sent."""
    if isinstance(e, RuleEntry):
        if not e.rule.bound:
            return _RULE_FIXED.size + 2 * _ADDRESS_SIZE[e.rule.key.family] + _ENTRY_COUNTERS.size
        return len(_enc_rule_entry(e))
    if not (e.iface or e.mac):
        return _DENIED_FIXED.size + 2 * _ADDRESS_SIZE[e.source.version]
    return len(_enc_denied_entry(e))


def _enc_denied_entry(e: DeniedEntry) -> bytes:
    family = _family_of(e.source, e.group)
    for what in ("packets", "octets", "last_seen"):
        _check_int(getattr(e, what), 64, what)
    _check_int(e.last_ttl, 8, "last_ttl")
    where = bool(e.iface or e.mac)
    out = (
        _DENIED_FIXED.pack(family, Reason(e.reason), e.last_ttl, DENIED_WHERE if where else 0, e.packets, e.octets,
                           e.last_seen)
        + e.source.packed
        + e.group.packed
    )
    if not where:
        return out
    name = _encode_text(e.iface, MAX_BINDING_IFACE, "denied interface")
    return out + bytes([len(name) - 1]) + (e.mac or bytes(6)) + name[1:]


def _dec_denied_entry(r: _Reader) -> DeniedEntry:
    family, reason, last_ttl, flags, packets, octets, last_seen = r.unpack(_DENIED_FIXED, "denied entry")
    source, group = _read_addresses(r, family, "denied entry")
    if flags & ~DENIED_WHERE:
        raise Malformed(f"flags 0x{flags:02x} of a denied entry are not 00 or 01")
    iface, mac_bytes = "", b""
    if flags & DENIED_WHERE:
        iface_len = r.u8("denied interface length")
        mac_bytes = r.take(6, "denied MAC")
        iface = r.take(iface_len, "denied interface").decode("utf-8", "replace")
        mac_bytes = b"" if mac_bytes == bytes(6) else mac_bytes
    # Any reason code decodes: one this version does not know is kept as Reason.UNKNOWN_<n>
    # (docs/protocol.md, "COUNTERS").
    return DeniedEntry(source, group, Reason(reason), packets, octets, last_ttl, last_seen, iface, mac_bytes)


def _page_codec(page_cls: type[Any], enc_entry: _Encoder, dec_entry: _Decoder,
                what: str, most: int = MAX_CURSOR) -> tuple[_Encoder, _Decoder]:
    def encode(b: Any) -> bytes:
        _check_int(len(b.entries), 16, "entry count")
        cursor = _write_cursor(b.cursor, most)
        return _PAGE_RESP.pack(len(b.entries), len(cursor)) + cursor + b"".join(enc_entry(e) for e in b.entries)

    def decode(r: _Reader) -> Any:
        count, cursor_len = r.unpack(_PAGE_RESP, f"{what} page")
        cursor = _read_cursor(r, cursor_len, most)
        entries = tuple(dec_entry(r) for _ in range(count))
        r.end(f"{what} page")
        return page_cls(entries, cursor)

    return encode, decode


_enc_rules_page, _dec_rules_page = _page_codec(RulesPage, _enc_rule_entry, _dec_rule_entry, "rules")
_enc_denied_page, _dec_denied_page = _page_codec(DeniedPage, _enc_denied_entry, _dec_denied_entry, "denied")


# -----------------------------------------------------------------------------
# Receiver listings and policies
#
#  receiver entry:    receiver record, then 0 matched(u64)  8 last_seen(u64)
#  denied-join entry: 0 family  1 reason  2 version  3 flags(01 source)  4 records(u64)  12 last_seen(u64)
#                     20 iface_len  21 receiver(w)  group(w)  [source(w)]  iface
#  joined entry:      0 family  1 flags(01 left)  2 iface_len  3 reports(u64)  11 first_seen(u64)
#                     19 last_seen(u64)  27 group(w)  reporter(w)  iface
#  policy reply:      0 count, then per interface: 0 mode  1 limit(u16)  3 groups(u32)  7 counters(8 x u64)
#                     71 iface_len  72 iface

_RECV_COUNTS = struct.Struct("!QQ")  # matched, last_seen
_DJ_FIXED = struct.Struct("!BBBBQQB")  # 21
_JOINED_FIXED = struct.Struct("!BBBQQQ")  # 27
_POLICY_ENTRY = struct.Struct(f"!BHI{len(RECV_COUNTERS)}QB")  # 72
_VERSIONS = {4: range(1, 4), 6: range(1, 3)}  # IGMP 1..3, MLD 1..2


def _iface_bytes(name: str, what: str) -> bytes:
    raw = name.encode("utf-8", "replace")
    if len(raw) > 255:
        raise LocalProtocolError(f"{what} name {name!r} is longer than 255 bytes")
    return raw


def _enc_receiver_entry(e: ReceiverEntry) -> bytes:
    _check_int(e.matched, 64, "matched")
    _check_int(e.last_seen_ms, 64, "last_seen")
    return _write_receiver(e.rule) + _RECV_COUNTS.pack(e.matched, e.last_seen_ms)


def _dec_receiver_entry(r: _Reader) -> ReceiverEntry:
    fields = _take_receiver(r)
    matched, last_seen = r.unpack(_RECV_COUNTS, "receiver counters")
    try:
        rule = _make_receiver(fields)
    except InvalidArgument as err:
        raise Malformed(f"a receiver entry holds no rule: {err.message}") from None
    return ReceiverEntry(rule, matched, last_seen)


def _enc_denied_join(e: DeniedJoinEntry) -> bytes:
    family = _family_of(e.receiver, e.group, *(() if e.source is None else (e.source,)))
    _check_int(e.records, 64, "records")
    _check_int(e.last_seen, 64, "last_seen")
    _check_int(e.version, 8, "version")
    name = _iface_bytes(e.iface, "denied interface")
    src = e.source.packed if e.source is not None else b""
    return (_DJ_FIXED.pack(family, Reason(e.reason), e.version, RECV_SOURCE if src else 0, e.records, e.last_seen,
                           len(name))
            + e.receiver.packed + e.group.packed + src + name)


def _dec_denied_join(r: _Reader) -> DeniedJoinEntry:
    family, reason, version, flags, records, last_seen, iface_len = r.unpack(_DJ_FIXED, "denied-join entry")
    size = _address_size(family)
    if flags & ~RECV_SOURCE:
        raise Malformed(f"flags 0x{flags:02x} of a denied-join entry are not 00 or 01 (source)")
    if version not in _VERSIONS[family]:
        raise Malformed(f"report version {version} is not one of {'IGMP 1-3' if family == 4 else 'MLD 1-2'}")
    make = _ADDRESS_TYPE[family]
    receiver = make(r.take(size, "denied receiver"))
    group = make(r.take(size, "denied group"))
    source = make(r.take(size, "denied source")) if flags & RECV_SOURCE else None
    iface = r.take(iface_len, "denied interface").decode("utf-8", "replace")
    # Any reason code decodes, as in a DENIED entry (docs/protocol.md, "COUNTERS").
    return DeniedJoinEntry(iface, receiver, group, source, Reason(reason), records, last_seen, version)


def _enc_joined(e: JoinedEntry) -> bytes:
    family = _family_of(e.group, e.reporter)
    for what in ("reports", "first_seen", "last_seen"):
        _check_int(getattr(e, what), 64, what)
    name = _iface_bytes(e.iface, "joined interface")
    return (_JOINED_FIXED.pack(family, JOINED_LEFT if e.left else 0, len(name), e.reports, e.first_seen,
                               e.last_seen)
            + e.group.packed + e.reporter.packed + name)


def _dec_joined(r: _Reader) -> JoinedEntry:
    family, flags, iface_len, reports, first_seen, last_seen = r.unpack(_JOINED_FIXED, "joined entry")
    size = _address_size(family)
    if flags & ~JOINED_LEFT:
        raise Malformed(f"flags 0x{flags:02x} of a joined entry are not 00 or 01 (left)")
    make = _ADDRESS_TYPE[family]
    group = make(r.take(size, "joined group"))
    reporter = make(r.take(size, "joined reporter"))
    iface = r.take(iface_len, "joined interface").decode("utf-8", "replace")
    return JoinedEntry(iface, group, reporter, first_seen, last_seen, reports, bool(flags & JOINED_LEFT))


def recv_entry_size(e: ReceiverEntry | DeniedJoinEntry | JoinedEntry) -> int:
    """The bytes `e` takes in its page (docs/protocol.md, "Receiver entry", "Denied-join entry", "Joined entry")."""
    if isinstance(e, ReceiverEntry):
        rule = e.rule
        width = _ADDRESS_SIZE[rule.family]
        return (_RECV_FIXED.size + width * (3 if rule.source is not None else 2) + len(rule.iface.encode())
                + _RECV_COUNTS.size)
    if isinstance(e, DeniedJoinEntry):
        width = _ADDRESS_SIZE[e.family]
        return _DJ_FIXED.size + width * (3 if e.source is not None else 2) + len(e.iface.encode("utf-8", "replace"))
    return _JOINED_FIXED.size + 2 * _ADDRESS_SIZE[e.group.version] + len(e.iface.encode("utf-8", "replace"))


def _enc_policy_reply(b: PolicyReply) -> bytes:
    _check_int(len(b.interfaces), 8, "interface count")
    out = [bytes([len(b.interfaces)])]
    for e in b.interfaces:
        _check_int(e.groups, 32, "groups")
        counts = [e.counters.get(name, 0) for name in RECV_COUNTERS]
        for name, value in zip(RECV_COUNTERS, counts, strict=True):
            _check_int(value, 64, name)
        raw = _iface_bytes(e.policy.iface, "policy interface")
        out.append(_POLICY_ENTRY.pack(ReceiverMode(e.policy.mode), e.policy.limit, e.groups, *counts, len(raw))
                   + raw)
    return b"".join(out)


def _dec_policy_reply(r: _Reader) -> PolicyReply:
    count = r.u8("interface count")
    out = []
    for _ in range(count):
        mode, limit, groups, *counts, iface_len = r.unpack(_POLICY_ENTRY, "interface policy")
        iface = r.take(iface_len, "policy interface").decode("utf-8", "replace")
        if mode not in ReceiverMode._value2member_map_:
            raise Malformed(f"unknown receiver mode {mode}")
        try:
            policy = IfacePolicy.make(iface, ReceiverMode(mode), limit)
        except RuleError as err:
            raise Malformed(f"an interface policy holds no interface: {err}") from None
        out.append(IfaceReceiversEntry(policy, groups, dict(zip(RECV_COUNTERS, counts, strict=True))))
    r.end("policy reply")
    return PolicyReply(tuple(out))


_enc_receivers_page, _dec_receivers_page = _page_codec(ReceiversPage, _enc_receiver_entry, _dec_receiver_entry,
                                                       "receivers", MAX_RECEIVER_CURSOR)
_enc_denied_joins_page, _dec_denied_joins_page = _page_codec(DeniedJoinsPage, _enc_denied_join, _dec_denied_join,
                                                             "denied joins", MAX_RECEIVER_CURSOR)
_enc_joined_page, _dec_joined_page = _page_codec(JoinedPage, _enc_joined, _dec_joined, "joined groups",
                                                 MAX_RECEIVER_CURSOR)


def _enc_counters(b: Counters) -> bytes:
    _check_int(b.rule_count, 32, "rule_count")
    _check_int(len(b.reasons), 8, "reason count")
    out = [_COUNTERS_FIXED.pack(b.rule_count, Mode(b.mode)), _enc_name(b.backend), bytes([len(b.reasons)])]
    for c in b.reasons:
        _check_int(c.packets, 64, "packets")
        _check_int(c.octets, 64, "octets")
        out.append(_REASON.pack(Reason(c.reason), c.packets, c.octets))
    return b"".join(out)


def _dec_counters(r: _Reader) -> Counters:
    rule_count, mode = r.unpack(_COUNTERS_FIXED, "counters")
    name = _read_text(r, "backend name")
    count = r.u8("reason count")
    reasons = []
    for _ in range(count):
        reason, packets, octets = r.unpack(_REASON, "reason counter")
        reasons.append(ReasonCounter(Reason(reason), packets, octets))  # unknown codes kept, see _dec_denied_entry
    r.end("counters")
    return Counters(rule_count, _read_enum(Mode, mode, "mode"), name, tuple(reasons))


def _enc_flushed(b: Flushed) -> bytes:
    _check_int(b.removed, 32, "removed")
    return struct.pack("!I", b.removed)


def _dec_flushed(r: _Reader) -> Flushed:
    (removed,) = r.unpack(struct.Struct("!I"), "flush reply")
    r.end("flush reply")
    return Flushed(removed)


def _enc_mode_reply(b: ModeReply) -> bytes:
    return bytes([Mode(b.mode)])


def _dec_mode_reply(r: _Reader) -> ModeReply:
    value = r.u8("mode")
    r.end("mode reply")
    return ModeReply(_read_enum(Mode, value, "mode"))


def _enc_error(b: ErrorReply) -> bytes:
    return _encode_text(b.message, MAX_MESSAGE, "message")


def _dec_error(r: _Reader) -> ErrorReply:
    message = _read_text(r, "error message")
    r.end("error message")
    return ErrorReply(message)


# command -> (body class of a successful reply, encoder, decoder)
_REPLY_CODEC: dict[int, tuple[type[Any], _Encoder, _Decoder]] = {
    Command.HELLO: (HelloReply, _enc_hello, _dec_hello),
    Command.ADD: (Done, _enc_empty, _dec_done),
    Command.REPLACE: (Replaced, _enc_replaced, _dec_replaced),
    Command.REMOVE: (Done, _enc_empty, _dec_done),
    Command.LIST: (RulesPage, _enc_rules_page, _dec_rules_page),
    Command.DENIED: (DeniedPage, _enc_denied_page, _dec_denied_page),
    Command.COUNTERS: (Counters, _enc_counters, _dec_counters),
    Command.FLUSH: (Flushed, _enc_flushed, _dec_flushed),
    Command.MODE: (ModeReply, _enc_mode_reply, _dec_mode_reply),
    Command.REARM: (Done, _enc_empty, _dec_done),
    Command.RECV_ADD: (Done, _enc_empty, _dec_done),
    Command.RECV_REMOVE: (Done, _enc_empty, _dec_done),
    Command.RECV_LIST: (ReceiversPage, _enc_receivers_page, _dec_receivers_page),
    Command.RECV_DENIED: (DeniedJoinsPage, _enc_denied_joins_page, _dec_denied_joins_page),
    Command.RECV_JOINED: (JoinedPage, _enc_joined_page, _dec_joined_page),
    Command.RECV_POLICY: (PolicyReply, _enc_policy_reply, _dec_policy_reply),
}

# Page sizes: the most entries that always fit in MAX_DATAGRAM, whatever the
# address family (IPv6 entries are the largest) and the cursor length.
_RULE_ENTRY_MAX = _RULE_FIXED.size + 2 * 16 + _ENTRY_COUNTERS.size  # 72
_DENIED_ENTRY_MAX = _DENIED_FIXED.size + 2 * 16  # 60
_PAGE_ROOM = MAX_DATAGRAM - RESPONSE_HEADER_SIZE - TAG_SIZE - _PAGE_RESP.size - MAX_CURSOR
MAX_LIST_ENTRIES = _PAGE_ROOM // _RULE_ENTRY_MAX  # 17
MAX_DENIED_ENTRIES = _PAGE_ROOM // _DENIED_ENTRY_MAX  # 21
PAGE_ROOM = _PAGE_ROOM  # bytes a LIST page's entries may take: bound rules make entries longer, pages shorter
assert MAX_CURSOR >= MAX_CURSOR_SIZE, "every RuleKey.cursor must fit a v2 cursor"
# Receiver listings: cursors up to MAX_RECEIVER_CURSOR (68) bytes; entries vary from 29 bytes (an IPv4 rule with
# neither source nor interface) to 84, so a page asks the backend for as many of the shortest as fit and is cut
# by bytes (server._fit), as LIST pages with bound rules are.
RECV_PAGE_ROOM = MAX_DATAGRAM - RESPONSE_HEADER_SIZE - TAG_SIZE - _PAGE_RESP.size - MAX_RECEIVER_CURSOR  # 1245
MAX_RECV_ENTRIES = RECV_PAGE_ROOM // (_RECV_FIXED.size + 2 * 4 + _RECV_COUNTS.size)  # 42
MAX_DENIED_JOIN_ENTRIES = RECV_PAGE_ROOM // (_DJ_FIXED.size + 2 * 4)  # 42
MAX_JOINED_ENTRIES = RECV_PAGE_ROOM // (_JOINED_FIXED.size + 2 * 4)  # 35
# RECV_POLICY answers for every guarded interface in one datagram: 15 of the longest names fit.
MAX_POLICY_INTERFACES = (MAX_DATAGRAM - RESPONSE_HEADER_SIZE - TAG_SIZE - 1) // (_POLICY_ENTRY.size + 15)


# =============================================================================
# Requests
# =============================================================================


def encode_request(request: Request, keys: KeyRing) -> bytes:
    """The datagram for `request`, signed with key `request.key_id` of `keys`."""
    command = getattr(request.body, "command", None)
    codec = _REQUEST_CODEC.get(command) if command is not None else None
    if codec is None or type(request.body) is not codec[0]:
        raise LocalProtocolError(f"not a v2 request body: {request.body!r}")
    encode = codec[1]
    _check_int(request.key_id, 16, "key_id")
    for what in ("epoch", "session", "seq"):
        _check_int(getattr(request, what), 64, what)
    key = keys.get(request.key_id)
    if key is None:
        raise LocalProtocolError(f"key {request.key_id} is not in the key ring")
    body = encode(request.body)
    header = _REQ_HEADER.pack(
        MAGIC, VERSION, KIND_REQUEST, request.command, 0, 0, request.key_id, len(body),
        request.epoch, request.session, request.seq,
    )
    message = header + body
    datagram = message + mac(key.secret, message)
    if len(datagram) > MAX_DATAGRAM:
        raise LocalProtocolError(f"request of {len(datagram)} bytes exceeds {MAX_DATAGRAM}")
    return datagram


def _check_frame(data: bytes, minimum: int, kind: int) -> None:
    if len(data) < minimum:
        raise NotV2(f"{len(data)} bytes is too short for a v2 message")
    if data[:3] != MAGIC:
        raise NotV2("no v2 magic")
    if data[3] != VERSION:
        raise NotV2(f"protocol version {data[3]} is not supported")
    if data[4] != kind:
        raise NotV2(f"message kind {data[4]} is not {'a request' if kind == KIND_REQUEST else 'a response'}")


def open_request(data: bytes, keys: KeyRing) -> Envelope:
    """Check framing, key and tag of a request; return its authenticated header and raw body.

    NotV2 (silence) before the key is known; UnknownKey and BadAuth carry the
    unauthenticated header; Malformed after authentication carries the
    authenticated one.
    """
    data = bytes(data)
    _check_frame(data, MIN_REQUEST_SIZE, KIND_REQUEST)
    _, _, _, command, status, reserved, key_id, body_len, epoch, session, seq = _REQ_HEADER.unpack_from(data)
    tag = data[-TAG_SIZE:]
    header = RequestHeader(command, key_id, epoch, session, seq, tag, authenticated=False)
    key = keys.get(key_id)
    if key is None:
        raise UnknownKey(f"key id {key_id} is not in this router's key file", header=header)
    if not hmac.compare_digest(mac(key.secret, data[:-TAG_SIZE]), tag):
        raise BadAuth(f"the tag does not verify under key {key_id}", header=header)
    header = replace(header, authenticated=True)
    if body_len != len(data) - MIN_REQUEST_SIZE:
        raise Malformed(
            f"body_len says {body_len} bytes, the datagram holds {len(data) - MIN_REQUEST_SIZE}", header=header
        )
    if status or reserved:
        raise Malformed("status and reserved bytes of a request must be zero", header=header)
    return Envelope(header, data[REQUEST_HEADER_SIZE:-TAG_SIZE])


def parse_request(envelope: Envelope) -> Request:
    """Decode the command and body of an authenticated request."""
    h = envelope.header
    try:
        try:
            command = Command(h.command)
        except ValueError:
            raise UnknownCommand(f"unknown command 0x{h.command:02x}") from None
        _, _, decode = _REQUEST_CODEC[command]
        body = decode(_Reader(envelope.body))
    except RemoteProtocolError as err:
        err.header = h
        raise
    return Request(body, h.key_id, h.epoch, h.session, h.seq)


def decode_request(data: bytes, keys: KeyRing) -> Request:
    return parse_request(open_request(data, keys))


# =============================================================================
# Responses
# =============================================================================


def encode_response(response: Response, keys: KeyRing | None) -> bytes:
    """The datagram for `response`; key_id 0 makes an unauthenticated error notice (no tag)."""
    status = response.status
    _check_int(status, 8, "status")
    _check_int(response.command, 8, "command")
    _check_int(response.key_id, 16, "key_id")
    for what in ("epoch", "session", "seq"):
        _check_int(getattr(response, what), 64, what)
    if len(response.in_reply_to) != IN_REPLY_TO_SIZE:
        raise LocalProtocolError(f"in_reply_to must be {IN_REPLY_TO_SIZE} bytes")
    if status == ReplyCode.OK:
        codec = _REPLY_CODEC.get(response.command)
        if codec is None or type(response.body) is not codec[0]:
            raise LocalProtocolError(f"{response.body!r} is not the reply to command {response.command}")
        encode = codec[1]
        if response.key_id == 0:
            raise LocalProtocolError("a successful reply must be authenticated")
    else:
        if type(response.body) is not ErrorReply:
            raise LocalProtocolError("the body of an error reply is an ErrorReply")
        encode = _enc_error
    body = encode(response.body)
    message = _RESP_HEADER.pack(
        MAGIC, VERSION, KIND_RESPONSE, response.command, status, 0, response.key_id, len(body),
        response.epoch, response.session, response.seq, response.in_reply_to,
    ) + body
    if response.key_id:
        key = keys.get(response.key_id) if keys is not None else None
        if key is None:
            raise LocalProtocolError(f"key {response.key_id} is not in the key ring")
        message += mac(key.secret, message)
    if len(message) > MAX_DATAGRAM:
        raise LocalProtocolError(f"response of {len(message)} bytes exceeds {MAX_DATAGRAM}")
    return message


def decode_response(data: bytes, keys: KeyRing | None) -> Response:
    """Decode a response, verifying its tag unless it is an unauthenticated notice (key_id 0).

    The caller must still match session, seq and in_reply_to against its
    request, and must not trust a response whose `authenticated` is False.
    """
    data = bytes(data)
    _check_frame(data, MIN_RESPONSE_SIZE, KIND_RESPONSE)
    (_, _, _, command, status, reserved, key_id, body_len, epoch, session, seq,
     in_reply_to) = _RESP_HEADER.unpack_from(data)
    if key_id == 0:
        body = data[RESPONSE_HEADER_SIZE:]
    else:
        if len(data) < RESPONSE_HEADER_SIZE + TAG_SIZE:
            raise Malformed("an authenticated response is too short to hold its tag")
        key = keys.get(key_id) if keys is not None else None
        if key is None:
            raise UnknownKey(f"the response is signed with key {key_id}, which we do not have")
        if not hmac.compare_digest(mac(key.secret, data[:-TAG_SIZE]), data[-TAG_SIZE:]):
            raise BadAuth(f"the response's tag does not verify under key {key_id}")
        body = data[RESPONSE_HEADER_SIZE:-TAG_SIZE]
    if body_len != len(body):
        raise Malformed(f"body_len says {body_len} bytes, the datagram holds {len(body)}")
    if reserved:
        raise Malformed("reserved byte of a response is not zero")
    code: int = ReplyCode(status) if status in ReplyCode._value2member_map_ else status
    reader = _Reader(body)
    if code == ReplyCode.OK:
        if key_id == 0:
            raise Malformed("an unauthenticated response cannot report success")
        try:
            command = Command(command)
        except ValueError:
            raise Malformed(f"successful reply to unknown command 0x{command:02x}") from None
        decoded = _REPLY_CODEC[command][2](reader)
    else:
        if command in Command._value2member_map_:
            command = Command(command)
        decoded = _dec_error(reader)
    return Response(command, code, decoded, key_id, epoch, session, seq, in_reply_to)


def error_response(header: RequestHeader, code: ReplyCode, message: str, *, epoch: int,
                   key_id: int) -> Response:
    """The error reply to the request described by `header` (key_id 0: unauthenticated notice)."""
    return Response(header.command, code, ErrorReply(message), key_id, epoch, header.session, header.seq,
                    header.in_reply_to)
