"""The mauth.conf rule file parser."""

import pytest

from mauthcore.rulefile import ConfigError, load_rules, parse_rules
from mauthcore.rules import Rule

GOOD = """\
# authorized senders
192.0.2.10   239.1.1.1   16
192.0.2.11\t239.1.1.2\t1   # a comment

  192.0.2.10 239.255.0.1 255
"""


def test_good_file():
    rules = parse_rules(GOOD)
    assert rules == (
        Rule.make("192.0.2.10", "239.1.1.1", 16),
        Rule.make("192.0.2.11", "239.1.1.2", 1),
        Rule.make("192.0.2.10", "239.255.0.1", 255),
    )


def test_prefixes_and_rate_limits():
    rules = parse_rules("""\
192.0.2.0/24   239.1.1.1       8   pps=500
192.0.2.10     239.192.0.0/14  16  bps=2.5M pps=1k
192.0.2.10/32  239.1.1.2       4   # a /32 is the host itself
192.0.2.0      239.1.1.1       8   # the subnet's first address: not the subnet
""")
    assert rules == (
        Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=500),
        Rule.make("192.0.2.10", "239.192.0.0/14", 16, pps=1000, bps=2_500_000),
        Rule.make("192.0.2.10", "239.1.1.2", 4),
        Rule.make("192.0.2.0", "239.1.1.1", 8),
    )
    assert str(rules[0].source) == "192.0.2.0/24" and str(rules[2].source) == "192.0.2.10"
    with pytest.raises(ConfigError, match="already authorized on line 1"):
        parse_rules("192.0.2.0/24 239.1.1.1 8\n192.0.2.0/24 239.1.1.1 4 pps=1\n")


def test_empty_file_means_no_rules():
    assert parse_rules("# nothing\n\n") == ()


@pytest.mark.parametrize(
    "line, message",
    [
        ("192.0.2.10 239.1.1.1", "expected 'SOURCE GROUP MAX-TTL [pps=N] [bps=N] [iface=IF] [rpf] [mac=MAC] [learn]',"
                                 " got 2"),
        ("192.0.2.10 239.1.1.1 5 extra", "unexpected 'extra' after the max TTL"),
        ("192.0.2.10 239.1.1.1 5 ttl=4", "only pps=N, bps=N, iface=IF, rpf, mac=MAC and learn may follow"),
        ("192.0.2.10 239.1.1.1 5 pps=1 pps=2", "pps is given twice"),
        ("192.0.2.10 239.1.1.1 5 pps=fast", "pps limit 'fast' is not a number"),
        ("192.0.2.10 239.1.1.1 5 bps=1.5", "not a whole number"),
        ("192.0.2.10 239.1.1.1 5 bps=-3", "negative"),
        ("192.0.2.10 239.1.1.1 5 bps=200G", "above the largest"),
        ("192.0.2.10/24 239.1.1.1 5", "bits set beyond its prefix length (did you mean 192.0.2.0/24?)"),
        ("0.0.0.0/0 239.1.1.1 5", "source prefix /0"),
        ("192.0.2.0/24 239.0.0.0/8 5", "a source prefix and a group prefix"),
        ("192.0.2.10 224.0.0.0/24 5", "link-local"),
        ("192.0.2.10 10.0.0.0/8 5", "not inside the multicast range"),
        ("192.0.2.0/33 239.1.1.1 5", "not an IP address or prefix"),
        ("192.0.2.10 10.0.0.1 5", "not a multicast address"),
        ("192.0.2.10 224.0.0.5 5", "link-local"),
        ("192.0.2.10 239.1.1.1 0", "outside 1-255"),
        ("192.0.2.10 239.1.1.1 300", "outside 1-255"),
        ("192.0.2.10 239.1.1.1 ttl", "not a number"),
        ("host.example 239.1.1.1 5", "not an IP address"),
        ("239.1.1.9 239.1.1.1 5", "multicast address, not a sender"),
        ("192.0.2.10 239.1.1.1 16", "already authorized on line 1"),
    ],
)
def test_errors_name_the_line(line, message):
    text = "192.0.2.10 239.1.1.1 16\n" + line + "\n"
    with pytest.raises(ConfigError) as err:
        parse_rules(text, "mauth.conf")
    assert str(err.value).startswith("mauth.conf:2: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "missing.conf")
    with pytest.raises(ConfigError, match="is a directory"):
        load_rules(tmp_path)
    bad = tmp_path / "bin.conf"
    bad.write_bytes(b"192.0.2.10 239.1.1.1 5\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin.conf:2: not valid UTF-8"):
        load_rules(bad)
    good = tmp_path / "good.conf"
    good.write_text(GOOD)
    assert len(load_rules(good).rules) == 3


def test_ipv6_lines_next_to_ipv4_ones():
    rules = parse_rules("""\
192.0.2.10          239.1.1.1     16
2001:db8:0:1::/64   ff0e::db8:1   8    pps=500   # a subnet to one group
2001:DB8:0:0::10    ff15::/16     4              # a trusted host to a site-local range
2001:db8::10        ff3e::8000:1  255
""")
    assert [str(r) for r in rules] == [
        "192.0.2.10 -> 239.1.1.1 max-ttl 16",
        "2001:db8:0:1::/64 -> ff0e::db8:1 max-ttl 8 pps 500",
        "2001:db8::10 -> ff15::/16 max-ttl 4",
        "2001:db8::10 -> ff3e::8000:1 max-ttl 255",
    ]
    with pytest.raises(ConfigError, match="^r.conf:2: \\(2001:db8::10, ff0e::1\\) is already authorized on line 1$"):
        parse_rules("2001:db8::10 ff0e::1 8\n2001:DB8:0::10 FF0E::0001 4\n", "r.conf")


@pytest.mark.parametrize("line, message", [
    ("2001:db8::10 ff02::1 5", "group ff02::1 is a link-scope group (scope 2 or smaller)"),
    ("2001:db8::10 ff02::/16 5", "holds only link-scope groups"),
    ("fe80::1 ff0e::1 5", "link-local"),
    ("::ffff:192.0.2.10 ff0e::1 5", "write the IPv4 address 192.0.2.10 instead"),
    ("2001:db8::10 239.1.1.1 5", "different address families"),
    ("2001:db8::/64 ff0e::/16 5", "a source prefix and a group prefix"),
    ("2001:db8::10 ff0e::1 256", "outside 1-255"),
])
def test_ipv6_errors_name_the_line(line, message):
    with pytest.raises(ConfigError) as err:
        parse_rules("2001:db8::10 ff0e::2 8\n" + line + "\n", "mauth.conf")
    assert str(err.value).startswith("mauth.conf:2: ") and message in str(err.value)
    assert "\n" not in str(err.value)


# --- receiver and interface lines (mauthcore/receivers.py) ----------------------------------

RECEIVERS = """\
192.0.2.10   239.1.1.1   16
receiver 10.1.0.0/24  239.1.0.0/16                    iface=eth1
receiver 10.1.0.7     232.1.1.1     source=192.0.2.10   # SSM
receiver fe80::/10    ff0e::db8:0/112  iface=eth1
interface eth1 closed limit=20
interface eth2 monitor
192.0.2.11   239.1.1.2   1
"""


def test_receiver_and_interface_lines(tmp_path):
    from mauthcore.receivers import IfacePolicy, ReceiverRule
    from mauthcore.rulefile import parse_rule_file

    rf = parse_rule_file(RECEIVERS, "mauth.conf")
    assert rf.rules == (Rule.make("192.0.2.10", "239.1.1.1", 16), Rule.make("192.0.2.11", "239.1.1.2", 1))
    assert rf.receivers == (ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1"),
                            ReceiverRule.make("10.1.0.7", "232.1.1.1", source="192.0.2.10"),
                            ReceiverRule.make("fe80::/10", "ff0e::db8:0/112", iface="eth1"))
    assert rf.interfaces == (IfacePolicy.make("eth1", "closed", 20), IfacePolicy.make("eth2", "monitor"))
    assert parse_rules(RECEIVERS) == rf.rules
    path = tmp_path / "mauth.conf"
    path.write_text(RECEIVERS)
    loaded = load_rules(path)
    assert (loaded.path, loaded.receivers, loaded.interfaces) == (str(path), rf.receivers, rf.interfaces)
    # A file's own words read back as the same rules.
    again = "\n".join(" ".join(r.words()) for r in (*rf.receivers, *rf.interfaces))
    assert parse_rule_file(again).receivers == rf.receivers and parse_rule_file(again).interfaces == rf.interfaces


@pytest.mark.parametrize(
    "line,message",
    [
        ("receiver 10.1.0.0/24", "a receiver line is"),
        ("receiver 10.1.0.0/24 239.1.0.0/16 port=5", "is not source=ADDRESS or iface=NAME"),
        ("receiver 10.1.0.0/24 239.1.0.0/16 iface=eth1 iface=eth2", "iface is given twice"),
        ("receiver 10.1.0.0/24 10.2.0.0/16", "multicast"),
        ("receiver 239.1.0.0/16 239.1.0.0/16", "overlaps the multicast range"),
        ("receiver 10.1.0.0/24 ff0e::1", "different address families"),
        ("receiver 10.1.0.7 232.1.1.1 source=0.0.0.0", "cannot be the address of a sender"),
        ("receiver 10.1.0.0/24 239.1.0.0/16 iface=a/b", "not a Linux interface name"),
        ("receiver 10.1.0.0/24 239.1.0.0/16 iface=eth1", "already on line 1"),
        ("interface eth1", "an interface line is"),
        ("interface eth1 shut", "not open, closed or monitor"),
        ("interface eth1 closed limit=70000", "outside 0..65535"),
        ("interface eth1 closed limit=x", "not a whole number"),
        ("interface eth1 closed max=3", "is not limit=N"),
        ("interface eth9 open", None),
    ],
)
def test_receiver_line_errors_name_the_file_and_line(line, message):
    text = "receiver 10.1.0.0/24 239.1.0.0/16 iface=eth1\n" + line + "\n"
    if message is None:  # a valid line: the file parses
        assert len(parse_rules(text, "mauth.conf")) == 0
        return
    with pytest.raises(ConfigError) as err:
        parse_rules(text, "mauth.conf")
    assert str(err.value).startswith("mauth.conf:2: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_interface_set_twice_is_refused():
    with pytest.raises(ConfigError, match=r"^r.conf:3: interface eth1 is already set on line 1$"):
        parse_rules("interface eth1 closed\n\ninterface eth1 open limit=4\n", "r.conf")
