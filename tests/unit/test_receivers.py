"""Receiver rules and interface policies (mauthcore/receivers.py): validation, matching, text forms."""

import ipaddress

import pytest

from mauthcore.receivers import (
    IfacePolicy,
    ReceiverMode,
    ReceiverRule,
    parse_interface_words,
    parse_receiver_words,
)
from mauthcore.rules import RuleError

A = ipaddress.ip_address


def test_a_rule_allows_hosts_of_its_prefix_to_join_its_groups():
    rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
    assert rule.allows(A("10.1.0.5"), A("239.1.2.3"), None, "eth1")
    assert rule.allows(A("10.1.0.5"), A("239.1.2.3"), A("192.0.2.1"), "eth1")  # SSM joins of its groups too
    assert not rule.allows(A("10.2.0.5"), A("239.1.2.3"), None, "eth1")
    assert not rule.allows(A("10.1.0.5"), A("239.2.0.1"), None, "eth1")


def test_a_source_specific_rule_allows_only_that_source():
    rule = ReceiverRule.make("0.0.0.0/0", "232.1.1.1", source="192.0.2.10")
    assert rule.ssm
    assert rule.allows(A("10.0.0.1"), A("232.1.1.1"), A("192.0.2.10"), "eth1")
    assert not rule.allows(A("10.0.0.1"), A("232.1.1.1"), A("192.0.2.11"), "eth1")
    assert not rule.allows(A("10.0.0.1"), A("232.1.1.1"), None, "eth1")  # an any-source join is more


def test_an_interface_rule_holds_on_that_interface_only():
    rule = ReceiverRule.make("::/0", "ff0e::db8:1", iface="eth2")
    assert rule.allows(A("fe80::1"), A("ff0e::db8:1"), None, "eth2")
    assert not rule.allows(A("fe80::1"), A("ff0e::db8:1"), None, "eth1")
    assert not rule.allows(A("10.0.0.1"), A("239.1.1.1"), None, "eth2")  # another family never matches


@pytest.mark.parametrize("args, says", [
    (("239.1.1.1", "239.1.1.2"), "overlaps the multicast range"),
    (("10.0.0.0/8", "224.0.0.22"), "link-local control group"),
    (("10.0.0.0/8", "10.0.0.1"), "not a multicast address"),
    (("10.0.0.1", "ff0e::1"), "different address families"),
    (("10.0.0.1", "239.1.1.1", "239.1.1.2"), "cannot be the address of a sender"),
    (("10.0.0.1", "239.1.1.1", "2001:db8::1"), "different address families"),
    (("10.0.0.1", "239.1.1.1", None, "eth/1"), "not a Linux interface name"),
    (("10.0.0.1/8", "239.1.1.1"), "bits set beyond its prefix length"),
    (("nonsense", "239.1.1.1"), "not an IP address"),
])
def test_invalid_rules_are_refused_with_one_sentence(args, says):
    with pytest.raises(RuleError, match=says):
        ReceiverRule.make(*args)


def test_text_json_and_file_words_round_trip():
    rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", "192.0.2.10", "eth1")
    assert str(rule) == "10.1.0.0/24 may join 239.1.0.0/16 from 192.0.2.10 on eth1"
    assert ReceiverRule.from_json(rule.as_json()) == rule
    assert parse_receiver_words(rule.words()) == rule
    host = ReceiverRule.make("10.1.0.7/32", "239.1.1.1")
    assert host.as_json() == {"receiver": "10.1.0.7", "group": "239.1.1.1"}
    with pytest.raises(RuleError, match="no field 'ttl'"):
        ReceiverRule.from_json({"receiver": "10.0.0.1", "group": "239.1.1.1", "ttl": 3})


def test_rules_sort_by_their_cursor_which_fits_the_protocol_limit():
    rules = [ReceiverRule.make("10.0.0.2", "239.1.1.1"), ReceiverRule.make("10.0.0.1", "239.1.1.2"),
             ReceiverRule.make("2001:db8:ffff::/48", "ff3e:ffff::/96", "2001:db8::1", "a" * 15)]
    assert sorted(rules)[0] == rules[1]
    assert max(len(r.cursor) for r in rules) == 68


def test_interface_policies():
    policy = parse_interface_words("interface eth1 closed limit=20".split())
    assert policy == IfacePolicy("eth1", ReceiverMode.CLOSED, 20) and policy.inspects
    assert parse_interface_words(policy.words()) == policy
    assert not IfacePolicy.make("eth1").inspects
    assert IfacePolicy.make("eth1", "open", 5).inspects
    assert IfacePolicy.from_json(policy.as_json()) == policy
    assert ReceiverMode.MONITOR.code == 2 and ReceiverMode.from_code(1) is ReceiverMode.CLOSED
    for words, says in (("interface eth1 half", "not open, closed or monitor"),
                        ("interface eth1 closed limit=70000", "outside 0..65535"),
                        ("interface eth1 closed limit=x", "not a whole number"),
                        ("interface eth1 closed max=3", "is not limit=N"),
                        ("receiver 10.0.0.1", "a receiver line is"),
                        ("receiver 10.0.0.1 239.1.1.1 ttl=3", "not source=ADDRESS or iface=NAME")):
        parse = parse_interface_words if words.startswith("interface") else parse_receiver_words
        with pytest.raises(RuleError, match=says):
            parse(words.split())
