"""Protocol v2 codec (docs/protocol.md).

The expected bytes below are written out by hand from the document; only the
HMAC tags are computed, with `hmac` directly (not through the codec), so the
table checks the codec against the document rather than against itself.
The same rows are the test vectors printed in docs/protocol.md, and a test
checks that the document still shows them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import pathlib
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol import v2
from mauthcore.protocol.errors import (
    BadAuth,
    InvalidArgument,
    LocalProtocolError,
    Malformed,
    NotV2,
    ProtocolError,
    RemoteProtocolError,
    ReplyCode,
    UnknownCommand,
    UnknownKey,
)
from mauthcore.protocol.keys import Key, KeyRing
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
from mauthcore.protocol.v2 import (
    Add,
    Command,
    DeniedJoinsPage,
    DeniedPage,
    Done,
    ErrorReply,
    Flush,
    Flushed,
    GetCounters,
    Hello,
    HelloReply,
    JoinedPage,
    ListDenied,
    ListRules,
    ModeReply,
    ModeRequest,
    PolicyReply,
    Rearm,
    ReceiversPage,
    RecvAdd,
    RecvDenied,
    RecvJoined,
    RecvList,
    RecvPolicy,
    RecvRemove,
    Remove,
    Replace,
    Replaced,
    Request,
    Response,
    RulesPage,
)
from mauthcore.receivers import MAX_RECEIVER_CURSOR, IfacePolicy, ReceiverRule
from mauthcore.rules import Binding, Rule, RuleKey

SECRET = bytes(range(32))  # 000102...1f
KEYS = KeyRing([Key(1, SECRET), Key(2, b"\xaa" * 16)])
OTHER = KeyRing([Key(1, b"\x55" * 32)])  # same key id, another secret
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

E = 0x1122334455667788  # epoch used in the vectors
IRT = bytes(range(0xA0, 0xB0))  # in_reply_to used in the response vectors
RULE = Rule.make("10.0.0.1", "239.1.2.3", 16)
KEY = RULE.key


def h(text: str) -> bytes:
    return bytes.fromhex(re.sub(r"\s+", "", text))


def sign(message: bytes, secret: bytes = SECRET) -> bytes:
    return message + hmac.new(secret, message, hashlib.sha256).digest()


def req(command: int, body: str, *, epoch: int = E, session: int = 1, seq: int = 1, key_id: int = 1,
        status: int = 0, reserved: int = 0, body_len: int | None = None, secret: bytes = SECRET) -> bytes:
    raw = h(body)
    header = b"MAU\x02\x01" + struct.pack("!BBBHHQQQ", command, status, reserved, key_id,
                                         len(raw) if body_len is None else body_len, epoch, session, seq)
    return sign(header + raw, secret)


def resp(command: int, status: int, body: str, *, epoch: int = E, session: int = 1, seq: int = 1,
         key_id: int = 1, irt: bytes = IRT, secret: bytes = SECRET) -> bytes:
    raw = h(body)
    message = b"MAU\x02\x02" + struct.pack("!BBBHHQQQ", command, status, 0, key_id, len(raw), epoch,
                                          session, seq) + irt + raw
    return sign(message, secret) if key_id else message


BOUND_RULE = Rule.make("10.0.0.1", "239.1.2.3", 16, binding=Binding.make("eth1", rpf=True, mac="02:00:5e:10:00:01"))
RULE_HEX = "04 20 20 10 00000000 0000000000000000 0a000001 ef010203"
KEY_HEX = "04 20 20 00 0a000001 ef010203"
CURSOR = h("04 0a000001 ef010203")
# The cursor musersd hands out after the IPv6 rule (2001:db8::10, ff0e::db8:1): family, source, group,
# source length, group length (docs/protocol.md, "Listing cursors").
CURSOR6 = h("06 20010db8000000000000000000000010 ff0e000000000000000000000db80001 80 80")

# Receiver rules: hosts of 10.1.0.0/24 may join 239.1.0.0/16 on eth1; 10.1.0.7 may join (192.0.2.10, 232.1.1.1)
# anywhere; link-local IPv6 hosts may join ff0e::db8:0/112 on eth1. The record: family, flags (01 source),
# receiver length, group length, interface length, receiver, group, [source], interface.
RRULE = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1")
RRULE_HEX = "04 00 18 10 04 0a010000 ef010000 65746831"
RRULE_SSM = ReceiverRule.make("10.1.0.7", "232.1.1.1", source="192.0.2.10")
RRULE_SSM_HEX = "04 01 20 20 00 0a010007 e8010101 c000020a"
RRULE6 = ReceiverRule.make("fe80::/10", "ff0e::db8:0/112", iface="eth1")
RRULE6_HEX = "06 00 0a 70 04 fe800000000000000000000000000000 ff0e000000000000000000000db80000 65746831"
# RRULE's cursor (ReceiverRule.cursor): family, receiver, its length, group, its length, source flag, interface.
RCURSOR = h("04 0a010000 18 ef010000 10 00 04 65746831")

# name -> (message, datagram)
REQUESTS = {
    "hello-request": (Request(Hello(), 1, 0, 0, 0x0102030405060708),
                      req(0x01, "", epoch=0, session=0, seq=0x0102030405060708)),
    "add-request": (Request(Add(RULE), 1, E, 1, 1), req(0x02, RULE_HEX)),
    "replace-request": (Request(Replace(Rule.make("10.0.0.1", "239.1.2.3", 255)), 1, E, 1, 2),
                        req(0x03, "04 20 20 ff 00000000 0000000000000000 0a000001 ef010203", seq=2)),
    "remove-request": (Request(Remove(KEY), 1, E, 1, 3), req(0x04, KEY_HEX, seq=3)),
    "list-request": (Request(ListRules(), 1, E, 1, 4), req(0x05, "0000 00", seq=4)),
    "list-request-cursor": (Request(ListRules(10, CURSOR), 1, E, 1, 5),
                            req(0x05, "000a 09 04 0a000001 ef010203", seq=5)),
    "denied-request": (Request(ListDenied(5), 1, E, 1, 6), req(0x06, "0005 00", seq=6)),
    "counters-request": (Request(GetCounters(), 1, E, 1, 7), req(0x07, "", seq=7)),
    "flush-request": (Request(Flush(), 2, E, 1, 8), req(0x08, "", seq=8, key_id=2, secret=b"\xaa" * 16)),
    "mode-get-request": (Request(ModeRequest(), 1, E, 1, 9), req(0x09, "00", seq=9)),
    "mode-set-request": (Request(ModeRequest(Mode.MONITOR), 1, E, 1, 10), req(0x09, "02", seq=10)),
    "add-prefix-rate-request": (
        Request(Add(Rule.make("10.0.0.0/24", "239.1.2.3", 16, pps=500, bps=2_000_000)), 1, E, 1, 11),
        req(0x02, "04 18 20 10 000001f4 00000000001e8480 0a000000 ef010203", seq=11)),
    "remove-group-prefix-request": (
        Request(Remove(RuleKey.make("10.0.0.1", "239.192.0.0/14")), 1, E, 1, 12),
        req(0x04, "04 20 0e 00 0a000001 efc00000", seq=12)),
    "add-ipv6-request": (
        Request(Add(Rule.make("2001:db8:0:1::/64", "ff0e::db8:1", 8)), 1, E, 1, 13),
        req(0x02, "06 40 80 08 00000000 0000000000000000"
                  " 20010db8000000010000000000000000 ff0e000000000000000000000db80001", seq=13)),
    "remove-ipv6-group-prefix-request": (
        Request(Remove(RuleKey.make("2001:db8::10", "ff15::/16")), 1, E, 1, 14),
        req(0x04, "06 80 10 00 20010db8000000000000000000000010 ff150000000000000000000000000000", seq=14)),
    "list-request-ipv6-cursor": (
        Request(ListRules(0, CURSOR6), 1, E, 1, 15),
        req(0x05, "0000 23 06 20010db8000000000000000000000010 ff0e000000000000000000000db80001 80 80", seq=15)),
    "add-bound-request": (
        Request(Add(BOUND_RULE), 1, E, 1, 16),
        req(0x02, "84 20 20 10 00000000 0000000000000000 0a000001 ef010203 07 04 02005e100001 65746831", seq=16)),
    "rearm-request": (Request(Rearm(KEY), 1, E, 1, 17), req(0x0A, KEY_HEX, seq=17)),
    # Receiver commands (docs/protocol.md, "Receiver commands").
    "recv-add-request": (Request(RecvAdd(RRULE), 1, E, 1, 20), req(0x0B, RRULE_HEX, seq=20)),
    "recv-add-ssm-request": (Request(RecvAdd(RRULE_SSM), 1, E, 1, 21), req(0x0B, RRULE_SSM_HEX, seq=21)),
    "recv-add-ipv6-request": (Request(RecvAdd(RRULE6), 1, E, 1, 22), req(0x0B, RRULE6_HEX, seq=22)),
    "recv-remove-request": (Request(RecvRemove(RRULE), 1, E, 1, 23), req(0x0C, RRULE_HEX, seq=23)),
    "recv-list-request": (Request(RecvList(), 1, E, 1, 24), req(0x0D, "0000 00", seq=24)),
    "recv-list-request-cursor": (Request(RecvList(0, RCURSOR), 1, E, 1, 25),
                                 req(0x0D, "0000 11 04 0a010000 18 ef010000 10 00 04 65746831", seq=25)),
    "recv-denied-request": (Request(RecvDenied(5), 1, E, 1, 26), req(0x0E, "0005 00", seq=26)),
    "recv-joined-request": (Request(RecvJoined(), 1, E, 1, 27), req(0x0F, "0000 00", seq=27)),
    "recv-policy-get-request": (Request(RecvPolicy(), 1, E, 1, 28), req(0x10, "00", seq=28)),
    "recv-policy-set-request": (Request(RecvPolicy(IfacePolicy.make("eth1", "closed", 20)), 1, E, 1, 29),
                                req(0x10, "01 02 0014 04 65746831", seq=29)),
}

LAST_SEEN = 0x00000190A3B2C1D0
LEARNING_RULE = Rule.make("10.0.0.1", "239.1.2.3", 16, binding=Binding.make("eth1", learn=True))
RESPONSES = {
    "hello-response": (
        Response(Command.HELLO, ReplyCode.OK, HelloReply(1, 0xCAFEF00D12345678, 3, Mode.ENFORCE, "xdp"), 1,
                 E, 0, 0x0102030405060708, IRT),
        resp(0x01, 0x00, "0000000000000001 cafef00d12345678 00000003 01 03 786470", session=0,
             seq=0x0102030405060708),
    ),
    "add-response": (Response(Command.ADD, ReplyCode.OK, Done(), 1, E, 1, 1, IRT), resp(0x02, 0x00, "")),
    "add-exists-response": (
        Response(Command.ADD, ReplyCode.EXISTS, ErrorReply("rule exists"), 1, E, 1, 1, IRT),
        resp(0x02, 0x01, "0b 72756c6520657869737473"),
    ),
    "replace-response": (Response(Command.REPLACE, ReplyCode.OK, Replaced(True), 1, E, 1, 2, IRT),
                         resp(0x03, 0x00, "01", seq=2)),
    "list-response": (
        Response(Command.LIST, ReplyCode.OK, RulesPage((RuleEntry(RULE, 0x10, 0x2000, LAST_SEEN),), CURSOR), 1,
                 E, 1, 4, IRT),
        resp(0x05, 0x00, "0001 09 040a000001ef010203" + RULE_HEX
             + "0000000000000010 0000000000002000 00000190a3b2c1d0", seq=4),
    ),
    "denied-response": (
        Response(Command.DENIED, ReplyCode.OK, DeniedPage((DeniedEntry(
            ipaddress.IPv4Address("10.0.0.9"), ipaddress.IPv4Address("239.0.0.1"), Reason.UNAUTHORIZED,
            5, 1500, 64, LAST_SEEN),)), 1, E, 1, 6, IRT),
        resp(0x06, 0x00, "0001 00 04 02 40 00 0000000000000005 00000000000005dc 00000190a3b2c1d0"
             " 0a000009 ef000001", seq=6),
    ),
    "counters-response": (
        Response(Command.COUNTERS, ReplyCode.OK, Counters(3, Mode.MONITOR, "xdp", (
            ReasonCounter(Reason.PASSED, 100, 150000), ReasonCounter(Reason.UNAUTHORIZED, 5, 1500))), 1,
            E, 1, 7, IRT),
        resp(0x07, 0x00, "00000003 02 03 786470 02 01 0000000000000064 00000000000249f0"
             " 02 0000000000000005 00000000000005dc", seq=7),
    ),
    # The server signs with the key the request used: flush-request's key 2.
    "flush-response": (Response(Command.FLUSH, ReplyCode.OK, Flushed(3), 2, E, 1, 8, IRT),
                       resp(0x08, 0x00, "00000003", seq=8, key_id=2, secret=b"\xaa" * 16)),
    "mode-response": (Response(Command.MODE, ReplyCode.OK, ModeReply(Mode.ENFORCE), 1, E, 1, 9, IRT),
                      resp(0x09, 0x00, "01", seq=9)),
    "list-bound-response": (
        Response(Command.LIST, ReplyCode.OK, RulesPage((RuleEntry(
            LEARNING_RULE, 0x10, 0x2000, LAST_SEEN, moved=2, learned=("eth1", h("02005e100002"))),)), 1,
            E, 1, 18, IRT),
        resp(0x05, 0x00, "0001 00 84 20 20 10 00000000 0000000000000000 0a000001 ef010203 09 04 000000000000 65746831"
             " 0000000000000010 0000000000002000 00000190a3b2c1d0"
             " 0000000000000002 01 04 02005e100002 65746831", seq=18),
    ),
    "denied-bound-response": (
        Response(Command.DENIED, ReplyCode.OK, DeniedPage((DeniedEntry(
            ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("239.1.2.3"), Reason.WRONG_MAC,
            5, 1500, 16, LAST_SEEN, "eth1", h("02005e100009")),)), 1, E, 1, 19, IRT),
        resp(0x06, 0x00, "0001 00 04 0e 10 01 0000000000000005 00000000000005dc 00000190a3b2c1d0"
             " 0a000001 ef010203 04 02005e100009 65746831", seq=19),
    ),
    "rearm-response": (Response(Command.REARM, ReplyCode.OK, Done(), 1, E, 1, 17, IRT), resp(0x0A, 0x00, "", seq=17)),
    "recv-add-response": (Response(Command.RECV_ADD, ReplyCode.OK, Done(), 1, E, 1, 20, IRT),
                          resp(0x0B, 0x00, "", seq=20)),
    "recv-remove-response": (Response(Command.RECV_REMOVE, ReplyCode.OK, Done(), 1, E, 1, 23, IRT),
                             resp(0x0C, 0x00, "", seq=23)),
    # An older musersd does not know the receiver commands.
    "recv-add-unknown-command-response": (
        Response(Command.RECV_ADD, ReplyCode.UNKNOWN_COMMAND, ErrorReply("unknown command 0x0b"), 1, E, 1, 20, IRT),
        resp(0x0B, 0x11, "14 756e6b6e6f776e20636f6d6d616e642030783062", seq=20)),
    "recv-list-response": (
        Response(Command.RECV_LIST, ReplyCode.OK, ReceiversPage((
            ReceiverEntry(RRULE, 7, LAST_SEEN), ReceiverEntry(RRULE_SSM)), RRULE_SSM.cursor), 1, E, 1, 24, IRT),
        resp(0x0D, 0x00, "0002 11 04 0a010007 20 e8010101 20 01 c000020a 00"
             " " + RRULE_HEX + " 0000000000000007 00000190a3b2c1d0"
             " " + RRULE_SSM_HEX + " 0000000000000000 0000000000000000", seq=24)),
    "recv-denied-response": (
        Response(Command.RECV_DENIED, ReplyCode.OK, DeniedJoinsPage((
            DeniedJoinEntry("eth1", ipaddress.IPv4Address("10.1.0.9"), ipaddress.IPv4Address("239.2.0.1"), None,
                            Reason.JOIN_REFUSED, 3, LAST_SEEN, 2),
            DeniedJoinEntry("eth1", ipaddress.IPv6Address("fe80::1"), ipaddress.IPv6Address("ff3e::8000:1"),
                            ipaddress.IPv6Address("2001:db8::10"), Reason.JOIN_LIMIT, 1, LAST_SEEN, 2))), 1,
            E, 1, 26, IRT),
        resp(0x0E, 0x00, "0002 00"
             " 04 0f 02 00 0000000000000003 00000190a3b2c1d0 04 0a010009 ef020001 65746831"
             " 06 10 02 01 0000000000000001 00000190a3b2c1d0 04 fe800000000000000000000000000001"
             " ff3e0000000000000000000080000001 20010db8000000000000000000000010 65746831", seq=26)),
    "recv-joined-response": (
        Response(Command.RECV_JOINED, ReplyCode.OK, JoinedPage((
            JoinedEntry("eth1", ipaddress.IPv4Address("239.1.2.3"), ipaddress.IPv4Address("10.1.0.7"),
                        LAST_SEEN - 60000, LAST_SEEN, 12, False),
            JoinedEntry("eth2", ipaddress.IPv4Address("239.1.2.4"), ipaddress.IPv4Address("10.2.0.8"),
                        LAST_SEEN - 1000, LAST_SEEN, 1, True))), 1, E, 1, 27, IRT),
        resp(0x0F, 0x00, "0002 00"
             " 04 00 04 000000000000000c 00000190a3b1d770 00000190a3b2c1d0 ef010203 0a010007 65746831"
             " 04 01 04 0000000000000001 00000190a3b2bde8 00000190a3b2c1d0 ef010204 0a020008 65746832", seq=27)),
    "recv-policy-response": (
        Response(Command.RECV_POLICY, ReplyCode.OK, PolicyReply((
            IfaceReceiversEntry(IfacePolicy.make("eth1", "closed", 20), 2, dict(
                reports=10, kept=7, refused=2, limited=1, leaves=3, rewritten=1, dropped=2, malformed=0)),
            IfaceReceiversEntry(IfacePolicy.make("eth2")))), 1, E, 1, 28, IRT),
        resp(0x10, 0x00, "02"
             " 02 0014 00000002 000000000000000a 0000000000000007 0000000000000002 0000000000000001"
             " 0000000000000003 0000000000000001 0000000000000002 0000000000000000 04 65746831"
             " 01 0000 00000000" + " 0000000000000000" * 8 + " 04 65746832", seq=28)),
    "stale-epoch-response": (
        Response(Command.ADD, ReplyCode.STALE_EPOCH, ErrorReply(""), 1, E, 1, 1, IRT),
        resp(0x02, 0x22, "00"),
    ),
    "bad-auth-notice": (
        Response(Command.ADD, ReplyCode.BAD_AUTH, ErrorReply(""), 0, 0, 1, 1, IRT),
        resp(0x02, 0x20, "00", epoch=0, key_id=0),
    ),
}


def _split(datagram: bytes, kind: str) -> tuple[bytes, bytes, bytes]:
    """(header, body, tag) of a datagram from the tables."""
    size = v2.REQUEST_HEADER_SIZE if kind == "request" else v2.RESPONSE_HEADER_SIZE
    has_tag = kind == "request" or struct.unpack_from("!H", datagram, 8)[0] != 0
    end = len(datagram) - (v2.TAG_SIZE if has_tag else 0)
    return datagram[:size], datagram[size:end], datagram[end:]


def _with_body(datagram: bytes, kind: str, body: bytes, body_len: int | None = None) -> bytes:
    """The datagram with another body, body_len fixed up (unless given) and re-signed."""
    header, _, tag = _split(datagram, kind)
    header = header[:10] + struct.pack("!H", len(body) if body_len is None else body_len) + header[12:]
    secret = KEYS.get(struct.unpack_from("!H", header, 8)[0]).secret if tag else None
    return sign(header + body, secret) if tag else header + body


# --- the table: encode and decode ------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_encode(name):
    message, wire = REQUESTS[name]
    assert v2.encode_request(message, KEYS) == wire


@pytest.mark.parametrize("name", REQUESTS)
def test_request_decode(name):
    message, wire = REQUESTS[name]
    assert v2.decode_request(wire, KEYS) == message


@pytest.mark.parametrize("name", RESPONSES)
def test_response_encode(name):
    message, wire = RESPONSES[name]
    assert v2.encode_response(message, KEYS) == wire


@pytest.mark.parametrize("name", RESPONSES)
def test_response_decode(name):
    message, wire = RESPONSES[name]
    assert v2.decode_response(wire, KEYS) == message


def test_every_command_and_reply_body_is_in_the_table():
    assert {m.command for m, _ in REQUESTS.values()} == set(Command)
    ok_commands = {m.command for m, _ in RESPONSES.values() if m.ok}
    assert ok_commands == set(Command) - {Command.REMOVE}  # REMOVE's reply is ADD's (empty)
    assert {m.command for m, _ in RESPONSES.values() if not m.ok} >= {Command.RECV_ADD}


# --- truncation, garbage, bit flips ----------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_request_truncated_and_extended(name):
    _, wire = REQUESTS[name]
    for cut in range(len(wire)):
        with pytest.raises(RemoteProtocolError):
            v2.decode_request(wire[:cut], KEYS)
    for garbage in (b"\x00", b"\x01" * 7):
        with pytest.raises(BadAuth):  # the tag is the last 32 bytes: garbage moves it
            v2.decode_request(wire + garbage, KEYS)


@pytest.mark.parametrize("name", REQUESTS)
def test_request_body_truncated_or_extended_and_resigned_is_malformed(name):
    _, wire = REQUESTS[name]
    _, body, _ = _split(wire, "request")
    for cut in range(len(body)):
        with pytest.raises(Malformed) as info:
            v2.decode_request(_with_body(wire, "request", body[:cut]), KEYS)
        assert info.value.header.authenticated
    with pytest.raises(Malformed):
        v2.decode_request(_with_body(wire, "request", body + b"\x00"), KEYS)
    with pytest.raises(Malformed):  # body_len disagreeing with the datagram
        v2.decode_request(_with_body(wire, "request", body, body_len=len(body) + 1), KEYS)


@pytest.mark.parametrize("name", RESPONSES)
def test_response_truncated_and_extended(name):
    _, wire = RESPONSES[name]
    for cut in range(len(wire)):
        with pytest.raises(RemoteProtocolError):
            v2.decode_response(wire[:cut], KEYS)
    with pytest.raises(RemoteProtocolError):
        v2.decode_response(wire + b"\x00", KEYS)


@pytest.mark.parametrize("name", RESPONSES)
def test_response_body_truncated_or_extended_and_resigned_is_malformed(name):
    _, wire = RESPONSES[name]
    _, body, _ = _split(wire, "response")
    for cut in range(len(body)):
        datagram = _with_body(wire, "response", body[:cut])
        with pytest.raises(Malformed if len(datagram) >= v2.MIN_RESPONSE_SIZE else NotV2):
            v2.decode_response(datagram, KEYS)
    with pytest.raises(Malformed):
        v2.decode_response(_with_body(wire, "response", body + b"\x00"), KEYS)


@pytest.mark.parametrize("name", REQUESTS)
def test_request_every_bit_flip_is_rejected(name):
    _, wire = REQUESTS[name]
    for i in range(len(wire) * 8):
        forged = bytearray(wire)
        forged[i // 8] ^= 1 << (i % 8)
        with pytest.raises((NotV2, UnknownKey, BadAuth)):
            v2.decode_request(bytes(forged), KEYS)


@pytest.mark.parametrize("name", [n for n, (m, _) in RESPONSES.items() if m.authenticated])
def test_response_every_bit_flip_is_rejected(name):
    _, wire = RESPONSES[name]
    for i in range(len(wire) * 8):
        forged = bytearray(wire)
        forged[i // 8] ^= 1 << (i % 8)
        try:
            decoded = v2.decode_response(bytes(forged), KEYS)
        except RemoteProtocolError:
            continue
        # flipping the key id to 0 makes an "unauthenticated notice": never trusted, and it says so
        assert not decoded.authenticated


def test_wrong_secret_and_unknown_key():
    _, wire = REQUESTS["add-request"]
    with pytest.raises(BadAuth) as info:
        v2.decode_request(wire, OTHER)
    assert not info.value.header.authenticated and info.value.header.seq == 1
    with pytest.raises(UnknownKey) as info:
        v2.decode_request(req(0x02, RULE_HEX, key_id=9), KEYS)
    assert info.value.code == ReplyCode.UNKNOWN_KEY
    _, wire = RESPONSES["add-response"]
    with pytest.raises(BadAuth):
        v2.decode_response(wire, OTHER)
    with pytest.raises(UnknownKey):
        v2.decode_response(wire, KeyRing([Key(7, SECRET)]))


def test_kinds_are_not_interchangeable():
    for _, wire in REQUESTS.values():
        with pytest.raises(NotV2):
            v2.decode_response(wire, KEYS)
    for _, wire in RESPONSES.values():
        with pytest.raises(NotV2):
            v2.decode_request(wire, KEYS)


def test_other_versions_and_magic_are_not_v2():
    _, wire = REQUESTS["hello-request"]
    for bad in (b"MAU\x01", b"MAU\x03", b"MAV\x02", b"mau\x02"):
        with pytest.raises(NotV2) as info:
            v2.decode_request(bad + wire[4:], KEYS)
        assert info.value.code is None


# --- field checks -------------------------------------------------------------------

V6_SRC = "20010db8000000000000000000000001"  # 2001:db8::1
V6_FIXED = "00000000 0000000000000000"  # no pps, no bps limit


@pytest.mark.parametrize(
    "command,body,error,why",
    [
        (0x02, "06 80 80 10" + V6_FIXED + V6_SRC + "ff020000000000000000000000000001", InvalidArgument,
         "ff02::1 is a link-scope group"),
        (0x03, "06 80 80 10" + V6_FIXED + V6_SRC + "ff320000000000000000000080000001", InvalidArgument,
         "link-scope group"),
        (0x04, "06 80 10 00" + V6_SRC + "ff020000000000000000000000000000", InvalidArgument,
         "ff02::/16 holds only link-scope groups"),
        (0x02, "06 80 80 10" + V6_FIXED + "fe800000000000000000000000000001" + "ff0e0000000000000000000000000001",
         InvalidArgument, "link-local"),
        (0x02, "06 80 80 10" + V6_FIXED + "00000000000000000000ffffc0000201" + "ff0e0000000000000000000000000001",
         InvalidArgument, "write the IPv4 address 192.0.2.1 instead"),
        (0x04, "06 80 80 00" + "ff0e0000000000000000000000000001" * 2, InvalidArgument,
         "multicast address, not a sender"),
        (0x02, "06 81 80 10" + V6_FIXED + V6_SRC + "ff0e0000000000000000000000000001", InvalidArgument,
         "exceeds 128"),
        (0x02, "06 40 80 10" + V6_FIXED + V6_SRC + "ff0e0000000000000000000000000001", InvalidArgument,
         "beyond the prefix"),
        (0x02, "06 80 80 00" + V6_FIXED + V6_SRC + "ff0e0000000000000000000000000001", InvalidArgument,
         "max TTL 0"),
        (0x02, "06 80 80 10" + V6_FIXED + V6_SRC + "0a000001", Malformed, "rule group"),
        (0x02, "04 18 1c 10 00000000 0000000000000000 0a000000 ef010200", InvalidArgument,
         "a source prefix and a group prefix"),
        (0x04, "04 00 20 00 00000000 ef010203", InvalidArgument, "source prefix /0"),
        (0x02, "04 20 00 10 00000000 0000000000000000 0a000001 00000000", InvalidArgument, "group prefix /0"),
        (0x02, "04 20 08 10 00000000 0000000000000000 0a000001 0a000000", InvalidArgument,
         "not inside the multicast range"),
        (0x02, "04 20 18 10 00000000 0000000000000000 0a000001 e0000000", InvalidArgument, "link-local"),
        (0x02, "04 01 20 10 00000000 0000000000000000 80000000 ef010203", InvalidArgument, "overlaps"),
        (0x02, "04 20 20 10 00000000 000000174876e801 0a000001 ef010203", InvalidArgument,
         "above the largest"),
        (0x02, "04 18 20 10 00000000 0000000000000000 0a000001 ef010203", InvalidArgument, "beyond the prefix"),
        (0x04, "04 20 0e 00 0a000001 efc10000", InvalidArgument, "beyond the prefix"),
        (0x02, "04 18 20 10 00000000 0000000000000000 0a000001 ef010203", InvalidArgument, "beyond the prefix"),
        (0x02, "04 21 20 10 00000000 0000000000000000 0a000001 ef010203", InvalidArgument, "exceeds 32"),
        (0x02, "04 20 20 10 00000000 0000000000000000 0a000001 0a000002", InvalidArgument, "not a multicast"),
        (0x02, "04 20 20 10 00000000 0000000000000000 0a000001 e0000005", InvalidArgument, "link-local"),
        (0x02, "04 20 20 00 00000000 0000000000000000 0a000001 ef010203", InvalidArgument, "max TTL 0"),
        (0x04, "04 20 20 00 e0000001 ef010203", InvalidArgument, "multicast address, not a sender"),
        (0x02, "05 20 20 10 00000000 0000000000000000 0a000001 ef010203", Malformed, "family"),
        (0x02, "00 20 20 10 00000000 0000000000000000 0a000001 ef010203", Malformed, "family"),
        (0x04, "04 20 20 01 0a000001 ef010203", Malformed, "reserved"),
        (0x09, "03", InvalidArgument, "mode"),
        (0x05, "0000 31" + "00" * 49, Malformed, "cursor length"),
        (0x00, "", UnknownCommand, "0x00"),
        (0x11, "", UnknownCommand, "0x11"),
        # receiver records: framing is MALFORMED, what no rule may be INVALID_ARGUMENT
        (0x0B, "05 00 18 10 04 0a010000 ef010000 65746831", Malformed, "family"),
        (0x0B, "04 02 18 10 04 0a010000 ef010000 65746831", Malformed, "flags 0x02"),
        (0x0B, "04 01 18 10 04 0a010000 ef010000 65746831", Malformed, "ends inside"),
        (0x0B, "04 00 18 10 05 0a010000 ef010000 65746831", Malformed, "ends inside"),
        (0x0B, "04 00 18 10 04 0a010000 ef010000 65746831 00", Malformed, "unexpected"),
        (0x0C, "04 00 18 10 03 0a010000 ef010000 65746831", Malformed, "unexpected"),
        (0x0B, "04 00 21 10 04 0a010000 ef010000 65746831", InvalidArgument, "exceeds 32"),
        (0x0B, "04 00 10 10 04 0a010100 ef010000 65746831", InvalidArgument, "beyond the prefix"),
        (0x0B, "04 00 18 08 04 0a010000 ef010000 65746831", InvalidArgument, "beyond the prefix"),
        (0x0B, "04 00 18 10 04 0a010000 0a010000 65746831", InvalidArgument, "multicast"),
        (0x0B, "04 00 20 20 00 e0000001 ef010000", InvalidArgument, "multicast range"),
        (0x0B, "04 01 20 20 00 0a010007 e8010101 00000000", InvalidArgument, "sender"),
        (0x0B, "04 00 18 10 04 0a010000 ef010000 6574ff31", InvalidArgument, "UTF-8"),
        (0x0B, "04 00 18 10 04 0a010000 ef010000 65742f31", InvalidArgument, "interface name"),
        (0x0B, "04 00 18 10 10 0a010000 ef010000" + "61" * 16, InvalidArgument, "longer than 15"),
        (0x0D, "0000 45" + "04" * 69, Malformed, "cursor length 69 exceeds 68"),
        (0x0E, "0000 01", Malformed, "ends inside"),
        (0x0F, "0000 00 00", Malformed, "unexpected"),
        (0x10, "", Malformed, "ends inside"),
        (0x10, "02", Malformed, "operation 2"),
        (0x10, "00 00", Malformed, "unexpected"),
        (0x10, "01 02 0014 04 657468", Malformed, "ends inside"),
        (0x10, "01 02 0014 03 65746831", Malformed, "unexpected"),
        (0x10, "01 04 0014 04 65746831", InvalidArgument, "receiver mode 4"),
        (0x10, "01 00 0014 04 65746831", InvalidArgument, "receiver mode 0"),
        (0x10, "01 02 0014 00", InvalidArgument, "empty"),
        (0xFF, "00", UnknownCommand, "0xff"),
    ],
)
def test_body_checks(command, body, error, why):
    with pytest.raises(error) as info:
        v2.decode_request(req(command, body), KEYS)
    assert why in str(info.value)
    assert info.value.header.authenticated and info.value.header.seq == 1  # the server can answer


@pytest.mark.parametrize("status,reserved", [(1, 0), (0, 1), (0xFF, 0xFF)])
def test_request_status_and_reserved_must_be_zero(status, reserved):
    with pytest.raises(Malformed):
        v2.decode_request(req(0x07, "", status=status, reserved=reserved), KEYS)


def test_unauthenticated_response_cannot_report_success():
    with pytest.raises(Malformed):
        v2.decode_response(resp(0x03, 0x00, "01", key_id=0), KEYS)  # a REPLACE "created"


def test_unknown_status_code_decodes_as_an_error():
    decoded = v2.decode_response(resp(0x02, 0x99, "02 6869"), KEYS)
    assert decoded.status == 0x99 and not decoded.ok and decoded.body == ErrorReply("hi")


@pytest.mark.parametrize(
    "command,body,why",
    [
        (0x0D, "0001 00 04 02 18 10 04 0a010000 ef010000 65746831 0000000000000000 0000000000000000", "flags"),
        (0x0D, "0001 00 04 00 21 10 04 0a010000 ef010000 65746831 0000000000000000 0000000000000000", "holds no rule"),
        (0x0D, "0001 45" + "04" * 69, "cursor length"),
        (0x0E, "0001 00 04 0f 04 00 0000000000000003 00000190a3b2c1d0 04 0a010009 ef020001 65746831", "version 4"),
        (0x0E, "0001 00 06 0f 03 00 0000000000000003 00000190a3b2c1d0 00" + "00" * 32, "MLD 1-2"),
        (0x0E, "0001 00 04 0f 00 00 0000000000000003 00000190a3b2c1d0 00 0a010009 ef020001", "version 0"),
        (0x0E, "0001 00 04 0f 02 02 0000000000000003 00000190a3b2c1d0 00 0a010009 ef020001", "flags 0x02"),
        (0x0F, "0001 00 04 02 00 0000000000000001 0000000000000000 0000000000000000 ef010203 0a010007", "flags 0x02"),
        (0x0F, "0001 00 05 00 00 0000000000000001 0000000000000000 0000000000000000 ef010203 0a010007", "family"),
        (0x10, "01 04 0000 00000000" + "00" * 64 + " 04 65746831", "receiver mode 4"),
        (0x10, "01 01 0000 00000000" + "00" * 64 + " 00", "holds no interface"),
        (0x10, "02 01 0000 00000000" + "00" * 64 + " 04 65746831", "ends inside"),
    ],
)
def test_receiver_reply_checks(command, body, why):
    with pytest.raises(Malformed) as info:
        v2.decode_response(resp(command, 0x00, body), KEYS)
    assert why in str(info.value)


def test_receiver_pages_of_the_longest_entries_and_cursor_fit_a_datagram():
    """A page as the server cuts it (RECV_PAGE_ROOM) fits, whatever the entries; the page sizes are the
    documented ones."""
    longest = ReceiverRule.make("2001:db8::/64", "ff0e::/16", source="2001:db8::10", iface="a" * 15)
    entry = ReceiverEntry(longest, 2**64 - 1, 2**64 - 1)
    denied = DeniedJoinEntry("a" * 15, ipaddress.IPv6Address("fe80::1"), ipaddress.IPv6Address("ff0e::1"),
                             ipaddress.IPv6Address("2001:db8::10"), Reason.JOIN_LIMIT, 2**64 - 1, 2**64 - 1, 2)
    joined = JoinedEntry("a" * 15, ipaddress.IPv6Address("ff0e::1"), ipaddress.IPv6Address("fe80::1"),
                         2**64 - 1, 2**64 - 1, 2**64 - 1, True)
    cursor = b"\x06" * MAX_RECEIVER_CURSOR
    for command, cls, e in ((Command.RECV_LIST, ReceiversPage, entry), (Command.RECV_DENIED, DeniedJoinsPage, denied),
                            (Command.RECV_JOINED, JoinedPage, joined)):
        n = v2.RECV_PAGE_ROOM // v2.recv_entry_size(e)
        body = cls((e,) * n, cursor)
        wire = v2.encode_response(Response(command, ReplyCode.OK, body, 1, E, 1, 1, IRT), KEYS)
        assert len(wire) <= v2.MAX_DATAGRAM and v2.decode_response(wire, KEYS).body == body
        assert len(wire) == v2.RESPONSE_HEADER_SIZE + v2.TAG_SIZE + 3 + len(cursor) + n * v2.recv_entry_size(e)
    assert len(v2._enc_receiver_entry(entry)) == v2.recv_entry_size(entry) == 84
    assert len(v2._enc_denied_join(denied)) == v2.recv_entry_size(denied) == 84
    assert len(v2._enc_joined(joined)) == v2.recv_entry_size(joined) == 74
    assert (v2.MAX_RECV_ENTRIES, v2.MAX_DENIED_JOIN_ENTRIES, v2.MAX_JOINED_ENTRIES) == (42, 42, 35)
    policies = tuple(IfaceReceiversEntry(IfacePolicy.make("b" * 15, "monitor", 65535), 2**32 - 1,
                                         dict.fromkeys(RECV_COUNTERS, 2**64 - 1))
                     for _ in range(v2.MAX_POLICY_INTERFACES))
    wire = v2.encode_response(Response(Command.RECV_POLICY, ReplyCode.OK, PolicyReply(policies), 1, E, 1, 1, IRT),
                              KEYS)
    assert len(wire) <= v2.MAX_DATAGRAM and v2.MAX_POLICY_INTERFACES == 15


def test_receiver_cursors_are_at_most_68_bytes():
    longest = ReceiverRule.make("2001:db8::/64", "ff0e::/16", source="2001:db8::10", iface="a" * 15)
    assert len(longest.cursor) == MAX_RECEIVER_CURSOR == 68
    with pytest.raises(LocalProtocolError):
        v2.encode_request(Request(RecvList(0, b"\x04" * 69), 1, E, 1, 1), KEYS)
    with pytest.raises(LocalProtocolError):
        v2.encode_request(Request(ListRules(0, b"\x04" * 49), 1, E, 1, 1), KEYS)  # LIST keeps its 48
    wire = v2.encode_request(Request(RecvJoined(0, longest.cursor), 1, E, 1, 1), KEYS)
    assert v2.decode_request(wire, KEYS).body == RecvJoined(0, longest.cursor)


def test_v2_is_never_confused_with_v1():
    assert v2.MIN_REQUEST_SIZE > 11 and v2.MIN_RESPONSE_SIZE > 11
    for _, wire in (*REQUESTS.values(), *RESPONSES.values()):
        assert len(wire) > 11


# --- sizes -----------------------------------------------------------------------------

V6_RULE_OBJ = Rule(RuleKey(ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("ff3e::1")), 64)
V6_DENIED = DeniedEntry(ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("ff3e::1"), Reason.TTL,
                        2**64 - 1, 2**64 - 1, 255, 2**64 - 1)


def test_a_full_page_of_the_largest_entries_fits_a_datagram():
    entries = tuple(RuleEntry(V6_RULE_OBJ, 2**64 - 1, 2**64 - 1, 2**64 - 1) for _ in range(v2.MAX_LIST_ENTRIES))
    page = Response(Command.LIST, ReplyCode.OK, RulesPage(entries, b"\xff" * 32), 1, E, 1, 1, IRT)
    assert len(v2.encode_response(page, KEYS)) <= v2.MAX_DATAGRAM
    too_many = Response(Command.LIST, ReplyCode.OK, RulesPage(entries + entries[:1], b"\xff" * 32), 1, E, 1, 1, IRT)
    with pytest.raises(LocalProtocolError):
        v2.encode_response(too_many, KEYS)
    denied = tuple(V6_DENIED for _ in range(v2.MAX_DENIED_ENTRIES))
    page = Response(Command.DENIED, ReplyCode.OK, DeniedPage(denied, b"\xff" * 32), 1, E, 1, 1, IRT)
    assert len(v2.encode_response(page, KEYS)) <= v2.MAX_DATAGRAM
    assert v2.MAX_LIST_ENTRIES == 17 and v2.MAX_DENIED_ENTRIES == 21


def test_ipv6_entries_decode_next_to_ipv4_ones():
    entries = (RuleEntry(RULE, 4, 5, 6), RuleEntry(V6_RULE_OBJ, 1, 2, 3),
               RuleEntry(Rule.make("2001:db8::10", "ff15::/16", 8, pps=10), 0, 0, 0))
    wire = v2.encode_response(Response(Command.LIST, ReplyCode.OK, RulesPage(entries), 1, E, 1, 1, IRT), KEYS)
    assert v2.decode_response(wire, KEYS).body.entries == entries
    wire = v2.encode_response(Response(Command.DENIED, ReplyCode.OK, DeniedPage((V6_DENIED,)), 1, E, 1, 1, IRT), KEYS)
    assert v2.decode_response(wire, KEYS).body.entries == (V6_DENIED,)


def test_a_rule_from_another_router_that_this_one_would_refuse_does_not_decode():
    """A LIST entry is checked as a request's rule is: a link-scope group is INVALID_ARGUMENT, not a rule."""
    body = ("0001 00" + "06 80 80 10" + V6_FIXED + V6_SRC + "ff020000000000000000000000000001"
            + "0000000000000000" * 3)
    with pytest.raises(InvalidArgument, match="link-scope"):
        v2.decode_response(resp(0x05, 0x00, body), KEYS)


def test_long_error_messages_are_cut_on_a_character_boundary():
    wire = v2.encode_response(Response(Command.ADD, ReplyCode.INTERNAL, ErrorReply("é" * 200), 1, E, 1, 1, IRT), KEYS)
    message = v2.decode_response(wire, KEYS).body.message
    assert message == "é" * 127  # 254 bytes: the 128th "é" would need 256


@pytest.mark.parametrize(
    "build",
    [
        lambda: v2.encode_request(Request(Add(RULE), 1, 2**64, 1, 1), KEYS),
        lambda: v2.encode_request(Request(Add(RULE), 1, E, 1, -1), KEYS),
        lambda: v2.encode_request(Request(Add(RULE), 3, E, 1, 1), KEYS),  # key not in the ring
        lambda: v2.encode_request(Request("add", 1, E, 1, 1), KEYS),
        lambda: v2.encode_request(Request(ListRules(70000), 1, E, 1, 1), KEYS),
        lambda: v2.encode_request(Request(ListRules(0, b"x" * (v2.MAX_CURSOR + 1)), 1, E, 1, 1), KEYS),
        lambda: v2.encode_response(Response(Command.ADD, ReplyCode.OK, Flushed(1), 1, E, 1, 1, IRT), KEYS),
        lambda: v2.encode_response(Response(Command.ADD, ReplyCode.OK, Done(), 0, E, 1, 1, IRT), KEYS),
        lambda: v2.encode_response(Response(Command.ADD, ReplyCode.EXISTS, Done(), 1, E, 1, 1, IRT), KEYS),
        lambda: v2.encode_response(Response(Command.ADD, ReplyCode.OK, Done(), 1, E, 1, 1, b"short"), KEYS),
        lambda: v2.encode_response(Response(Command.HELLO, ReplyCode.OK,
                                            HelloReply(1, 1, 1, Mode.ENFORCE, "x" * 65), 1, E, 0, 1, IRT), KEYS),
        lambda: v2.encode_response(Response(Command.ADD, ReplyCode.OK, Done(), 1, E, 1, 1, IRT), None),
    ],
)
def test_encode_misuse_is_a_local_protocol_error(build):
    with pytest.raises(LocalProtocolError):
        build()


# --- Hypothesis ----------------------------------------------------------------------

u8, u16, u32, u64 = (st.integers(0, 2**n - 1) for n in (8, 16, 32, 64))
sources = st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address)
groups = st.integers(0xE0000100, 0xEFFFFFFF).map(ipaddress.IPv4Address)
source_prefixes = st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
                            st.integers(0x01000000, 0xDFFFFFFF), st.integers(4, 31))
group_prefixes = st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
                           st.integers(0xE0000100, 0xEFFFFFFF), st.integers(4, 23))
# IPv6: sources in 2000::/3 (global unicast), groups of scope 3 and up (ff03:: .. ff0f::, ff13:: ...)
sources6 = st.integers(0x2 << 125, (0x4 << 125) - 1).map(ipaddress.IPv6Address)
groups6 = st.builds(lambda flags, scope, rest: ipaddress.IPv6Address((0xFF << 120) | (flags << 116) | (scope << 112)
                                                                     | rest),
                    st.integers(0, 15), st.integers(3, 15), st.integers(0, 2**112 - 1))
source_prefixes6 = st.builds(lambda a, n: ipaddress.IPv6Network((a, n), strict=False),
                             st.integers(0x2 << 125, (0x4 << 125) - 1), st.integers(3, 127))
group_prefixes6 = st.builds(lambda g, n: ipaddress.IPv6Network((g, n), strict=False), groups6, st.integers(16, 127))
rule_keys = st.one_of(st.builds(RuleKey.make, sources, groups), st.builds(RuleKey.make, source_prefixes, groups),
                      st.builds(RuleKey.make, sources, group_prefixes),
                      st.builds(RuleKey.make, sources6, groups6), st.builds(RuleKey.make, source_prefixes6, groups6),
                      st.builds(RuleKey.make, sources6, group_prefixes6))
rules = st.builds(lambda k, ttl, pps, bps: Rule.make(k.source, k.group, ttl, pps=pps, bps=bps), rule_keys,
                  st.integers(1, 255), st.one_of(st.just(0), u32), st.one_of(st.just(0), st.integers(1, 10**11)))
cursors = st.binary(max_size=v2.MAX_CURSOR)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
modes = st.sampled_from(Mode)
any_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
any_v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)

# Receivers: hosts or prefixes (0.0.0.0/0 and fe80::/10 included), groups or ranges, a source or none, an
# interface or none.
iface_names = st.sampled_from(["", "eth1", "br-lan.100", "a" * 15, "wlan\u00e9"])
receivers4 = st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False), st.integers(0, 0xDFFFFFFF),
                       st.integers(0, 32)).filter(lambda n: not n.overlaps(ipaddress.IPv4Network("224.0.0.0/4"))
                                                  or n.prefixlen == 0)
receivers6 = st.builds(lambda a, n: ipaddress.IPv6Network((a, n), strict=False), sources6 | st.just(
    ipaddress.IPv6Address("fe80::1")), st.integers(0, 128))
receiver_rules = st.one_of(
    st.builds(ReceiverRule.make, receivers4, st.one_of(groups, group_prefixes), st.one_of(st.none(), sources),
              iface_names),
    st.builds(ReceiverRule.make, receivers6, st.one_of(groups6, group_prefixes6), st.one_of(st.none(), sources6),
              iface_names),
)
receiver_cursors = st.binary(max_size=MAX_RECEIVER_CURSOR)
iface_policies = st.builds(IfacePolicy.make, iface_names.filter(bool), st.sampled_from(["open", "closed", "monitor"]),
                           u16)

request_bodies = st.one_of(
    st.just(Hello()), st.builds(Add, rules), st.builds(Replace, rules), st.builds(Remove, rule_keys),
    st.builds(ListRules, u16, cursors), st.builds(ListDenied, u16, cursors), st.just(GetCounters()),
    st.just(Flush()), st.builds(ModeRequest, st.one_of(st.none(), modes)),
    st.builds(RecvAdd, receiver_rules), st.builds(RecvRemove, receiver_rules),
    st.builds(RecvList, u16, receiver_cursors), st.builds(RecvDenied, u16, receiver_cursors),
    st.builds(RecvJoined, u16, receiver_cursors), st.builds(RecvPolicy, st.one_of(st.none(), iface_policies)),
)
requests = st.builds(Request, request_bodies, st.sampled_from([1, 2]), u64, u64, u64)

denied_entries = st.one_of(
    st.builds(DeniedEntry, any_v4, any_v4, st.sampled_from(Reason), u64, u64, u8, u64),
    st.builds(DeniedEntry, any_v6, any_v6, st.sampled_from(Reason), u64, u64, u8, u64),
)
denied_joins = st.one_of(
    st.builds(DeniedJoinEntry, iface_names, any_v4, any_v4, st.one_of(st.none(), any_v4), st.sampled_from(Reason),
              u64, u64, st.integers(1, 3)),
    st.builds(DeniedJoinEntry, iface_names, any_v6, any_v6, st.one_of(st.none(), any_v6), st.sampled_from(Reason),
              u64, u64, st.integers(1, 2)),
)
joined_entries = st.one_of(
    st.builds(JoinedEntry, iface_names, any_v4, any_v4, u64, u64, u64, st.booleans()),
    st.builds(JoinedEntry, iface_names, any_v6, any_v6, u64, u64, u64, st.booleans()),
)
iface_receivers = st.builds(IfaceReceiversEntry, iface_policies, u32,
                            st.fixed_dictionaries({name: u64 for name in RECV_COUNTERS}))
ok_bodies = st.one_of(
    st.tuples(st.just(Command.HELLO), st.builds(HelloReply, u64, u64, u32, modes, texts)),
    st.tuples(st.sampled_from([Command.ADD, Command.REMOVE]), st.just(Done())),
    st.tuples(st.just(Command.REPLACE), st.builds(Replaced, st.booleans())),
    st.tuples(st.just(Command.LIST), st.builds(
        RulesPage, st.lists(st.builds(RuleEntry, rules, u64, u64, u64), max_size=v2.MAX_LIST_ENTRIES).map(tuple),
        cursors)),
    st.tuples(st.just(Command.DENIED), st.builds(
        DeniedPage, st.lists(denied_entries, max_size=v2.MAX_DENIED_ENTRIES).map(tuple), cursors)),
    st.tuples(st.just(Command.COUNTERS), st.builds(
        Counters, u32, modes, texts,
        st.lists(st.builds(ReasonCounter, st.sampled_from(Reason), u64, u64), max_size=6).map(tuple))),
    st.tuples(st.just(Command.FLUSH), st.builds(Flushed, u32)),
    st.tuples(st.just(Command.MODE), st.builds(ModeReply, modes)),
    st.tuples(st.sampled_from([Command.RECV_ADD, Command.RECV_REMOVE]), st.just(Done())),
    st.tuples(st.just(Command.RECV_LIST), st.builds(
        ReceiversPage, st.lists(st.builds(ReceiverEntry, receiver_rules, u64, u64), max_size=14).map(tuple),
        receiver_cursors)),
    st.tuples(st.just(Command.RECV_DENIED), st.builds(
        DeniedJoinsPage, st.lists(denied_joins, max_size=14).map(tuple), receiver_cursors)),
    st.tuples(st.just(Command.RECV_JOINED), st.builds(
        JoinedPage, st.lists(joined_entries, max_size=16).map(tuple), receiver_cursors)),
    st.tuples(st.just(Command.RECV_POLICY), st.builds(
        PolicyReply, st.lists(iface_receivers, max_size=v2.MAX_POLICY_INTERFACES).map(tuple))),
)


@st.composite
def responses(draw):
    if draw(st.booleans()):
        command, body = draw(ok_bodies)
        status, key_id = ReplyCode.OK, draw(st.sampled_from([1, 2]))
    else:
        command = draw(st.sampled_from(Command))
        status = draw(st.sampled_from([c for c in ReplyCode if c != ReplyCode.OK]))
        body, key_id = ErrorReply(draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))), \
            draw(st.sampled_from([0, 1, 2]))
    return Response(command, status, body, key_id, draw(u64), draw(u64), draw(u64),
                    draw(st.binary(min_size=16, max_size=16)))


@given(requests)
def test_request_round_trip(message):
    wire = v2.encode_request(message, KEYS)
    assert len(wire) <= v2.MAX_DATAGRAM
    assert v2.decode_request(wire, KEYS) == message


@given(responses())
def test_response_round_trip(message):
    wire = v2.encode_response(message, KEYS)
    assert len(wire) <= v2.MAX_DATAGRAM
    assert v2.decode_response(wire, KEYS) == message


def _decodes_or_protocol_error(decode, data):
    try:
        decode(data)
    except ProtocolError:
        pass  # anything else escaping is a bug


@given(st.binary(max_size=200))
def test_random_bytes_give_a_message_or_a_protocol_error(data):
    _decodes_or_protocol_error(lambda d: v2.decode_request(d, KEYS), data)
    _decodes_or_protocol_error(lambda d: v2.decode_response(d, KEYS), data)
    _decodes_or_protocol_error(lambda d: v2.decode_request(b"MAU\x02\x01" + d, KEYS), data)
    _decodes_or_protocol_error(lambda d: v2.decode_response(b"MAU\x02\x02" + d, KEYS), data)


@given(u8, u8, u8, st.binary(max_size=120), st.booleans())
def test_random_signed_bodies_give_a_message_or_a_protocol_error(command, status, reserved, body, fix_len):
    """Past the tag check: random content that authenticates, so the body parsers get fuzzed."""
    sizes = len(body) if fix_len else len(body) ^ 1
    request = sign(b"MAU\x02\x01" + struct.pack("!BBBHHQQQ", command, status if not fix_len else 0,
                                                reserved if not fix_len else 0, 1, sizes, E, 1, 1) + body)
    _decodes_or_protocol_error(lambda d: v2.decode_request(d, KEYS), request)
    response = sign(b"MAU\x02\x02" + struct.pack("!BBBHHQQQ", command, status % 3 if fix_len else status,
                                                 0 if fix_len else reserved, 1, sizes, E, 1, 1) + IRT + body)
    _decodes_or_protocol_error(lambda d: v2.decode_response(d, KEYS), response)


@given(st.sampled_from(sorted(REQUESTS)), st.integers(0, 10**6), u8)
def test_random_body_mutations_resigned(name, where, value):
    _, wire = REQUESTS[name]
    _, body, _ = _split(wire, "request")
    if not body:
        return
    mutated = bytearray(body)
    mutated[where % len(body)] = value
    _decodes_or_protocol_error(lambda d: v2.decode_request(d, KEYS), _with_body(wire, "request", bytes(mutated)))


# --- the document shows these vectors ---------------------------------------------------


def _doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text(encoding="utf-8")
    found = {}
    for name, block in re.findall(r"<!-- vector: ([\w-]+) -->\s*```[^\n]*\n(.*?)```", text, re.S):
        found[name] = h("".join(line.split("|")[0] for line in block.splitlines()))
    return found


def test_document_vectors_match_the_codec():
    vectors = _doc_vectors()
    assert vectors, "docs/protocol.md shows no test vectors"
    table = {name: wire for name, (_, wire) in (*REQUESTS.items(), *RESPONSES.items())}
    for name, wire in vectors.items():
        assert table[name] == wire, name
    assert {"hello-request", "add-request", "hello-response", "add-response"} <= set(vectors)
    # Every request and response of the receiver commands is shown.
    assert {name for name in (*REQUESTS, *RESPONSES) if name.startswith("recv-")} <= set(vectors)


def test_the_ipv6_cursor_vector_is_the_cursor_of_its_rule_key():
    key = RuleKey.make("2001:db8::10", "ff0e::db8:1")
    assert key.cursor == CURSOR6 and len(CURSOR6) == 35 <= v2.MAX_CURSOR
    assert "list-request-ipv6-cursor" in _doc_vectors()
    request = v2.decode_request(REQUESTS["list-request-ipv6-cursor"][1], KEYS)
    assert request.body.cursor == key.cursor


def test_a_page_with_the_longest_cursor_and_the_most_ipv6_entries_fits_a_datagram():
    rule6 = Rule.make("2001:db8::10", "ff0e::db8:1", 8, pps=1, bps=1)
    entries = tuple(RuleEntry(rule6, 2**64 - 1, 2**64 - 1, 2**64 - 1) for _ in range(v2.MAX_LIST_ENTRIES))
    denied = tuple(DeniedEntry(ipaddress.IPv6Address("2001:db8::10"), ipaddress.IPv6Address("ff0e::db8:1"),
                               Reason.TTL, 2**64 - 1, 2**64 - 1, 255, 2**64 - 1)
                   for _ in range(v2.MAX_DENIED_ENTRIES))
    for command, body in ((Command.LIST, RulesPage(entries, b"\x06" * v2.MAX_CURSOR)),
                          (Command.DENIED, DeniedPage(denied, b"\x06" * v2.MAX_CURSOR))):
        wire = v2.encode_response(Response(command, ReplyCode.OK, body, 1, E, 1, 1, IRT), KEYS)
        assert len(wire) <= v2.MAX_DATAGRAM
        assert v2.decode_response(wire, KEYS).body == body


# --- reasons a newer server may send (docs/protocol.md, "COUNTERS") --------------------


def test_an_unknown_reason_code_decodes_keeps_its_code_and_encodes_back():
    counters = resp(0x07, 0x00, "00000003 02 03 786470 02 01 0000000000000064 00000000000249f0"
                                " 14 0000000000000005 00000000000005dc", seq=7)
    body = v2.decode_response(counters, KEYS).body
    unknown = body.reasons[1].reason
    assert body.reasons[0].reason is Reason.PASSED and unknown.known is False and Reason.PASSED.known
    assert unknown == 20 and isinstance(unknown, Reason) and str(unknown) == "unknown_20"
    assert unknown is Reason(20) and body.by_reason()[Reason(20)].packets == 5
    assert v2.encode_response(Response(Command.COUNTERS, ReplyCode.OK, body, 1, E, 1, 7, IRT), KEYS) == counters
    denied = resp(0x06, 0x00, "0001 00 04 ff 40 00 0000000000000005 00000000000005dc 00000190a3b2c1d0"
                              " 0a000009 ef000001", seq=6)
    entry = v2.decode_response(denied, KEYS).body.entries[0]
    assert entry.reason == 255 and str(entry.reason) == "unknown_255"
    assert v2.encode_response(Response(Command.DENIED, ReplyCode.OK, v2.decode_response(denied, KEYS).body, 1, E,
                                       1, 6, IRT), KEYS) == denied
    # Every code of the byte decodes (0 too: never a reason, still a newer server's business);
    # the known set is what this version lists, and nothing outside a byte is a reason.
    assert [int(Reason(n)) for n in range(256)] == list(range(256))
    assert [r.value for r in Reason] == list(range(1, 17))
    for bad in (256, -1, "ttl", None):
        with pytest.raises(ValueError):
            Reason(bad)


def test_each_response_vector_is_signed_with_the_key_of_its_request():
    """docs/protocol.md: the server signs its response with the key the request used."""
    requests = {(r.command, r.seq): r.key_id for r, _ in REQUESTS.values()}
    answered = 0
    for name, (response, wire) in RESPONSES.items():
        key_id = struct.unpack_from("!H", wire, 8)[0]
        if (response.command, response.seq) in requests and key_id:
            assert key_id == requests[response.command, response.seq], name
            answered += 1
    assert answered >= 8 and struct.unpack_from("!H", RESPONSES["flush-response"][1], 8)[0] == 2
    assert "\"bpf\"" not in DOC.read_text(encoding="utf-8")
