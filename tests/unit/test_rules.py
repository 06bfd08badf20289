"""The rule model: hosts and prefixes on either side, rate limits, and one-sentence errors."""

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mauthcore.rules import MAX_BPS, Rule, RuleError, RuleKey, check_rate

A, N = ipaddress.IPv4Address, ipaddress.IPv4Network


def test_sides_are_addresses_or_networks_and_print_canonically():
    key = RuleKey.make(" 192.0.2.0/24", "239.1.1.1")
    assert key.source == N("192.0.2.0/24") and key.group == A("239.1.1.1")
    assert (key.source_len, key.group_len, key.is_exact) == (24, 32, False)
    assert key.source_address == A("192.0.2.0") and str(key) == "(192.0.2.0/24, 239.1.1.1)"
    host = RuleKey.make("192.0.2.10/32", "239.192.0.0/14")
    assert host.source == A("192.0.2.10") and str(host.group) == "239.192.0.0/14"
    assert RuleKey.make("192.0.2.10", "239.1.1.1").is_exact
    assert RuleKey.make("192.0.2.0", "239.1.1.1") != RuleKey.make("192.0.2.0/24", "239.1.1.1")


def test_covers_is_membership_on_the_prefix_side():
    src = RuleKey.make("192.0.2.128/25", "239.1.1.1")
    assert src.covers(A("192.0.2.200"), A("239.1.1.1"))
    assert not src.covers(A("192.0.2.100"), A("239.1.1.1"))
    assert not src.covers(A("192.0.2.200"), A("239.1.1.2"))
    grp = RuleKey.make("192.0.2.1", "239.192.0.0/14")
    assert grp.covers(A("192.0.2.1"), A("239.195.255.255")) and not grp.covers(A("192.0.2.1"), A("239.196.0.0"))


def test_keys_sort_by_their_cursor_even_across_hosts_and_prefixes():
    keys = [RuleKey.make(s, g) for s, g in [("192.0.2.0/24", "239.1.1.1"), ("192.0.2.0", "239.1.1.1"),
                                            ("192.0.2.0", "239.0.0.0/8"), ("10.0.0.0/8", "239.9.9.9")]]
    assert sorted(keys) == sorted(keys, key=lambda k: k.cursor)
    assert len({k.cursor for k in keys}) == 4
    assert sorted(keys)[0] == RuleKey.make("10.0.0.0/8", "239.9.9.9")
    assert len(keys[0].cursor) == 11


@pytest.mark.parametrize("source, group, why", [
    ("192.0.2.10/24", "239.1.1.1", "did you mean 192.0.2.0/24?"),
    ("0.0.0.0/0", "239.1.1.1", "source prefix /0 would authorize every host"),
    ("128.0.0.0/1", "239.1.1.1", "overlaps the multicast range"),
    ("192.0.2.1", "0.0.0.0/0", "group prefix /0"),
    ("192.0.2.1", "192.0.0.0/8", "not inside the multicast range"),
    ("192.0.2.1", "224.0.0.0/25", "link-local control groups"),
    ("192.0.2.0/24", "239.0.0.0/8", "a source prefix and a group prefix"),
    ("192.0.2.0/x", "239.1.1.1", "not an IP address or prefix"),
])
def test_bad_prefixes_are_one_sentence_errors(source, group, why):
    with pytest.raises(RuleError, match=why) as info:
        RuleKey.make(source, group)
    assert "\n" not in str(info.value)


def test_every_group_is_a_prefix_a_trusted_source_may_have():
    assert RuleKey.make("192.0.2.1", "224.0.0.0/4").group_len == 4
    assert RuleKey.make("192.0.2.1", "224.0.0.0/16").group_len == 16  # link-local part just never matches


@pytest.mark.parametrize("text, value", [
    (0, 0), (None, 0), ("0", 0), ("500", 500), ("2k", 2000), ("2K", 2000), ("1.5M", 1_500_000), ("10G", 10**10),
    ("0.001k", 1), (" 7 ", 7), (100_000_000_000, 100_000_000_000),
])
def test_rates_in_si_units(text, value):
    assert check_rate(text, "bps", MAX_BPS) == value


@pytest.mark.parametrize("text, why", [
    ("1.5", "not a whole number"), ("0.0001k", "not a whole number"), (1.0, "not a whole number"),
    (True, "not a whole number"), ("-1", "negative"), (-1, "negative"), ("1T", "not a number"),
    ("fast", "not a number"), ("100000000001", "above the largest"),
])
def test_bad_rates(text, why):
    with pytest.raises(RuleError, match=why):
        check_rate(text, "bps", MAX_BPS)


def test_rule_carries_limits_and_prints_them_only_when_set():
    r = Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps="2k", bps=0)
    assert (r.pps, r.bps, r.rate_limited, r.terms) == (2000, 0, True, (8, 2000, 0))
    assert str(r) == "192.0.2.0/24 -> 239.1.1.1 max-ttl 8 pps 2000"
    assert str(Rule.make("192.0.2.1", "239.1.1.1", 8)) == "192.0.2.1 -> 239.1.1.1 max-ttl 8"
    assert Rule.make("192.0.2.1", "239.1.1.1", 8) != Rule.make("192.0.2.1", "239.1.1.1", 8, pps=1)
    with pytest.raises(RuleError, match="pps limit 4294967296 is above"):
        Rule.make("192.0.2.1", "239.1.1.1", 8, pps=2**32)


@given(st.integers(0x01000000, 0xDFFFFFFF), st.integers(1, 32), st.integers(0xE0000100, 0xEFFFFFFF))
def test_text_round_trip(address, length, group):
    net = N((address, length), strict=False)
    assume(not net.overlaps(N("224.0.0.0/4")))
    key = RuleKey.make(str(net), str(A(group)))
    assert RuleKey.make(str(key.source), str(key.group)) == key
    assert key.source_len == length


# -- IPv6 ----------------------------------------------------------------------

A6, N6 = ipaddress.IPv6Address, ipaddress.IPv6Network


@pytest.mark.parametrize("source, group, text", [
    ("2001:db8:0:1::/64", "ff0e::db8:1", "2001:db8:0:1::/64 -> ff0e::db8:1 max-ttl 8"),
    ("2001:db8::10", "ff15::/16", "2001:db8::10 -> ff15::/16 max-ttl 8"),
    ("2001:DB8:0:0:0:0:0:10", "FF3E:0:0:0:0:0:8000:1", "2001:db8::10 -> ff3e::8000:1 max-ttl 8"),
    ("2001:db8::10/128", "ff05::1:3", "2001:db8::10 -> ff05::1:3 max-ttl 8"),
    ("2001:db8::10", "ff13::1", "2001:db8::10 -> ff13::1 max-ttl 8"),  # realm scope (3): routable
    ("2001:db8::10", "ff00::/8", "2001:db8::10 -> ff00::/8 max-ttl 8"),  # every group
    ("2001:db8::10", "ff00::/14", "2001:db8::10 -> ff00::/14 max-ttl 8"),  # holds scope 3
    ("2001:db8::10", "ff3e:0:0:0:0:0:8000::/112", "2001:db8::10 -> ff3e::8000:0/112 max-ttl 8"),
    ("::/1", "ff0e::1", "::/1 -> ff0e::1 max-ttl 8"),
])
def test_ipv6_rules_print_in_compressed_form(source, group, text):
    rule = Rule.make(source, group, 8)
    assert str(rule) == text and rule.key.family == 6
    assert Rule.make(str(rule.source), str(rule.group), 8) == rule


def test_ipv6_key_sides_lengths_and_cursor():
    key = RuleKey.make("2001:db8:0:1::/64", "ff0e::db8:1")
    assert key.source == N6("2001:db8:0:1::/64") and key.group == A6("ff0e::db8:1")
    assert (key.family, key.source_len, key.group_len, key.is_exact) == (6, 64, 128, False)
    assert key.covers(A6("2001:db8:0:1::99"), A6("ff0e::db8:1"))
    assert not key.covers(A6("2001:db8:0:2::99"), A6("ff0e::db8:1"))
    assert len(key.cursor) == 1 + 16 + 16 + 2
    grp = RuleKey.make("2001:db8::10", "ff15::/16")
    assert grp.covers(A6("2001:db8::10"), A6("ff15::abcd")) and not grp.covers(A6("2001:db8::10"), A6("ff05::1"))
    # every IPv4 key sorts before every IPv6 key: the family leads the cursor
    v4 = RuleKey.make("223.255.255.255", "239.255.255.255")
    assert sorted([key, v4, grp]) == [v4, grp, key]


@pytest.mark.parametrize("source, group, why", [
    ("2001:db8::1", "ff02::1", "group ff02::1 is a link-scope group \\(scope 2 or smaller\\), which the"
                               " filter always passes"),
    ("2001:db8::1", "ff01::2", "ff01::2 is a link-scope group"),
    ("2001:db8::1", "ff00::1234", "ff00::1234 is a link-scope group"),  # reserved scope 0
    ("2001:db8::1", "ff12::1", "ff12::1 is a link-scope group"),  # transient, link scope
    ("2001:db8::1", "ff32::8000:1", "ff32::8000:1 is a link-scope group"),  # SSM flags, link scope
    ("2001:db8::1", "ff02::/16", "group prefix ff02::/16 holds only link-scope groups"),
    ("2001:db8::1", "ff00::/15", "group prefix ff00::/15 holds only link-scope groups"),
    ("2001:db8::1", "::/0", "group prefix /0 is not a multicast range; the widest is ff00::/8"),
    ("2001:db8::1", "fe00::/7", "not inside the multicast range ff00::/8"),
    ("2001:db8::1", "2001:db8::2", "group 2001:db8::2 is not a multicast address \\(ff00::/8\\)"),
    ("ff0e::1", "ff0e::1", "source ff0e::1 is a multicast address, not a sender"),
    ("::", "ff0e::1", "source :: cannot be the address of a sender"),
    ("::1", "ff0e::1", "source ::1 cannot be the address of a sender"),
    ("fe80::1", "ff0e::1", "source fe80::1 is link-local \\(fe80::/10\\), and routers never forward"),
    ("febf::1", "ff0e::1", "is link-local"),
    ("::ffff:192.0.2.1", "ff0e::1", "write the IPv4 address 192.0.2.1 instead"),
    ("::ffff:192.0.2.0/120", "ff0e::1", "write the IPv4 prefix 192.0.2.0/24 instead"),
    ("::/0", "ff0e::1", "source prefix /0 would authorize every host"),
    ("8000::/1", "ff0e::1", "source prefix 8000::/1 overlaps the multicast range ff00::/8"),
    ("fe80::/64", "ff0e::1", "source prefix fe80::/64 overlaps the link-local range fe80::/10"),
    ("fe80::/9", "ff0e::1", "overlaps the link-local range fe80::/10"),
    ("fe80::1%eth0", "ff0e::1", "source fe80::1%eth0 has a zone index \\(%eth0\\)"),
    ("2001:db8::1", "ff0e::1%eth0", "group ff0e::1%eth0 has a zone index"),
    ("2001:db8::1/64", "ff0e::1", "did you mean 2001:db8::/64\\?"),
    ("2001:db8::/64", "ff0e::/16", "a source prefix and a group prefix"),
    ("192.0.2.1", "ff0e::1", "source 192.0.2.1 and group ff0e::1 are of different address families"),
    ("2001:db8::1", "239.1.1.1", "different address families"),
    ("2001:db8::g", "ff0e::1", "source '2001:db8::g' is not an IP address"),
    ("2001:db8::/129", "ff0e::1", "not an IP address or prefix"),
])
def test_bad_ipv6_rules_are_one_sentence_errors(source, group, why):
    with pytest.raises(RuleError, match=why) as info:
        RuleKey.make(source, group)
    message = str(info.value)
    assert "\n" not in message and message.count(". ") == 0


@pytest.mark.parametrize("ttl, why", [(0, "max TTL 0 is outside 1-255"), (256, "max TTL 256 is outside 1-255")])
def test_ipv6_hop_limit_range_is_the_ttl_range(ttl, why):
    assert Rule.make("2001:db8::1", "ff0e::1", 255).max_ttl == 255
    with pytest.raises(RuleError, match=why):
        Rule.make("2001:db8::1", "ff0e::1", ttl)


def test_ipv6_rules_carry_rate_limits_like_ipv4():
    r = Rule.make("2001:db8:0:1::/64", "ff0e::db8:1", 8, pps="2k", bps="1.5M")
    assert r.terms == (8, 2000, 1_500_000)
    assert str(r) == "2001:db8:0:1::/64 -> ff0e::db8:1 max-ttl 8 pps 2000 bps 1500000"


@given(st.integers(0x2000 << 112, (0x4000 << 112) - 1), st.integers(1, 128),
       st.integers(0xFF03 << 112, (0xFF10 << 112) - 1))
def test_ipv6_text_round_trip(address, length, group):
    net = N6((address, length), strict=False)
    assume(net.prefixlen > 0)
    key = RuleKey.make(str(net), str(A6(group)))
    assert RuleKey.make(str(key.source), str(key.group)) == key
    assert key.source_len == length and key.group_len == 128
    assert str(key.source) == (str(net.network_address) if length == 128 else str(net))


# ------------------------------------------------------------------ JSON


@pytest.mark.parametrize("rule", [
    Rule.make("192.0.2.10", "239.1.1.1", 8),
    Rule.make("192.0.2.0/24", "239.1.1.1", 16, pps=500),
    Rule.make("2001:db8::10", "ff0e::db8:0/112", 4, bps=2_000_000),
])
def test_rule_json_round_trip(rule):
    obj = rule.as_json()
    assert obj == {"source": str(rule.source), "group": str(rule.group), "max_ttl": rule.max_ttl,
                   "pps": rule.pps, "bps": rule.bps}
    assert Rule.from_json(obj) == rule
    assert RuleKey.from_json(rule.key.as_json()) == rule.key
    assert rule.as_json(limits=False) == {"source": str(rule.source), "group": str(rule.group),
                                          "max_ttl": rule.max_ttl}


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "a rule is a JSON object"),
    ({"source": "192.0.2.10", "max_ttl": 8}, "lacks group"),
    ({"source": 3232235521, "group": "239.1.1.1", "max_ttl": 8}, "the source is an address in a string"),
    ({"source": "192.0.2.10", "group": "10.0.0.1", "max_ttl": 8}, "multicast"),
    ({"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 300}, "outside 1-255"),
])
def test_rule_from_json_refuses_in_one_sentence(obj, message):
    with pytest.raises(RuleError, match=message):
        Rule.from_json(obj)
