"""The rule model: hosts and prefixes on either side, rate limits, and one-sentence errors."""

import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from musersd.rules import MAX_BPS, Rule, RuleError, RuleKey, check_rate

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


@settings(derandomize=True, max_examples=300)
@given(st.integers(0x01000000, 0xDFFFFFFF), st.integers(1, 32), st.integers(0xE0000100, 0xEFFFFFFF))
def test_text_round_trip(address, length, group):
    net = N((address, length), strict=False)
    assume(not net.overlaps(N("224.0.0.0/4")))
    key = RuleKey.make(str(net), str(A(group)))
    assert RuleKey.make(str(key.source), str(key.group)) == key
    assert key.source_len == length
