"""SDP parser (RFC 8866 + RFC 4570 source filters).

Realistic bodies live in tests/data/sdp/; each is checked field by field, fed
truncated byte by byte and with trailing garbage, and round-tripped through
encode_sdp(). Every broken body in tests/data/sdp/broken/ must fail with its
own reason and line number.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sap.errors import SDPDecodeError, SDPError, SDPUsageError
from sap.sdp import (
    NTP_UNIX_OFFSET,
    Connection,
    Group,
    SessionDescription,
    deletion_origin,
    deletion_payload,
    encode_sdp,
    ntp_to_unix,
    parse_origin_line,
    parse_sdp,
    unix_to_ntp,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sdp"
GOOD = sorted(p for p in DATA.glob("*.sdp") if p.name != "pulseaudio_no_ttl.sdp")
BROKEN = DATA / "broken"

ip = ipaddress.ip_address


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def g(addr: str, ttl: int | None) -> Group:
    return Group(ip(addr), ttl)


# -- the realistic bodies, field by field ------------------------------------


def test_sdr_mbone_session():
    d = parse_sdp(load("sdr_mbone.sdp"))
    assert d.origin.identity == ("mjh", "3029112302", "IN", "IP4", "128.16.64.19")
    assert d.origin.sess_version == 3029113014
    assert d.origin.ip == ip("128.16.64.19")
    assert d.name == "UCL CS Seminar: Multicast Session Directories"
    assert d.info.startswith("Weekly departmental seminar")
    assert d.uri == "http://www.cs.ucl.ac.uk/research/mice/seminars/"
    assert d.emails == ("Mark Handley <mjh@cs.ucl.ac.uk>",)
    assert d.phones == ("+44 171 380 7000",)
    assert d.connections == ()
    assert [(m.media, m.port, m.proto, m.formats) for m in d.media] == [
        ("audio", 22554, "RTP/AVP", ("0",)),
        ("video", 58972, "RTP/AVP", ("31",)),
        ("application", 32416, "udp", ("wb",)),
        ("application", 52934, "udp", ("nte",)),
    ]
    assert [c.value() for m in d.media for c in m.connections] == [
        "IN IP4 224.2.213.113/127",
        "IN IP4 224.2.193.27/127",
        "IN IP4 224.2.141.247/63",
        "IN IP4 224.2.141.247/63",
    ]
    assert d.groups == (
        g("224.2.213.113", 127),
        g("224.2.193.27", 127),
        g("224.2.141.247", 63),
    )
    assert [(f.media_index, str(f.group), f.mode) for f in d.flows] == [
        (0, "224.2.213.113", "any"),
        (1, "224.2.193.27", "any"),
        (2, "224.2.141.247", "any"),
        (3, "224.2.141.247", "any"),
    ]
    assert d.is_any_source and d.senders == {} and d.declared_senders == ()
    assert d.attributes == (("tool", "sdr v2.9"), ("type", "broadcast"), ("recvonly", None))
    assert d.attribute("tool") == "sdr v2.9" and d.attribute("recvonly") == ""
    assert d.media[1].bandwidths == ("AS:128",)
    assert d.media[1].attribute("framerate") == "8"
    assert d.media[2].attributes == (("orient", "portrait"),)
    assert d.timings[0].start == 3029140800 and d.timings[0].stop == 3029148000
    assert d.start_unix == 3029140800 - NTP_UNIX_OFFSET
    assert d.stop_unix == 3029148000 - NTP_UNIX_OFFSET == 820159200  # 1995-12-28 14:00 UTC


def test_ssm_ipv4_session_level_filter():
    d = parse_sdp(load("ssm_v4.sdp"))
    assert d.origin.address == "198.51.100.20"
    assert d.connections == (Connection("IN", "IP4", ip("232.10.20.30"), 64, 1),)
    assert d.groups == (g("232.10.20.30", 64),)
    assert d.senders == {ip("232.10.20.30"): (ip("198.51.100.20"), ip("198.51.100.21"))}
    assert not d.is_any_source
    (flt,) = d.source_filters
    assert (flt.mode, flt.nettype, flt.addrtype, flt.dest) == ("incl", "IN", "IP4", ip("232.10.20.30"))
    assert flt.line == 9
    assert d.stop_unix is None and d.start_unix is None


def test_ssm_ipv6_media_level_filters():
    d = parse_sdp(load("ssm_v6.sdp"))
    assert d.origin.identity == ("operator", "3900000001", "IN", "IP6", "2001:db8:10::20")
    assert d.groups == (g("ff3e::8000:1", None), g("ff3e::8000:2", None))
    assert d.senders == {
        ip("ff3e::8000:1"): (ip("2001:db8:10::20"),),
        ip("ff3e::8000:2"): (ip("2001:db8:10::21"), ip("2001:db8:10::22")),
    }
    # "a=source-filter:incl" (no space after the colon) is accepted.
    assert d.media[1].source_filters[0].dest == "*"
    assert not d.is_any_source


def test_any_source_vlc_session():
    d = parse_sdp(load("asm_vlc.sdp"))
    assert d.origin.sess_id == "15061837582543101445"
    assert d.origin.sess_version == 15061837582543101445
    assert d.name == "Lobby camera" and d.info == "N/A"
    assert d.groups == (g("239.255.12.42", 255),)
    assert d.is_any_source and d.excluded == {}
    assert d.media[0].bandwidths == ("RR:0",)
    assert d.attribute("charset") == "UTF-8"


def test_aes67_dante_session():
    d = parse_sdp(load("aes67_dante.sdp"))
    assert d.name == "Stage left I/O : 32"
    assert d.media[0].title == "2 channels: TxChan 0, TxChan 1"
    assert d.media[0].attribute("ts-refclk") == "ptp=IEEE1588-2008:00-1D-C1-FF-FE-12-34-56:0"
    assert d.groups == (g("239.69.83.134", 32),)


def test_layered_counts_and_filters_per_address():
    d = parse_sdp(load("layered_counts.sdp"))
    (conn,) = d.connections
    assert (conn.ttl, conn.count) == (127, 3)
    assert conn.addresses == (ip("224.2.1.1"), ip("224.2.1.2"), ip("224.2.1.3"))
    assert d.media[0].port_count == 2
    assert [(f.media_index, str(f.group), f.ttl, f.mode) for f in d.flows] == [
        (0, "224.2.1.1", 127, "incl"),
        (0, "224.2.1.2", 127, "any"),  # RFC 4570 §3.2.4: the second address is not filtered
        (0, "224.2.1.3", 127, "incl"),
        (1, "233.252.0.1", 15, "excl"),  # media-level filter overrides the session's
    ]
    assert d.senders == {ip("224.2.1.1"): (ip("192.0.2.10"),), ip("224.2.1.3"): (ip("192.0.2.42"),)}
    assert d.excluded == {ip("233.252.0.1"): (ip("192.0.2.66"),)}
    assert d.groups == (g("224.2.1.1", 127), g("224.2.1.2", 127), g("224.2.1.3", 127), g("233.252.0.1", 15))


def test_lf_only_trailing_blanks_unknown_lines_and_latin1():
    d = parse_sdp(load("lf_only_unknown.sdp"))
    assert d.origin.address == "10.47.16.5"  # trailing blanks stripped
    assert d.name == "Seminar \u00e9t\u00e9 2025"  # not UTF-8: read as Latin-1
    assert d.unknown == (("x", "some-future-line"),)
    assert d.media[0].unknown == (("y", "another unknown"),)
    assert d.attributes == (("recvonly", None),)  # before t=, accepted
    assert d.groups == (g("239.7.7.7", 16),)
    crlf = load("lf_only_unknown.sdp").replace(b"\n", b"\r\n")
    assert parse_sdp(crlf) == d


def test_pulseaudio_missing_ttl_is_refused_unless_allowed():
    body = load("pulseaudio_no_ttl.sdp")
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp(body)
    assert (info.value.reason, info.value.line) == ("missing-ttl", 4)
    d = parse_sdp(body, allow_missing_ttl=True)
    assert d.groups == (g("224.0.0.56", None),)
    assert d.origin.sess_version == 0
    assert d.stop_unix is None and d.start_unix == 3953606412 - NTP_UNIX_OFFSET


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_encode_round_trip(path):
    d = parse_sdp(path.read_bytes())
    again = parse_sdp(encode_sdp(d))
    assert again == d
    assert again.flows == d.flows
    assert encode_sdp(again) == encode_sdp(d)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_truncated_byte_by_byte(path):
    data = path.read_bytes()
    for n in range(len(data)):
        try:
            d = parse_sdp(data[:n])
        except SDPDecodeError as exc:
            assert exc.reason
            continue
        assert isinstance(d, SessionDescription)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "garbage", [b"\0\0\0", b"\xff\xfe\x00junk", b"zz", b"c=IN IP4 1.2.3.4.5\r\n", b"\r\n\r\n"]
)
def test_trailing_garbage(path, garbage):
    data = path.read_bytes()
    try:
        d = parse_sdp(data + garbage)
    except SDPDecodeError:
        return
    assert d.origin == parse_sdp(data).origin


# -- every error class, with its line ----------------------------------------

BROKEN_CASES = {
    "addrtype_mismatch.sdp": ("addrtype-mismatch", 4),
    "bad_c_address.sdp": ("bad-address", 4),
    "bad_media_port.sdp": ("bad-media", 6),
    "bad_origin.sdp": ("bad-origin", 2),
    "bad_time.sdp": ("bad-time", 5),
    "bad_ttl.sdp": ("bad-ttl", 4),
    "count_overflow.sdp": ("bad-count", 4),
    "ipv6_with_ttl.sdp": ("bad-ttl", 4),
    "media_without_connection.sdp": ("no-connection", 7),
    "missing_ttl.sdp": ("missing-ttl", 6),
    "no_origin.sdp": ("no-origin", None),
    "no_version.sdp": ("no-version", 1),
    "not_a_line.sdp": ("bad-line", 6),
    "source_filter_conflict.sdp": ("filter-conflict", 7),
    "source_filter_mode.sdp": ("bad-source-filter", 6),
    "source_filter_multicast_source.sdp": ("bad-source-filter", 6),
    "source_filter_no_target.sdp": ("filter-no-target", 6),
    "source_filter_short.sdp": ("bad-source-filter", 7),
    "source_filter_ttl_in_dest.sdp": ("bad-source-filter", 6),
    "source_filter_wrong_family.sdp": ("filter-no-target", 7),
    "zero_count.sdp": ("bad-count", 4),
}


def test_every_broken_file_is_listed():
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(BROKEN_CASES)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN_CASES.items()))
def test_broken_bodies(name, expected):
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp((BROKEN / name).read_bytes())
    assert (info.value.reason, info.value.line) == expected
    if expected[1] is not None:
        assert str(info.value).startswith(f"line {expected[1]}: ")


# -- c= lines in detail --------------------------------------------------------


def body(*lines: str) -> bytes:
    return ("\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=x", *lines]) + "\r\n").encode()


@pytest.mark.parametrize(
    ("line", "addresses", "ttl"),
    [
        ("c=IN IP4 224.2.1.1/127/3", ["224.2.1.1", "224.2.1.2", "224.2.1.3"], 127),
        ("c=IN IP4 233.252.0.1/127", ["233.252.0.1"], 127),
        ("c=IN IP4 239.255.255.254/1/2", ["239.255.255.254", "239.255.255.255"], 1),
        ("c=IN IP4 232.1.1.1/0", ["232.1.1.1"], 0),
        ("c=IN IP6 ff15::1/3", ["ff15::1", "ff15::2", "ff15::3"], None),
        ("c=IN IP6 FF0E::11A", ["ff0e::11a"], None),
        ("c=IN IP6 ff0e::ffff/2", ["ff0e::ffff", "ff0e::1:0"], None),
        ("c=in ip4 239.1.1.1/8", ["239.1.1.1"], 8),
    ],
)
def test_connection_expansion(line, addresses, ttl):
    d = parse_sdp(body(line, "t=0 0", "m=audio 5004 RTP/AVP 0"))
    assert [str(x.address) for x in d.groups] == addresses
    assert {x.ttl for x in d.groups} == {ttl}


def test_unicast_and_names_are_kept_but_are_not_groups():
    d = parse_sdp(
        body(
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "c=IN IP4 192.0.2.11",
            "m=video 5006 RTP/AVP 31",
            "c=IN IP4 channel-1.example.com/127",
            "m=text 5008 RTP/AVP 98",
            "c=IN IP4 0.0.0.0",
        )
    )
    assert d.groups == () and d.flows == ()
    assert d.unresolved == ("channel-1.example.com",)
    assert d.media[1].connections[0].is_fqdn
    assert d.media[0].connections[0].address == ip("192.0.2.11")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("c=IN IP4 224.2.1.256/127", "bad-address"),
        ("c=IN IP4 224.2.01.1/127", "bad-address"),  # leading zero: octal or decimal?
        ("c=IN IP4 -bad-/127", "bad-address"),
        ("c=IN IP4 224.2.1.1/127/3/4", "bad-connection"),
        ("c=IN IP4 224.2.1.1/abc", "bad-ttl"),
        ("c=IN IP4 224.2.1.1/-1", "bad-ttl"),
        ("c=IN IP4 224.2.1.1/256", "bad-ttl"),
        ("c=IN IP4 224.2.1.1//3", "bad-ttl"),
        ("c=IN IP4 224.2.1.1/127/", "bad-count"),
        ("c=IN IP4 224.2.1.1/127/257", "bad-count"),
        ("c=IN IP4 192.0.2.1/127/2", "bad-count"),
        ("c=IN IP6 ff15::1/0", "bad-count"),
        ("c=IN IP6 2001:db8::1/2", "bad-count"),
        ("c=IN IP6 ff15::1/1/1", "bad-ttl"),
        ("c=IN IP6 fffff::1", "bad-address"),
        ("c=IN IP6 239.1.1.1/3", "addrtype-mismatch"),
        ("c=IN IP7 239.1.1.1/3", "addrtype"),
        ("c=ATM NSAP 47.0005.80.ffe100.0000.f21a.0000.0000.0000.0000.0000", "nettype"),
        ("c=IN IP4", "bad-connection"),
        ("c=IN IP4 239.1.1.1/1 extra", "bad-connection"),
    ],
)
def test_connection_errors(line, reason):
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp(body(line, "t=0 0", "m=audio 5004 RTP/AVP 0"))
    assert (info.value.reason, info.value.line) == (reason, 4)


def test_conflicting_ttls_for_one_address():
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp(body("t=0 0", "m=audio 5004 RTP/AVP 0", "c=IN IP4 239.1.1.1/8", "c=IN IP4 239.1.1.1/16"))
    assert (info.value.reason, info.value.line) == ("bad-ttl", 7)


def test_several_session_level_connections_are_all_used():
    d = parse_sdp(body("c=IN IP4 239.1.1.1/8", "c=IN IP6 ff15::9", "t=0 0", "m=audio 5004 RTP/AVP 0"))
    assert d.groups == (g("239.1.1.1", 8), g("ff15::9", None))


def test_description_without_media_reports_its_session_connection():
    d = parse_sdp(body("c=IN IP4 239.1.1.1/8", "t=0 0"))
    assert [(f.media_index, f.group) for f in d.flows] == [(None, ip("239.1.1.1"))]
    assert parse_sdp(body("t=0 0")).flows == ()


# -- RFC 4570 semantics --------------------------------------------------------


def test_rfc4570_wildcard_destination_applies_to_all_media():
    # §3.2.3
    d = parse_sdp(
        body(
            "t=0 0",
            "a=source-filter: incl IN IP4 * 192.0.2.10",
            "m=audio 54320 RTP/AVP 0",
            "c=IN IP4 232.2.2.2/127",
            "m=video 54322 RTP/AVP 34",
            "c=IN IP4 232.4.4.4/63",
        )
    )
    assert d.senders == {ip("232.2.2.2"): (ip("192.0.2.10"),), ip("232.4.4.4"): (ip("192.0.2.10"),)}


def test_media_level_filter_completely_overrides_session_level():
    d = parse_sdp(
        body(
            "c=IN IP4 232.1.1.1/64",
            "t=0 0",
            "a=source-filter: incl IN IP4 * 192.0.2.1",
            "m=audio 5004 RTP/AVP 0",
            "m=video 5006 RTP/AVP 31",
            "c=IN IP4 232.1.1.2/64",
            "c=IN IP4 232.1.1.3/64",
            "a=source-filter: incl IN IP4 232.1.1.2 192.0.2.2",
        )
    )
    modes = [(f.media_index, str(f.group), f.mode, f.sources) for f in d.flows]
    assert modes == [
        (0, "232.1.1.1", "incl", (ip("192.0.2.1"),)),
        (1, "232.1.1.2", "incl", (ip("192.0.2.2"),)),
        (1, "232.1.1.3", "any", ()),  # the session-level filter no longer applies here
    ]


def test_media_level_filter_may_name_a_session_level_connection():
    d = parse_sdp(
        body(
            "c=IN IP4 232.1.1.1/64",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "a=source-filter: incl IN IP4 232.1.1.1 192.0.2.1",
        )
    )
    assert d.senders == {ip("232.1.1.1"): (ip("192.0.2.1"),)}


def test_filter_address_type_limits_a_wildcard():
    d = parse_sdp(
        body(
            "c=IN IP4 232.1.1.1/64",
            "t=0 0",
            "a=source-filter: incl IN IP4 * 192.0.2.1",
            "m=audio 5004 RTP/AVP 0",
            "m=video 5006 RTP/AVP 31",
            "c=IN IP6 ff3e::1",
        )
    )
    assert d.senders == {ip("232.1.1.1"): (ip("192.0.2.1"),)}
    assert [f.mode for f in d.flows] == ["incl", "any"]


def test_two_incl_filters_for_one_address_are_merged():
    d = parse_sdp(
        body(
            "c=IN IP4 232.1.1.1/64",
            "t=0 0",
            "a=source-filter: incl IN IP4 232.1.1.1 192.0.2.1",
            "a=source-filter: incl IN IP4 * 192.0.2.2 192.0.2.1",
            "m=audio 5004 RTP/AVP 0",
        )
    )
    assert d.senders == {ip("232.1.1.1"): (ip("192.0.2.1"), ip("192.0.2.2"))}


def test_rfc4570_ipv6_example_and_colonless_spelling():
    # §3.2.5, printed in the RFC without the colon after "source-filter".
    d = parse_sdp(
        body(
            "c=IN IP6 FF0E::11A",
            "t=0 0",
            "a=source-filter incl IN IP6 FF0E::11A 2001:DB8:1:2:240:96FF:FE25:8EC9",
            "m=audio 5004 RTP/AVP 0",
        )
    )
    assert d.senders == {ip("ff0e::11a"): (ip("2001:db8:1:2:240:96ff:fe25:8ec9"),)}
    assert d.attributes == (("source-filter", " incl IN IP6 FF0E::11A 2001:DB8:1:2:240:96FF:FE25:8EC9"),)


def test_rfc4570_fqdn_example():
    # §3.2.6: names throughout; kept, never resolved.
    d = parse_sdp(
        body(
            "c=IN IP4 channel-1.example.com/127",
            "c=IN IP6 channel-1.example.com/127",
            "t=0 0",
            "a=source-filter: incl IN * channel-1.example.com src-1.example.com",
            "m=audio 5004 RTP/AVP 0",
        )
    )
    assert d.flows == () and d.unresolved == ("channel-1.example.com",)
    assert d.source_filters[0].sources == ("src-1.example.com",)


def test_unicast_exclusion_example():
    # §3.2.2: filters may name unicast destinations; they make no group.
    d = parse_sdp(
        body(
            "c=IN IP4 192.0.2.11",
            "t=0 0",
            "a=source-filter: excl IN IP4 192.0.2.11 192.0.2.10",
            "m=audio 5004 RTP/AVP 0",
        )
    )
    assert d.flows == () and d.source_filters[0].mode == "excl"


@pytest.mark.parametrize(
    "attr",
    [
        "a=source-filter: incl IN IP4 232.1.1.1 ff15::1",  # family of the source
        "a=source-filter: incl IN IP4 232.1.1.1 0.0.0.0",
        "a=source-filter: incl IN * 232.1.1.1 src.example.com",  # * needs names
        "a=source-filter: incl IN * * 192.0.2.1",
        "a=source-filter: incl XX IP4 232.1.1.1 192.0.2.1",
        "a=source-filter: incl IN IP5 232.1.1.1 192.0.2.1",
        "a=source-filter: incl IN IP4 232.1.1.1 192.0.2.300",
        "a=source-filter:",
    ],
)
def test_source_filter_errors(attr):
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp(body("c=IN IP4 232.1.1.1/64", "t=0 0", attr, "m=audio 5004 RTP/AVP 0"))
    assert info.value.line == 6
    expected = {"bad-source-filter", "bad-address", "addrtype-mismatch", "nettype", "addrtype"}
    assert info.value.reason in expected


# -- other lines ---------------------------------------------------------------


def test_times_repeats_and_ntp():
    d = parse_sdp(
        body(
            "c=IN IP4 239.1.1.1/8",
            "t=3034423619 3042462419",
            "r=604800 3600 0 90000",
            "r=7d 1h 0 25h",
            "t=3034423619 3034430000",
        )
    )
    assert d.timings[0].repeats == ("604800 3600 0 90000", "7d 1h 0 25h")
    assert d.stop_unix == ntp_to_unix(3042462419)
    assert ntp_to_unix(NTP_UNIX_OFFSET) == 0 and unix_to_ntp(0) == NTP_UNIX_OFFSET
    assert unix_to_ntp(ntp_to_unix(3042462419)) == 3042462419
    assert parse_sdp(body("t=3034423619 0", "t=3034423619 3034430000")).stop_unix is None
    assert parse_sdp(body()).stop_unix is None  # no t= at all: unbounded


def test_session_only_lines_after_media_go_to_the_session():
    d = parse_sdp(body("m=audio 5004 RTP/AVP 0", "c=IN IP4 239.1.1.1/8", "t=0 0", "e=ops@example.net"))
    assert d.timings[0].stop == 0 and d.emails == ("ops@example.net",)


def test_tolerances():
    base = body("c=IN IP4 239.1.1.1/8", "t=0 0", "m=audio 5004 RTP/AVP 0")
    d = parse_sdp(base)
    assert parse_sdp(base + b"\0\0") == d  # NUL-terminated payloads
    assert parse_sdp(b"\r\n\r\n" + base) == d  # leading blank lines
    assert parse_sdp(base.replace(b"\r\n", b"  \n")) == d
    assert parse_sdp(base.decode()) == d  # str input
    assert parse_sdp(body("c=IN IP4 239.1.1.1/8", "m=audio 5004/2 RTP/AVP")).media[0].formats == ()


@pytest.mark.parametrize(
    ("lines", "reason", "line"),
    [
        (["v=1"], "version", 1),
        (["v=0", "v=0"], "duplicate", 2),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "o=- 1 1 IN IP4 192.0.2.1"], "duplicate", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=a", "s=b"], "duplicate", 4),
        (["v=0", "o=- 1 x1 IN IP4 192.0.2.1"], "bad-origin", 2),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "r=7d 1h 0"], "bad-time", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "t=1"], "bad-time", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "m=audio"], "bad-media", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "m=audio 5004/0 RTP/AVP 0"], "bad-media", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "1=x"], "bad-line", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s x"], "bad-line", 3),
        (["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=a\0b"], "nul", 3),
        ([""], "empty", None),
    ],
)
def test_structure_errors(lines, reason, line):
    with pytest.raises(SDPDecodeError) as info:
        parse_sdp("\r\n".join(lines).encode())
    assert (info.value.reason, info.value.line) == (reason, line)


def test_deletion_payloads():
    origin = parse_sdp(load("ssm_v4.sdp")).origin
    payload = deletion_payload(origin)
    assert payload == b"o=- 1743523200 1743523317 IN IP4 198.51.100.20\r\n"
    assert deletion_origin(payload) == origin
    assert deletion_origin(load("ssm_v4.sdp")) == origin  # whole description
    assert deletion_origin(load("pulseaudio_no_ttl.sdp")).username == "alice"  # would not parse in full
    assert parse_origin_line("o=- 1 2 IN IP6 2001:db8::1\r\n").sess_version == 2
    with pytest.raises(SDPDecodeError):
        deletion_origin(b"s=nothing here\r\n")
    with pytest.raises(SDPDecodeError):
        deletion_origin(payload + payload)


def test_usage_errors():
    d = parse_sdp(load("asm_vlc.sdp"))
    with pytest.raises(SDPUsageError):
        encode_sdp(object())  # type: ignore[arg-type]
    with pytest.raises(SDPUsageError):
        parse_sdp(12)  # type: ignore[arg-type]
    from dataclasses import replace

    with pytest.raises(SDPUsageError):
        encode_sdp(replace(d, name="two\r\nlines"))
    assert issubclass(SDPDecodeError, SDPError) and not issubclass(SDPDecodeError, SDPUsageError)


# -- properties -------------------------------------------------------------

LINES = sorted(
    {line for p in GOOD for line in p.read_bytes().replace(b"\r\n", b"\n").split(b"\n")}
    | {
        b"c=IN IP4 224.2.1.1/127/3",
        b"c=IN IP6 ff15::1/2",
        b"a=source-filter: incl IN IP4 * 192.0.2.1",
        b"a=source-filter: excl IN IP4 224.2.1.2 192.0.2.9",
        b"a=source-filter: incl IN IP6 * 2001:db8::1",
        b"m=video 5000/2 RTP/AVP 31",
        b"t=0 0",
        b"r=7d 1h 0 25h",
    }
)


@given(st.lists(st.sampled_from(LINES), max_size=25), st.sampled_from([b"\n", b"\r\n"]))
def test_shuffled_real_lines_parse_or_fail_cleanly_and_round_trip(lines, eol):
    data = b"v=0" + eol + b"o=- 1 1 IN IP4 192.0.2.1" + eol + eol.join(lines)
    try:
        d = parse_sdp(data)
    except SDPDecodeError:
        return
    again = parse_sdp(encode_sdp(d))
    assert again == d and again.flows == d.flows


@given(st.binary(max_size=300))
def test_random_bytes_give_a_description_or_a_decode_error(data):
    for candidate in (data, b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + data):
        with contextlib.suppress(SDPDecodeError):
            parse_sdp(candidate)


@given(
    st.sampled_from("cmatorsi"),
    st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=60),
)
def test_random_values_give_a_description_or_a_decode_error(kind, value):
    data = f"v=0\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4 239.1.1.1/1\n{kind}={value}\nm=audio 1 RTP/AVP 0\n"
    try:
        d = parse_sdp(data.encode("utf-8", "surrogatepass"))
    except SDPDecodeError:
        return
    assert parse_sdp(encode_sdp(d)) == d
