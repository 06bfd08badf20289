"""Protocol version 1: the original design's call/response messages, byte for byte (docs/design.md).

Source: the call/response messages of the design mauth follows (the
original mauth system's Figure 2), restated in docs/protocol.md, "Version 1".
All fields in network byte order.

Request, exactly 11 bytes:

     0        1        2                 6                 10
    +--------+--------+--------+--------+--------+--------+--------+
    |  seq   |command |   source (IPv4, 4)  |   group (IPv4, 4)  |max_ttl |
    +--------+--------+--------+--------+--------+--------+--------+
    command: 0x00 add sender, 0x01 remove sender (max_ttl ignored)

Response, exactly 2 bytes:

     0        1
    +--------+--------+
    |  type  |  seq   |     type: 0x00 ACK, 0x01 ERROR; seq: the request's
    +--------+--------+

Strategy: sans-IO, bytes in and frozen dataclasses out. Length is the only
framing v1 has, so a datagram of any other length raises `NotV1` (the server
stays silent). An unknown command or an invalid rule raises an error that
carries the request's seq, so that the server can answer ERROR for it.
Rules are validated here, through `Rule.make`/`RuleKey.make`: a decoded
request always holds a rule the filter can install.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from mauthcore.protocol.errors import (
    InvalidArgument,
    LocalProtocolError,
    Malformed,
    NotV1,
    UnknownCommand,
)
from mauthcore.rules import Rule, RuleError, RuleKey

REQUEST_SIZE = 11
RESPONSE_SIZE = 2
SEQ_MODULUS = 256

_REQUEST = struct.Struct("!BB4s4sB")
_RESPONSE = struct.Struct("!BB")
assert _REQUEST.size == REQUEST_SIZE and _RESPONSE.size == RESPONSE_SIZE


class V1Command(enum.IntEnum):
    ADD = 0x00
    REMOVE = 0x01


class V1Type(enum.IntEnum):
    ACK = 0x00
    ERROR = 0x01


@dataclass(frozen=True)
class V1Add:
    """Add sender: `rule.source` may send to `rule.group` with TTL <= `rule.max_ttl`."""

    seq: int
    rule: Rule

    command = V1Command.ADD


@dataclass(frozen=True)
class V1Remove:
    """Remove sender. `max_ttl` is carried only so that bytes round-trip; it means nothing."""

    seq: int
    key: RuleKey
    max_ttl: int = 0

    command = V1Command.REMOVE


V1Request = V1Add | V1Remove


@dataclass(frozen=True)
class V1Response:
    type: V1Type
    seq: int

    @property
    def ok(self) -> bool:
        return self.type is V1Type.ACK


# --- requests -----------------------------------------------------------------


def _decode_add(seq: int, source: ipaddress.IPv4Address, group: ipaddress.IPv4Address,
                max_ttl: int) -> V1Request:
    return V1Add(seq, Rule.make(source, group, max_ttl))


def _decode_remove(seq: int, source: ipaddress.IPv4Address, group: ipaddress.IPv4Address,
                   max_ttl: int) -> V1Request:
    return V1Remove(seq, RuleKey.make(source, group), max_ttl)


_DECODERS = {
    V1Command.ADD: _decode_add,
    V1Command.REMOVE: _decode_remove,
}


def decode_request(data: bytes) -> V1Request:
    """Decode an 11-byte v1 request.

    Raises NotV1 for any other length (stay silent), UnknownCommand or
    InvalidArgument (both carrying `.seq`, answer ERROR).
    """
    if len(data) != REQUEST_SIZE:
        raise NotV1(f"a v1 request is {REQUEST_SIZE} bytes, not {len(data)}")
    seq, command, source, group, max_ttl = _REQUEST.unpack(data)
    try:
        decoder = _DECODERS[V1Command(command)]
    except ValueError:
        raise UnknownCommand(f"unknown v1 command 0x{command:02x}", seq=seq) from None
    try:
        return decoder(seq, ipaddress.IPv4Address(source), ipaddress.IPv4Address(group), max_ttl)
    except RuleError as err:
        raise InvalidArgument(str(err), seq=seq) from None


def _check_byte(value: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"v1 {what} {value!r} does not fit in one byte")


def _packed_v4(address: object, what: str) -> bytes:
    if isinstance(address, ipaddress.IPv4Network):
        raise LocalProtocolError(f"v1 carries host addresses only, not the {what} prefix {address}; use v2")
    if not isinstance(address, ipaddress.IPv4Address):
        raise LocalProtocolError(f"v1 carries only IPv4 addresses, not {what} {address}")
    return address.packed


def encode_request(request: V1Request) -> bytes:
    """The 11 bytes of `request`. LocalProtocolError if it cannot be expressed in v1."""
    if isinstance(request, V1Add):
        source, group, max_ttl = request.rule.source, request.rule.group, request.rule.max_ttl
        if request.rule.rate_limited:
            raise LocalProtocolError(f"v1 carries no rate limits, so it cannot add {request.rule}; use v2")
        if request.rule.bound:
            raise LocalProtocolError(f"v1 carries no binding, so it cannot add {request.rule}; use v2")
    elif isinstance(request, V1Remove):
        source, group, max_ttl = request.key.source, request.key.group, request.max_ttl
    else:
        raise LocalProtocolError(f"not a v1 request: {request!r}")
    _check_byte(request.seq, "seq")
    _check_byte(max_ttl, "max_ttl")
    return _REQUEST.pack(
        request.seq, request.command, _packed_v4(source, "source"), _packed_v4(group, "group"), max_ttl
    )


# --- responses ----------------------------------------------------------------


def decode_response(data: bytes) -> V1Response:
    """Decode a 2-byte v1 response. NotV1 for any other length, Malformed for an unknown type."""
    if len(data) != RESPONSE_SIZE:
        raise NotV1(f"a v1 response is {RESPONSE_SIZE} bytes, not {len(data)}")
    kind, seq = _RESPONSE.unpack(data)
    try:
        return V1Response(V1Type(kind), seq)
    except ValueError:
        raise Malformed(f"unknown v1 response type 0x{kind:02x}", seq=seq) from None


def encode_response(response: V1Response) -> bytes:
    _check_byte(response.seq, "seq")
    return _RESPONSE.pack(V1Type(response.type), response.seq)


# --- sequence numbers ----------------------------------------------------------


def seq_newer(seq: int, last: int) -> bool:
    """RFC 1982 serial-number arithmetic (SERIAL_BITS = 8, section 3.2).

    True iff `seq` is strictly newer than `last`: 0 < (seq - last) mod 256 < 128.
    The case the RFC leaves undefined (a distance of exactly 128) counts as
    not newer, so that it can never cause an execution.
    """
    distance = (seq - last) % SEQ_MODULUS
    return 0 < distance < SEQ_MODULUS // 2
