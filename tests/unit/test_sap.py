"""SAP codec (RFC 2974): one table drives encode and decode, then truncation,
trailing garbage, caps against zip bombs, a Hypothesis round trip and the
invariant "random bytes give a message or a SAPDecodeError"."""

from __future__ import annotations

import contextlib
import ipaddress
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sap.errors import SAPDecodeError, SAPError, SAPUsageError
from sap.sap import (
    MIME_SDP,
    SAP_GROUP_IPV4_GLOBAL,
    SAP_PORT,
    SAPMessage,
    announcement,
    announcement_interval,
    decode,
    deletion,
    encode,
    make_msg_id_hash,
    sap_group_ipv6,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

SDP = (
    b"v=0\r\n"
    b"o=- 3953606412 3953606412 IN IP4 192.0.2.55\r\n"
    b"s=Lobby camera\r\n"
    b"c=IN IP4 239.255.12.42/255\r\n"
    b"t=0 0\r\n"
    b"m=video 5004 RTP/AVP 33\r\n"
)
ORIGIN_LINE = b"o=- 3953606412 3953606412 IN IP4 192.0.2.55\r\n"
AUTH = bytes.fromhex("20" + "01" * 6 + "02")  # V=1 P=0 PGP, subheader, 2 words
V6_SRC = V6("2001:db8::55")


def _hdr(flags: int, auth_words: int, msg_hash: int, origin: bytes) -> bytes:
    return bytes((flags, auth_words)) + msg_hash.to_bytes(2, "big") + origin


# (id, message, wire bytes). Every row is decoded and encoded; the compressed
# row's deflate stream is produced by the same zlib the encoder uses.
ROWS = [
    (
        "announcement-with-type",
        SAPMessage(origin=V4("192.0.2.55"), msg_id_hash=0x1234, payload=SDP),
        _hdr(0x20, 0, 0x1234, bytes([192, 0, 2, 55])) + b"application/sdp\0" + SDP,
    ),
    (
        "announcement-sapv1-no-type",
        SAPMessage(origin=V4("192.0.2.55"), msg_id_hash=0xBEEF, payload=SDP, payload_type=None),
        _hdr(0x20, 0, 0xBEEF, bytes([192, 0, 2, 55])) + SDP,
    ),
    (
        "sapv0-zero-hash-zero-origin",
        SAPMessage(origin=V4("0.0.0.0"), msg_id_hash=0, payload=SDP, payload_type=None, version=0),
        _hdr(0x00, 0, 0, bytes(4)) + SDP,
    ),
    (
        "deletion",
        SAPMessage(origin=V4("192.0.2.55"), msg_id_hash=0x1234, payload=ORIGIN_LINE, is_deletion=True),
        _hdr(0x24, 0, 0x1234, bytes([192, 0, 2, 55])) + b"application/sdp\0" + ORIGIN_LINE,
    ),
    (
        "ipv6-origin",
        SAPMessage(origin=V6_SRC, msg_id_hash=0x0001, payload=SDP),
        _hdr(0x30, 0, 1, V6_SRC.packed) + b"application/sdp\0" + SDP,
    ),
    (
        "ipv6-deletion-authenticated",
        SAPMessage(origin=V6_SRC, msg_id_hash=0xFFFF, payload=ORIGIN_LINE, is_deletion=True, auth_data=AUTH),
        _hdr(0x34, 2, 0xFFFF, V6_SRC.packed) + AUTH + b"application/sdp\0" + ORIGIN_LINE,
    ),
    (
        "authenticated",
        SAPMessage(origin=V4("198.51.100.7"), msg_id_hash=0x4242, payload=SDP, auth_data=AUTH),
        _hdr(0x20, 2, 0x4242, bytes([198, 51, 100, 7])) + AUTH + b"application/sdp\0" + SDP,
    ),
    (
        "encrypted",
        SAPMessage(
            origin=V4("198.51.100.7"),
            msg_id_hash=0x0BAD,
            payload=b"\x8f\x01ciphertext\x00\xff",
            payload_type=None,
            encrypted=True,
        ),
        _hdr(0x22, 0, 0x0BAD, bytes([198, 51, 100, 7])) + b"\x8f\x01ciphertext\x00\xff",
    ),
    (
        "encrypted-compressed-authenticated",
        SAPMessage(
            origin=V4("198.51.100.7"),
            msg_id_hash=0x0BAE,
            payload=b"opaque",
            payload_type=None,
            encrypted=True,
            compressed=True,
            auth_data=AUTH,
        ),
        _hdr(0x23, 2, 0x0BAE, bytes([198, 51, 100, 7])) + AUTH + b"opaque",
    ),
    (
        "compressed",
        SAPMessage(origin=V4("192.0.2.55"), msg_id_hash=0x5A5A, payload=SDP, compressed=True),
        _hdr(0x21, 0, 0x5A5A, bytes([192, 0, 2, 55])) + zlib.compress(b"application/sdp\0" + SDP, 9),
    ),
    (
        "other-payload-type",
        SAPMessage(
            origin=V4("192.0.2.55"), msg_id_hash=7, payload=b"<xml/>", payload_type="application/x-sd+xml"
        ),
        _hdr(0x20, 0, 7, bytes([192, 0, 2, 55])) + b"application/x-sd+xml\0<xml/>",
    ),
    (
        "type-with-empty-payload",
        SAPMessage(origin=V4("192.0.2.55"), msg_id_hash=8, payload=b""),
        _hdr(0x20, 0, 8, bytes([192, 0, 2, 55])) + b"application/sdp\0",
    ),
]
IDS = [row[0] for row in ROWS]


@pytest.mark.parametrize(("name", "message", "wire"), ROWS, ids=IDS)
def test_decode_table(name, message, wire):
    assert decode(wire) == message


@pytest.mark.parametrize(("name", "message", "wire"), ROWS, ids=IDS)
def test_encode_table(name, message, wire):
    assert encode(message) == wire


@pytest.mark.parametrize(("name", "message", "wire"), ROWS, ids=IDS)
def test_truncated_byte_by_byte(name, message, wire):
    header = 4 + len(message.origin.packed) + len(message.auth_data)
    for n in range(len(wire)):
        try:
            got = decode(wire[:n])
        except SAPDecodeError as exc:
            assert exc.reason
            continue
        assert n > header, f"{n} bytes cannot hold a whole header"
        assert got.origin == message.origin and got.msg_id_hash == message.msg_id_hash


@pytest.mark.parametrize(("name", "message", "wire"), ROWS, ids=IDS)
@pytest.mark.parametrize("garbage", [b"\0", b"\xff\xfe garbage", b"x" * 100])
def test_trailing_garbage(name, message, wire, garbage):
    try:
        got = decode(wire + garbage)
    except SAPDecodeError:
        # Only a compressed payload has an end of its own to check.
        assert message.compressed and not message.encrypted
        return
    assert got.payload == message.payload + garbage


def test_reserved_bit_is_ignored():
    wire = bytearray(ROWS[0][2])
    wire[0] |= 0x08
    assert decode(bytes(wire)) == ROWS[0][1]


@pytest.mark.parametrize("version", [2, 3, 7])
def test_unknown_versions_are_refused(version):
    wire = bytearray(ROWS[0][2])
    wire[0] = (wire[0] & 0x1F) | (version << 5)
    with pytest.raises(SAPDecodeError) as info:
        decode(bytes(wire))
    assert info.value.reason == "version"


def test_auth_length_is_in_32_bit_words():
    # auth len 3 = 12 bytes: the payload type starts right after them.
    wire = _hdr(0x20, 3, 9, bytes(4)) + bytes(range(12)) + b"application/sdp\0" + SDP
    msg = decode(wire)
    assert msg.auth_data == bytes(range(12))
    assert msg.payload == SDP and msg.payload_type == MIME_SDP


def test_auth_longer_than_packet_is_truncation():
    with pytest.raises(SAPDecodeError) as info:
        decode(_hdr(0x20, 200, 9, bytes(4)) + b"application/sdp\0" + SDP)
    assert info.value.reason == "truncated"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty-payload"),
        (b"application/sdp", "payload-type"),  # no NUL
        (b"\0v=0\r\n", "payload-type"),  # empty type
        (b"appl\x01cation/sdp\0v=0\r\n", "payload-type"),
        (b"\xc3\xa9t\xc3\xa9/sdp\0v=0\r\n", "payload-type"),
    ],
)
def test_bad_payload_types(body, reason):
    with pytest.raises(SAPDecodeError) as info:
        decode(_hdr(0x20, 0, 9, bytes(4)) + body)
    assert info.value.reason == reason


def test_zip_bomb_is_refused_without_inflating_it():
    bomb = zlib.compress(b"application/sdp\0" + b"v" * (50 * 1024 * 1024), 9)
    assert len(bomb) < 100_000
    with pytest.raises(SAPDecodeError) as info:
        decode(_hdr(0x21, 0, 9, bytes(4)) + bomb)
    assert info.value.reason == "zip-bomb"


def test_compressed_cap_is_exact():
    body = b"application/sdp\0" + SDP
    wire = _hdr(0x21, 0, 9, bytes(4)) + zlib.compress(body)
    assert decode(wire, max_payload=len(body)).payload == SDP
    with pytest.raises(SAPDecodeError) as info:
        decode(wire, max_payload=len(body) - 1)
    assert info.value.reason == "zip-bomb"


def test_oversized_plain_payload_is_refused():
    wire = _hdr(0x20, 0, 9, bytes(4)) + b"application/sdp\0" + SDP + b"a=x\r\n" * 100
    with pytest.raises(SAPDecodeError) as info:
        decode(wire, max_payload=200)
    assert info.value.reason == "too-large"
    with pytest.raises(SAPDecodeError) as info:
        decode(_hdr(0x22, 0, 9, bytes(4)) + bytes(300), max_payload=200)
    assert info.value.reason == "too-large"


@pytest.mark.parametrize(
    "body",
    [
        b"not zlib at all",
        zlib.compress(b"application/sdp\0" + SDP)[:-6],  # truncated stream
        zlib.compress(b"application/sdp\0" + SDP) + b"tail",  # garbage after the stream
        zlib.compress(b""),  # inflates to nothing
    ],
)
def test_bad_compressed_payloads(body):
    with pytest.raises(SAPDecodeError) as info:
        decode(_hdr(0x21, 0, 9, bytes(4)) + body)
    assert info.value.reason in {"bad-compression", "empty-payload"}


def test_gzip_framed_compression_is_accepted():
    # RFC 2974 appendix B: SAPv1 said gzip; zlib is what implementations used.
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    body = compressor.compress(b"application/sdp\0" + SDP) + compressor.flush()
    assert decode(_hdr(0x21, 0, 9, bytes(4)) + body).payload == SDP


def test_pulseaudio_style_packet():
    # module-rtp-send: header htonl(1<<29 | hash), IPv4 source, "application/sdp\0", LF-only SDP.
    sdp = b"v=0\no=alice 3953606412 0 IN IP4 192.168.1.50\ns=desk\nc=IN IP4 224.0.0.56\nt=3953606412 0\n"
    header = ((1 << 29) | 0xA1B2).to_bytes(4, "big")
    msg = decode(header + bytes([192, 168, 1, 50]) + b"application/sdp\0" + sdp)
    assert (msg.version, msg.msg_id_hash, msg.is_deletion) == (1, 0xA1B2, False)
    assert msg.origin == V4("192.168.1.50")
    assert msg.payload == sdp and msg.is_sdp


def test_is_sdp():
    assert ROWS[0][1].is_sdp and ROWS[1][1].is_sdp
    assert not ROWS[7][1].is_sdp  # encrypted
    assert not ROWS[10][1].is_sdp
    assert SAPMessage(V4("192.0.2.1"), 1, b"", payload_type="Application/SDP; charset=utf-8").is_sdp


# -- building messages ----------------------------------------------------


def test_builders():
    ann = announcement("192.0.2.55", SDP, compressed=True)
    assert ann.msg_id_hash == make_msg_id_hash(SDP) != 0
    assert decode(encode(ann)) == ann
    dele = deletion("2001:db8::55", ORIGIN_LINE, msg_id_hash=ann.msg_id_hash)
    assert dele.is_deletion and decode(encode(dele)) == dele
    assert make_msg_id_hash(SDP) != make_msg_id_hash(SDP + b"a=x\r\n")


def test_constants_and_helpers():
    assert SAP_PORT == 9875
    assert str(SAP_GROUP_IPV4_GLOBAL) == "224.2.127.254"
    assert sap_group_ipv6(5) == V6("ff05::2:7ffe")
    assert sap_group_ipv6(0xE) == V6("ff0e::2:7ffe")
    assert announcement_interval(1, 500) == 300
    assert announcement_interval(1000, 1000) == 2000.0  # 8 * 1e6 / 4000
    with pytest.raises(SAPUsageError):
        sap_group_ipv6(16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "192.0.2.1"},
        {"msg_id_hash": 0x10000},
        {"msg_id_hash": -1},
        {"version": 2},
        {"auth_data": b"abc"},
        {"auth_data": bytes(1024)},
        {"payload_type": ""},
        {"payload_type": "application/sdp\0"},
        {"payload_type": None, "payload": b"o=- 1 1 IN IP4 192.0.2.1\r\n"},
        {"encrypted": True},  # a payload type inside the ciphertext cannot be given
        {"encrypted": True, "payload_type": None, "payload": b""},
        {"payload": "v=0"},
        {"compressed": 1},
    ],
)
def test_usage_errors(kwargs):
    fields = {"origin": V4("192.0.2.1"), "msg_id_hash": 1, "payload": SDP} | kwargs
    with pytest.raises(SAPUsageError):
        SAPMessage(**fields)


def test_encode_and_decode_type_checks():
    with pytest.raises(SAPUsageError):
        encode(SDP)  # type: ignore[arg-type]
    with pytest.raises(SAPUsageError):
        decode("text")  # type: ignore[arg-type]
    with pytest.raises(SAPUsageError):
        decode(ROWS[0][2], max_payload=0)
    assert issubclass(SAPDecodeError, SAPError) and issubclass(SAPUsageError, SAPError)
    assert not issubclass(SAPDecodeError, SAPUsageError)


# -- properties -------------------------------------------------------------

addresses = st.one_of(
    st.builds(V4, st.integers(0, 2**32 - 1)),
    st.builds(V6, st.integers(0, 2**128 - 1)),
)
mime_types = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)
sdp_payloads = st.binary(max_size=300).map(lambda b: b"v=0\r\n" + b)


@st.composite
def messages(draw):
    encrypted = draw(st.booleans())
    if encrypted:
        payload_type = None
        payload = draw(st.binary(min_size=1, max_size=300))
    else:
        payload_type = draw(st.one_of(st.none(), mime_types))
        payload = draw(sdp_payloads if payload_type is None else st.binary(max_size=300))
    return SAPMessage(
        origin=draw(addresses),
        msg_id_hash=draw(st.integers(0, 0xFFFF)),
        payload=payload,
        payload_type=payload_type,
        is_deletion=draw(st.booleans()),
        encrypted=encrypted,
        compressed=draw(st.booleans()),
        auth_data=draw(st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4])),
        version=draw(st.sampled_from([0, 1])),
    )


@given(messages())
def test_round_trip(message):
    assert decode(encode(message)) == message


@given(st.binary(max_size=200))
def test_random_bytes_give_a_message_or_a_decode_error(data):
    try:
        msg = decode(data)
    except SAPDecodeError:
        return
    assert isinstance(msg, SAPMessage)


@given(st.integers(0, 255), st.integers(0, 3), st.binary(max_size=120))
def test_plausible_headers_with_random_bodies(flags, auth_words, tail):
    data = bytes((flags, auth_words)) + b"\x12\x34" + bytes(16) + bytes(4 * auth_words) + tail
    with contextlib.suppress(SAPDecodeError):
        decode(data)


@given(st.binary(max_size=200))
def test_random_compressed_bodies(tail):
    for body in (tail, zlib.compress(tail)):
        with contextlib.suppress(SAPDecodeError):
            decode(_hdr(0x21, 0, 1, bytes(4)) + body)
