"""Protocol v1 codec: byte-exact with the original design's message (docs/protocol.md, "Version 1").

One table of (message, bytes) rows drives encode and decode; every row is
also fed truncated byte by byte and with trailing garbage; Hypothesis
round-trips; random bytes give a message or a ProtocolError, nothing else.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol import v1
from mauthcore.protocol.errors import (
    InvalidArgument,
    LocalProtocolError,
    Malformed,
    NotV1,
    ProtocolError,
    ReplyCode,
    UnknownCommand,
)
from mauthcore.protocol.v1 import V1Add, V1Remove, V1Response, V1Type
from mauthcore.rules import Binding, Rule, RuleKey

REQUESTS = [
    # seq cmd source       group        ttl
    (V1Add(0, Rule.make("10.0.0.1", "239.1.2.3", 16)), "00 00 0a000001 ef010203 10"),
    (V1Add(255, Rule.make("192.168.1.10", "224.2.127.254", 255)), "ff 00 c0a8010a e0027ffe ff"),
    (V1Add(0x80, Rule.make("172.16.5.4", "224.0.1.1", 1)), "80 00 ac100504 e0000101 01"),
    (V1Remove(7, RuleKey.make("10.0.0.1", "239.1.2.3")), "07 01 0a000001 ef010203 00"),
    (V1Remove(200, RuleKey.make("10.9.8.7", "239.255.255.255"), 42), "c8 01 0a090807 efffffff 2a"),
]
RESPONSES = [
    (V1Response(V1Type.ACK, 0), "00 00"),
    (V1Response(V1Type.ACK, 7), "00 07"),
    (V1Response(V1Type.ERROR, 200), "01 c8"),
    (V1Response(V1Type.ERROR, 255), "01 ff"),
]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("message,wire", REQUESTS)
def test_request_encode(message, wire):
    assert v1.encode_request(message) == h(wire)


@pytest.mark.parametrize("message,wire", REQUESTS)
def test_request_decode(message, wire):
    assert v1.decode_request(h(wire)) == message


@pytest.mark.parametrize("message,wire", RESPONSES)
def test_response_encode(message, wire):
    assert v1.encode_response(message) == h(wire)


@pytest.mark.parametrize("message,wire", RESPONSES)
def test_response_decode(message, wire):
    assert v1.decode_response(h(wire)) == message


@pytest.mark.parametrize("message,wire", REQUESTS)
def test_request_truncated_or_extended_is_not_v1(message, wire):
    data = h(wire)
    for cut in range(len(data)):
        with pytest.raises(NotV1) as info:
            v1.decode_request(data[:cut])
        assert info.value.code is None  # the server stays silent
    for garbage in (b"\x00", b"\xff" * 5):
        with pytest.raises(NotV1):
            v1.decode_request(data + garbage)


@pytest.mark.parametrize("message,wire", RESPONSES)
def test_response_truncated_or_extended_is_not_v1(message, wire):
    data = h(wire)
    for cut in range(len(data)):
        with pytest.raises(NotV1):
            v1.decode_response(data[:cut])
    with pytest.raises(NotV1):
        v1.decode_response(data + b"\x00")


def test_sizes_match_version_1():
    assert v1.REQUEST_SIZE == 11 and v1.RESPONSE_SIZE == 2


@pytest.mark.parametrize("command", [0x02, 0x03, 0x7F, 0x80, 0xFF])
def test_unknown_command_carries_seq(command):
    with pytest.raises(UnknownCommand) as info:
        v1.decode_request(bytes([0x2A, command]) + h("0a000001 ef010203 10"))
    assert info.value.seq == 0x2A
    assert info.value.code == ReplyCode.UNKNOWN_COMMAND


@pytest.mark.parametrize(
    "wire,why",
    [
        ("05 00 0a000001 0a000002 10", "not a multicast"),  # group is unicast
        ("05 00 0a000001 e0000005 10", "link-local"),  # 224.0.0.5: OSPF, always passed
        ("05 00 0a000001 ef010203 00", "max TTL 0"),  # TTL 0
        ("05 00 e0000101 ef010203 10", "multicast address, not a sender"),  # source multicast
        ("05 00 00000000 ef010203 10", "cannot be the address"),  # source 0.0.0.0
        ("05 00 ffffffff ef010203 10", "cannot be the address"),  # source broadcast
        ("05 01 0a000001 0a000002 10", "not a multicast"),  # remove checks the group too
    ],
)
def test_invalid_rule_is_invalid_argument_with_seq(wire, why):
    with pytest.raises(InvalidArgument) as info:
        v1.decode_request(h(wire))
    assert info.value.seq == 5
    assert why in str(info.value)


def test_remove_ignores_max_ttl():
    for ttl in (0, 1, 255):
        message = v1.decode_request(bytes([9, 1]) + h("0a000001 ef010203") + bytes([ttl]))
        assert message.key == RuleKey.make("10.0.0.1", "239.1.2.3")


def test_unknown_response_type_is_malformed():
    with pytest.raises(Malformed):
        v1.decode_response(h("02 07"))


@pytest.mark.parametrize(
    "message",
    [
        V1Add(256, Rule.make("10.0.0.1", "239.1.2.3", 16)),
        V1Add(-1, Rule.make("10.0.0.1", "239.1.2.3", 16)),
        V1Remove(1, RuleKey.make("10.0.0.1", "239.1.2.3"), 300),
        V1Add(1, Rule(RuleKey(ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("ff3e::1")), 5)),
        "not a request",
    ],
)
def test_encode_refuses_what_v1_cannot_say(message):
    with pytest.raises(LocalProtocolError):
        v1.encode_request(message)


@pytest.mark.parametrize(
    "seq,last,newer",
    [
        (1, 0, True),
        (0, 0, False),
        (0, 255, True),  # wrap
        (127, 0, True),  # the far edge of "newer"
        (128, 0, False),  # exactly half the space: undefined in RFC 1982, never newer here
        (129, 0, False),
        (255, 0, False),
        (10, 20, False),
        (99, 228, True),  # distance 127 across the wrap
        (100, 228, False),  # distance 128
    ],
)
def test_serial_number_arithmetic(seq, last, newer):
    assert v1.seq_newer(seq, last) is newer


# --- Hypothesis ---------------------------------------------------------------

sources = st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address)
groups = st.integers(0xE0000100, 0xEFFFFFFF).map(ipaddress.IPv4Address)
rules = st.builds(Rule.make, sources, groups, st.integers(1, 255))
seqs = st.integers(0, 255)
requests = st.one_of(
    st.builds(V1Add, seqs, rules),
    st.builds(V1Remove, seqs, st.builds(RuleKey.make, sources, groups), st.integers(0, 255)),
)


@given(requests)
def test_request_round_trip(message):
    data = v1.encode_request(message)
    assert len(data) == 11
    assert v1.decode_request(data) == message


@given(st.builds(V1Response, st.sampled_from(V1Type), seqs))
def test_response_round_trip(message):
    assert v1.decode_response(v1.encode_response(message)) == message


@given(st.one_of(st.binary(max_size=24), st.binary(min_size=11, max_size=11)))
def test_random_bytes_give_a_request_or_a_protocol_error(data):
    try:
        message = v1.decode_request(data)
    except ProtocolError:
        return
    assert v1.encode_request(message) == data  # a valid request re-encodes to the same bytes


@given(st.binary(max_size=4))
def test_random_bytes_give_a_response_or_a_protocol_error(data):
    try:
        message = v1.decode_response(data)
    except ProtocolError:
        return
    assert v1.encode_response(message) == data


@pytest.mark.parametrize("rule, why", [
    (Rule.make("192.0.2.0/24", "239.1.1.1", 4), "source prefix 192.0.2.0/24"),
    (Rule.make("192.0.2.10", "239.192.0.0/14", 4), "group prefix 239.192.0.0/14"),
    (Rule.make("192.0.2.10", "239.1.1.1", 4, pps=100), "no rate limits"),
    (Rule.make("192.0.2.10", "239.1.1.1", 4, binding=Binding.make("eth1")), "no binding"),
])
def test_v1_refuses_what_it_cannot_carry_instead_of_dropping_it(rule, why):
    with pytest.raises(LocalProtocolError, match=why):
        v1.encode_request(V1Add(1, rule))


@pytest.mark.parametrize("key", [RuleKey.make("192.0.2.0/24", "239.1.1.1"), RuleKey.make("192.0.2.1", "239.0.0.0/8")])
def test_v1_cannot_remove_a_prefix_rule(key):
    with pytest.raises(LocalProtocolError, match="host addresses only"):
        v1.encode_request(V1Remove(1, key))
