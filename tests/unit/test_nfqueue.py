"""The NFQUEUE backend without the kernel: verdicts, counters, the state file, the iptables rules.

The verdict function runs on the L3 part of every row of the shared case
table (tests/policy_cases.py) and must give the model's verdict for the
whole frame: what NFQUEUE delivers is the IPv4 packet behind whatever link
header the XDP filter saw. iptables is a fake that executes (a chain that
rules really go into and out of), so "exactly our rules" can be asserted;
the real iptables and the real queue are exercised by
tests/integration/test_nfqueue.py.
"""

from __future__ import annotations

import ipaddress
import shlex
import sqlite3
import struct
import subprocess

import pytest
from scapy.layers.inet import IP

from mauthcore.protocol import v2
from mauthcore.protocol.errors import BackendUnsupported, Exists, NotFound, ReplyCode, TableFull
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import Mode, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.v2 import Add, GetCounters, Hello, Remove, Replace, Request
from mauthcore.rules import Rule, RuleKey
from musersd.dataplane import DataPlaneError
from musersd.maps import REASONS
from musersd.nfqueue import STATE_FILE, Hooks, Iptables, NfqueueFilter, hook_specs, ip_checksum, parse_listing, with_ttl
from musersd.nfqueue_backend import NfqueueBackend
from musersd.policy import RateBuckets, decide
from tests.policy_cases import (
    ALL_RULES,
    CASES,
    GROUP,
    PREFIX_CASES,
    PREFIX_GROUP,
    SENDER,
    STRANGER,
    SUBNET_HOST,
    as_rules,
    udp,
)

TABLE = CASES + PREFIX_CASES  # every row holds under ALL_RULES

A = ipaddress.IPv4Address


def _network_layer(frame: bytes) -> tuple[int, bytes] | None:
    """(EtherType, payload) of `frame` after Ethernet and up to two VLAN tags, None if truncated."""
    if len(frame) < 14:
        return None
    (proto,) = struct.unpack_from("!H", frame, 12)
    off = 14
    for _ in range(2):
        if proto not in (0x8100, 0x88A8):
            break
        if len(frame) < off + 4:
            return None
        (proto,) = struct.unpack_from("!H", frame, off + 2)
        off += 4
    return proto, frame[off:]


def l3_part(frame: bytes) -> bytes | None:
    """The IPv4 packet in `frame` after Ethernet and up to two VLAN tags, None if there is none."""
    found = _network_layer(frame)
    return found[1] if found is not None and found[0] == 0x0800 else None


def is_ipv6(frame: bytes) -> bool:
    found = _network_layer(frame)
    return found is not None and found[0] == 0x86DD


class FakeIptables:
    """A mangle PREROUTING chain that `iptables -I/-D/-S [-v]` really changes."""

    def __init__(self, rules: list[list[str]] | None = None):
        self.chain: list[list] = [[list(r), 0, 0] for r in (rules or [])]
        self.calls: list[list[str]] = []
        self.fail_on: str | None = None  # an argument that makes -I fail

    def __call__(self, argv, capture_output=True, text=True, timeout=None):
        self.calls.append(argv)
        assert argv[:5] == ["iptables", "-w", "10", "-t", "mangle"]
        op, chain, *spec = argv[5:]
        assert chain == "PREROUTING"
        if op == "-S":
            lines = ["-P PREROUTING ACCEPT" + (" -c 0 0" if spec == ["-v"] else "")]
            for rule, p, b in self.chain:
                lines.append("-A PREROUTING " + shlex.join(rule) + (f" -c {p} {b}" if spec == ["-v"] else ""))
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")
        if op == "-I":
            if self.fail_on and self.fail_on in spec:
                return subprocess.CompletedProcess(argv, 2, "", "iptables: No chain/target/match by that name.\n")
            self.chain.insert(0, [spec, 0, 0])
            return subprocess.CompletedProcess(argv, 0, "", "")
        if op == "-D" and len(spec) == 1:  # by number
            n = int(spec[0])
            if not 1 <= n <= len(self.chain):
                return subprocess.CompletedProcess(argv, 1, "", "iptables: Index of deletion too big.\n")
            del self.chain[n - 1]
            return subprocess.CompletedProcess(argv, 0, "", "")
        if op == "-D":
            for i, (rule, _, _) in enumerate(self.chain):
                if rule == spec:
                    del self.chain[i]
                    return subprocess.CompletedProcess(argv, 0, "", "")
            return subprocess.CompletedProcess(argv, 1, "", "iptables: Bad rule (does a matching rule exist?).\n")
        raise AssertionError(f"unexpected iptables call {argv}")

    def rules(self) -> list[list[str]]:
        return [r for r, _, _ in self.chain]

    def count(self, comment: str, packets: int, octets: int) -> None:
        for entry in self.chain:
            if comment in entry[0]:
                entry[1] += packets
                entry[2] += octets


@pytest.fixture
def ipt():
    return FakeIptables()


@pytest.fixture
def filt(tmp_path, ipt):
    f = NfqueueFilter(tmp_path / "state", queue_num=12, iptables=Iptables(run=ipt)).open()
    for rule in as_rules(ALL_RULES):
        f.add_rule(rule)
    yield f
    f.close()


# ---------------------------------------------------------------------------
# the case table through the verdict function
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", TABLE, ids=lambda c: c.name)
def test_case_table_l3_part_gets_the_models_verdict(filt, case):
    model = decide(case.frame, ALL_RULES, Mode.ENFORCE)
    assert (model.action, model.reason, model.new_ttl) == (case.action, case.reason, case.new_ttl)
    packet = l3_part(case.frame)
    if packet is None:
        # No IPv4 packet in the frame: the kernel never hands it to an IPv4 hook
        # (this backend leaves IPv6 to the kernel, whatever the XDP filter would do).
        assert model.reason in ("not_ip", "malformed") or is_ipv6(case.frame)
        return
    j = filt.judge(packet)
    assert j.verdict == model
    assert j.accept == (model.action == "pass")
    if model.new_ttl is None:
        assert j.payload is None
    else:
        assert j.payload is not None and len(j.payload) == len(packet)
        assert j.payload[8] == model.new_ttl
        hdr_len = (packet[0] & 0x0F) * 4
        assert ip_checksum(j.payload[:hdr_len]) == 0  # a header with a valid checksum sums to zero
        assert j.payload[:8] == packet[:8] and j.payload[9:10] == packet[9:10]
        assert j.payload[12:] == packet[12:]


@pytest.mark.parametrize("case", [c for c in TABLE if l3_part(c.frame) is not None], ids=lambda c: c.name)
def test_monitor_mode_accepts_with_the_same_reason_and_rewrites_nothing(filt, case):
    filt.set_mode(Mode.MONITOR)
    j = filt.judge(l3_part(case.frame))
    assert (j.accept, j.verdict.reason, j.payload) == (True, decide(case.frame, ALL_RULES, Mode.MONITOR).reason, None)


def test_counters_match_the_models_reasons_over_the_whole_table(filt):
    expect = {name: [0, 0] for name in REASONS.values()}
    passed: dict = {}
    denied: dict = {}
    for case in TABLE:
        packet = l3_part(case.frame)
        if packet is None:
            continue
        v = decide(case.frame, ALL_RULES)
        expect[v.reason][0] += 1
        expect[v.reason][1] += len(packet)
        if v.reason == "passed":
            passed[v.rule] = passed.get(v.rule, 0) + 1  # counted on the rule, a prefix rule for a subnet's host
        elif v.reason in ("unauthorized", "ttl"):
            denied[v.key] = (denied.get(v.key, (0,))[0] + 1, v.reason, v.ttl)
        filt.judge(packet, now=1000.0)
    got = filt.counters()
    assert {name: [c["packets"], c["bytes"]] for name, c in got.items()} == expect
    assert {k: filt.get_rule(RuleKey(*k)).packets for k in passed} == passed
    assert filt.get_rule(RuleKey(A(SENDER), A(GROUP))).last_seen == 1_000_000  # ms
    table = {(d.source, d.group): (d.packets, str(d.reason), d.last_ttl) for d in filt.denied()}
    assert table == denied


def test_a_packet_the_queue_copied_only_in_part_is_judged_by_its_headers(filt):
    sap = bytes(IP(src=STRANGER, dst="224.2.127.254", ttl=64, proto=17) / b"\x26\x93\x26\x93\x00\x10\x00\x00"
                / (b"s" * 5000))
    assert filt.judge(sap).accept
    j = filt.judge(sap[:4016])  # the header says more bytes than were copied
    assert (j.accept, j.verdict.reason) == (False, "sap_local")  # a rewrite would cut it short: dropped
    big = bytes(IP(src=STRANGER, dst=GROUP, ttl=2) / (b"j" * 8000))
    j = filt.judge(big[:4016])
    assert (j.accept, j.verdict.reason) == (False, "unauthorized")  # not "malformed": ip_rcv() checked the length
    ok = bytes(IP(src=SENDER, dst=GROUP, ttl=2) / (b"j" * 8000))
    j = filt.judge(ok[:4016])
    assert (j.accept, j.verdict.reason, j.payload) == (True, "passed", None)
    assert filt.get_rule((SENDER, GROUP)).octets == len(ok)


def test_with_ttl_gives_the_header_scapy_would_build():
    for options in ([], [b"\x94\x04\x00\x00"]):
        pkt = IP(src="192.0.2.66", dst="224.2.127.254", ttl=200, options=options) / b"payload"
        out = with_ttl(bytes(pkt), 1)
        pkt.ttl = 1
        del pkt.chksum
        assert out == bytes(pkt)


# ---------------------------------------------------------------------------
# rules and the denied table
# ---------------------------------------------------------------------------


def test_rule_errors_change_nothing(tmp_path, ipt):
    f = NfqueueFilter(tmp_path, max_rules=2, iptables=Iptables(run=ipt)).open()
    f.add_rule(("192.0.2.10", "239.1.1.1", 8))
    with pytest.raises(Exists):
        f.add_rule(("192.0.2.10", "239.1.1.1", 9))
    assert f.get_rule(("192.0.2.10", "239.1.1.1")).rule.max_ttl == 8
    with pytest.raises(NotFound):
        f.remove_rule(("192.0.2.11", "239.1.1.1"))
    with pytest.raises(DataPlaneError, match="not a multicast"):
        f.add_rule(("192.0.2.10", "10.0.0.1", 8))
    f.add_rule(("192.0.2.11", "239.1.1.1", 8))
    with pytest.raises(TableFull, match="full"):
        f.add_rule(("192.0.2.12", "239.1.1.1", 8))
    with pytest.raises(TableFull):
        f.apply([Rule.make(f"192.0.2.{i}", "239.1.1.1", 3) for i in range(20, 23)])
    ipv6 = Rule.make("2001:db8::1", "ff0e::1", 4)
    for change in (f.add_rule, f.replace_rule):
        with pytest.raises(DataPlaneError, match="the nfqueue backend filters IPv4 only"):
            change(ipv6)
    with pytest.raises(DataPlaneError, match="IPv4 only"):  # a rule file with one IPv6 line
        f.apply([Rule.make("192.0.2.10", "239.1.1.1", 8), Rule.make("2001:db8:0:1::/64", "ff0e::db8:1", 8)])
    assert sorted(str(r.rule) for r in f.rules()) == ["192.0.2.10 -> 239.1.1.1 max-ttl 8",
                                                      "192.0.2.11 -> 239.1.1.1 max-ttl 8"]
    f.close()
    assert NfqueueFilter(tmp_path).open().rule_count() == 2


def test_denied_table_is_bounded_and_forgets_a_pair_that_gets_a_rule(tmp_path, ipt):
    f = NfqueueFilter(tmp_path, max_denied=16, iptables=Iptables(run=ipt)).open()
    for i in range(20):
        f.judge(bytes(IP(src=f"192.0.2.{100 + i}", dst=GROUP, ttl=4) / b"x"), now=float(i))
    f.judge(bytes(IP(src="192.0.2.104", dst=GROUP, ttl=5) / b"x"), now=30.0)  # seen again: most recent
    entries = f.denied()
    assert len(entries) == 16
    assert entries[0].source == A("192.0.2.104") and entries[0].packets == 2 and entries[0].last_ttl == 5
    assert {str(e.source) for e in entries} == {f"192.0.2.{100 + i}" for i in range(4, 20)}
    f.add_rule(("192.0.2.110", GROUP, 4))
    assert A("192.0.2.110") not in {e.source for e in f.denied()}
    f.replace_rule(("192.0.2.110", GROUP, 3))
    assert f.judge(bytes(IP(src="192.0.2.110", dst=GROUP, ttl=4) / b"x")).verdict.reason == "ttl"
    f.replace_rule(("192.0.2.111", GROUP, 3))
    assert A("192.0.2.111") not in {e.source for e in f.denied()}
    assert f.clear_denied() == 15 and f.denied() == []


def test_rate_limits_run_the_programs_buckets_on_the_filters_clock(tmp_path, ipt):
    clock = [10**12]
    f = NfqueueFilter(tmp_path, iptables=Iptables(run=ipt), clock=lambda: clock[0]).open()
    f.add_rule(Rule.make(SENDER, GROUP, 8, pps=20))  # a bucket of 2 packets (100 ms of the rate)
    f.add_rule(Rule.make("192.0.2.128/25", PREFIX_GROUP, 8, bps=200_000))  # one bucket for the whole subnet
    model = RateBuckets(clock[0])
    table = {(A(SENDER), A(GROUP)): f.get_rule((SENDER, GROUP)).rule,
             (ipaddress.IPv4Network("192.0.2.128/25"), A(PREFIX_GROUP)): f.get_rule(("192.0.2.128/25",
                                                                                     PREFIX_GROUP)).rule}
    frames = [udp(SENDER, GROUP, 4), udp(SUBNET_HOST, PREFIX_GROUP, 4, b"z" * 1000),
              udp("192.0.2.200", PREFIX_GROUP, 4, b"z" * 1000)]
    got, want = [], []
    for step in range(60):
        clock[0] += 7_000_000 * (step % 5)  # 0 to 28 ms apart
        model.now = clock[0]
        for frame in frames:
            got.append(f.judge(frame[14:]).verdict.reason)
            want.append(decide(frame, table, within_rate=model).reason)
    assert got == want
    assert {"passed", "rate"} <= set(got)
    assert f.counters()["rate"]["packets"] == got.count("rate")
    assert {d.reason for d in f.denied()} == {Reason.RATE}
    # Removed and added again: the buckets start full, as a new rule's do in the program.
    while f.judge(frames[0][14:]).verdict.reason == "passed":
        pass
    f.remove_rule((SENDER, GROUP))
    f.add_rule(Rule.make(SENDER, GROUP, 8, pps=20))
    assert f.judge(frames[0][14:]).verdict.reason == "passed"


def test_prefix_rules_count_on_the_rule_and_clear_the_pairs_they_cover(filt):
    stranger_in_subnet = "192.0.2.140"
    filt.remove_rule(("192.0.2.128/25", PREFIX_GROUP))
    assert filt.judge(bytes(IP(src=stranger_in_subnet, dst=PREFIX_GROUP, ttl=3) / b"x")).verdict.reason == \
        "unauthorized"
    filt.judge(bytes(IP(src=STRANGER, dst=GROUP, ttl=3) / b"x"))
    filt.add_rule(("192.0.2.128/25", PREFIX_GROUP, 8))
    assert {str(d.source) for d in filt.denied()} == {STRANGER}  # the subnet's host is covered now
    for src in (stranger_in_subnet, SUBNET_HOST):
        assert filt.judge(bytes(IP(src=src, dst=PREFIX_GROUP, ttl=3) / b"x")).accept
    assert filt.get_rule(("192.0.2.128/25", PREFIX_GROUP)).packets == 2


def test_candidates_are_the_rules_find_rule_could_pick_and_no_others(filt):
    for i in range(250):  # prefix rules for other groups and other sources: never candidates
        filt.add_rule((f"10.{i}.0.0/16", "239.7.7.7", 4))
        filt.add_rule((f"198.51.100.{i % 200 + 1}", f"239.{64 + i % 64}.0.0/16", 4))
    got = filt._table.candidates(A(SUBNET_HOST), A(PREFIX_GROUP))
    assert {(str(s), str(g)) for s, g in got} == {("192.0.2.128/25", PREFIX_GROUP), ("192.0.2.192/26", PREFIX_GROUP)}
    assert list(filt._table.candidates(A(SENDER), A(GROUP))) == [(A(SENDER), A(GROUP))]  # an exact rule: alone
    assert filt._table.candidates(A(STRANGER), A("239.99.0.1")) == {}
    filt.remove_rule(("192.0.2.192/26", PREFIX_GROUP))
    assert len(filt._table.candidates(A(SUBNET_HOST), A(PREFIX_GROUP))) == 1


# ---------------------------------------------------------------------------
# the state file
# ---------------------------------------------------------------------------


def test_rules_and_mode_survive_a_reopen(tmp_path, ipt):
    f = NfqueueFilter(tmp_path, iptables=Iptables(run=ipt)).open()
    assert f.created
    state_id = f.state_id
    f.add_rule(("192.0.2.10", "239.1.1.1", 8))
    f.add_rule(("192.0.2.11", "239.1.1.2", 2))
    f.add_rule(("192.0.2.12", "239.1.1.3", 2))
    f.add_rule(Rule.make("192.0.2.128/25", "239.1.1.3", 5, pps="2k", bps="1.5M"))
    f.add_rule(("192.0.2.20", "239.192.0.0/14", 7))
    assert f.replace_rule(("192.0.2.10", "239.1.1.1", 9)) is False  # replaced, not created
    f.remove_rule(("192.0.2.12", "239.1.1.3"))
    f.set_mode("monitor")
    f.judge(bytes(IP(src="192.0.2.10", dst="239.1.1.1", ttl=4) / b"x"))
    f.close()

    g = NfqueueFilter(tmp_path).open()
    assert not g.created and g.state_id == state_id
    assert g.mode is Mode.MONITOR
    assert [(str(r.rule.source), str(r.rule.group), r.rule.terms, r.packets) for r in g.rules()] == [
        ("192.0.2.10", "239.1.1.1", (9, 0, 0), 0), ("192.0.2.11", "239.1.1.2", (2, 0, 0), 0),
        ("192.0.2.20", "239.192.0.0/14", (7, 0, 0), 0),
        ("192.0.2.128/25", "239.1.1.3", (5, 2000, 1_500_000), 0)]  # counters are not kept
    assert g.apply([Rule.make("192.0.2.11", "239.1.1.2", 3), Rule.make("192.0.2.13", "239.1.1.1", 1)]) == (1, 1, 3)
    g.close()
    h = NfqueueFilter(tmp_path).open()
    assert {(str(r.rule.source), r.rule.max_ttl) for r in h.rules()} == {("192.0.2.11", 3), ("192.0.2.13", 1)}
    assert h.flush() == 2
    h.close()
    assert NfqueueFilter(tmp_path).open().rule_count() == 0


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(DataPlaneError, match="unusable"):
        NfqueueFilter(tmp_path).open()
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / STATE_FILE)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    db.commit()
    db.close()
    with pytest.raises(DataPlaneError, match="not a mauth nfqueue state file"):
        NfqueueFilter(other).open()


def test_a_state_dir_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataPlaneError, match="cannot open the state file"):
        NfqueueFilter(blocker / "state").open()


def test_bad_settings_are_refused():
    with pytest.raises(DataPlaneError, match="queue number"):
        NfqueueFilter("/nonexistent", queue_num=70000)
    with pytest.raises(DataPlaneError, match="SAP group"):
        NfqueueFilter("/nonexistent", sap_groups=["224.0.0.1"])


# ---------------------------------------------------------------------------
# iptables rules
# ---------------------------------------------------------------------------

# What `iptables -t mangle -S PREROUTING -v` printed here (iptables v1.8.9 nf_tables) for one interface.
REAL_LISTING = """\
-P PREROUTING ACCEPT -c 0 0
-A PREROUTING -i lo ! -p igmp -m iprange --dst-range 224.0.1.0-239.255.255.255 -m comment --comment mauth-lo -c 7 700 -j NFQUEUE --queue-num 7575
-A PREROUTING ! -d 224.0.0.0/4 -i lo -m comment --comment "mauth-lo:not_multicast" -c 3 300
-A PREROUTING -i lo -p igmp -m iprange --dst-range 224.0.1.0-239.255.255.255 -m comment --comment "mauth-lo:igmp" -c 2 64
-A PREROUTING -d 224.0.0.0/24 -i lo -m comment --comment "mauth-lo:link_local" -c 5 420
-A PREROUTING -i lo0 -m comment --comment "mauth-lo0" -c 1 1
-A PREROUTING -i lo -m comment --comment "operator: mauth-lo" -c 1 1
"""  # noqa: E501


def test_parse_listing_reads_owner_and_counters():
    rules = parse_listing(REAL_LISTING)
    assert [r.owner() for r in rules] == [("lo", ""), ("lo", "not_multicast"), ("lo", "igmp"), ("lo", "link_local"),
                                          ("lo0", ""), None]
    assert [(r.packets, r.octets) for r in rules[:4]] == [(7, 700), (3, 300), (2, 64), (5, 420)]
    assert rules[0].argv[-4:] == ("-j", "NFQUEUE", "--queue-num", "7575") and "-c" not in rules[0].argv


def test_hook_specs_queue_routable_multicast_only_and_never_bypass():
    specs = hook_specs("in0", 7)
    queue = specs[0]
    assert queue[-4:] == ["-j", "NFQUEUE", "--queue-num", "7"] and "--queue-bypass" not in queue
    assert "224.0.1.0-239.255.255.255" in queue and queue[queue.index("-p") - 1] == "!"
    assert all("-j" not in s for s in specs[1:])  # the others only count
    assert [s[s.index("--comment") + 1] for s in specs] == ["mauth-in0", "mauth-in0:link_local", "mauth-in0:igmp",
                                                             "mauth-in0:not_multicast"]


def test_install_replaces_stale_rules_of_the_interface_and_remove_takes_exactly_ours():
    operator = ["-i", "in0", "-d", "239.9.9.9", "-m", "comment", "--comment", "operator", "-j", "ACCEPT"]
    stale = hook_specs("in0", 99)  # a crashed musersd with another queue number
    other = hook_specs("in1", 99)  # an interface this musersd does not guard
    ipt = FakeIptables([operator, *stale, *other])
    hooks = Hooks(Iptables(run=ipt), 12)
    hooks.install("in0")
    assert ipt.rules() == [*hook_specs("in0", 12), operator, *other]
    inserted = [c for c in ipt.calls if c[5] == "-I"]
    first_delete = next(i for i, c in enumerate(ipt.calls) if c[5] == "-D")
    assert ipt.calls.index(inserted[-1]) < first_delete  # no gap: the new rules are in before the old go
    # A stale rule identical to a new one behind an operator's rule: the copy at the top stays.
    ipt.chain.insert(0, [operator, 0, 0])
    ipt.chain.insert(1, [hook_specs("in0", 12)[1], 0, 0])
    Hooks(Iptables(run=ipt), 12).install("in0")
    assert ipt.rules() == [*hook_specs("in0", 12), operator, operator, *other]
    del ipt.chain[len(hook_specs("in0", 12))]
    ipt.count("mauth-in0:link_local", 5, 420)
    ipt.count("mauth-in0:not_multicast", 3, 300)
    ipt.count("mauth-in1:link_local", 100, 100)  # not ours to count
    assert hooks.counters() == {"link_local": [5, 420], "igmp": [0, 0], "not_multicast": [3, 300]}
    assert hooks.remove("in0") is True
    assert ipt.rules() == [operator, *other]
    assert hooks.remove("in0") is True  # nothing installed any more: nothing to do


def test_an_interface_guarded_by_a_running_musersd_is_refused():
    theirs = hook_specs("in0", 99)
    ipt = FakeIptables(theirs)
    with pytest.raises(DataPlaneError, match="in0 is guarded by another running musersd .NFQUEUE 99."):
        Hooks(Iptables(run=ipt), 12, bound=lambda: {99, 12}).install("in0")
    assert ipt.rules() == theirs
    Hooks(Iptables(run=ipt), 12, bound=lambda: {12}).install("in0")  # 99 has nobody: a crashed one's rules
    assert ipt.rules() == hook_specs("in0", 12)


def test_install_that_fails_half_way_leaves_nothing_behind():
    ipt = FakeIptables()
    ipt.fail_on = "224.0.0.0/24"
    hooks = Hooks(Iptables(run=ipt), 12)
    with pytest.raises(DataPlaneError, match="No chain/target/match"):
        hooks.install("in0")
    assert ipt.rules() == [] and hooks.installed == {}


def test_a_rule_removed_behind_our_back_is_reported(caplog):
    ipt = FakeIptables()
    hooks = Hooks(Iptables(run=ipt), 12)
    hooks.install("in0")
    del ipt.chain[0]
    assert hooks.remove("in0") is False
    assert ipt.rules() == []
    assert "Bad rule" in caplog.text


def test_attach_of_a_missing_interface_is_a_clear_error(filt, ipt):
    with pytest.raises(DataPlaneError, match="does not exist"):
        filt.attach("mauth-no-such0")
    assert ipt.rules() == []


def test_counters_add_the_counting_rules(filt, ipt):
    filt.hooks.install("lo")
    ipt.count("mauth-lo:igmp", 2, 64)
    filt.judge(bytes(IP(src=STRANGER, dst="224.0.0.5", ttl=1) / b"x"))  # never queued in the kernel, but judged
    c = filt.counters()
    assert c["igmp"] == {"packets": 2, "bytes": 64}
    assert c["link_local"]["packets"] == 1


# ---------------------------------------------------------------------------
# answering the kernel
# ---------------------------------------------------------------------------


class FakePacket:
    """netfilterqueue.Packet's verdict surface: records the one verdict given."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.verdicts: list[tuple] = []

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, data: bytes) -> None:
        self.verdicts.append(("set_payload", data))

    def accept(self) -> None:
        self.verdicts.append(("accept",))

    def drop(self) -> None:
        self.verdicts.append(("drop",))


def test_callback_answers_once_per_packet(filt):
    ok = FakePacket(bytes(IP(src=SENDER, dst=GROUP, ttl=3) / b"x"))
    bad = FakePacket(bytes(IP(src=STRANGER, dst=GROUP, ttl=3) / b"x"))
    sap = FakePacket(bytes(IP(src=STRANGER, dst="239.255.255.255", ttl=9, proto=17)
                           / b"\x26\x93\x26\x93\x00\x0c\x00\x00xxxx"))
    for p in (ok, bad, sap):
        filt._on_packet(p)
    assert ok.verdicts == [("accept",)]
    assert bad.verdicts == [("drop",)]
    assert sap.verdicts[1] == ("accept",) and sap.verdicts[0][0] == "set_payload"
    assert IP(sap.verdicts[0][1]).ttl == 1


def test_a_bug_while_judging_drops_the_packet_and_is_kept_for_the_daemon(filt, monkeypatch):
    monkeypatch.setattr(filt, "judge", lambda packet: 1 / 0)
    p = FakePacket(bytes(IP(src=SENDER, dst=GROUP, ttl=3) / b"x"))
    filt._on_packet(p)
    assert p.verdicts == [("drop",)]
    assert isinstance(filt.failure, ZeroDivisionError)


# ---------------------------------------------------------------------------
# the protocol backend
# ---------------------------------------------------------------------------


def test_protocol_backend_over_the_nfqueue_filter(filt):
    b = NfqueueBackend(filt)
    assert b.counters().backend == "nfqueue"
    with pytest.raises(Exists):
        b.add(Rule.make(SENDER, GROUP, 3))
    with pytest.raises(NotFound):
        b.remove(RuleKey.make("192.0.2.99", GROUP))
    with pytest.raises(BackendUnsupported, match="IPv4 only"):
        b.add(Rule.make("2001:db8::1", "ff0e::1", 4))
    for i in range(10):
        b.add(Rule.make(f"192.0.2.{20 + i}", "239.2.0.1", 5))
    seen, cursor = [], b""
    while True:
        page = b.list(cursor, 3)
        seen += [e.rule for e in page.items]
        cursor = page.cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == len(ALL_RULES) + 10 == b.counters().rule_count
    filt.judge(bytes(IP(src=STRANGER, dst=GROUP, ttl=7) / b"x"))
    (d,) = b.denied(b"", 10).items
    assert (str(d.source), d.reason, d.last_ttl) == (STRANGER, Reason.UNAUTHORIZED, 7)
    assert b.counters().by_reason()[Reason.UNAUTHORIZED].packets == 1
    b.set_mode(Mode.MONITOR)
    assert b.get_mode() == Mode.MONITOR and filt.mode is Mode.MONITOR
    assert b.flush() == len(ALL_RULES) + 10


def test_frames_built_by_the_table_helper_really_carry_an_l3_part():
    assert l3_part(udp(SENDER, GROUP, 3))[:1] == b"\x45"


def test_an_ipv6_rule_over_protocol_v2_is_unsupported_and_changes_nothing(filt, tmp_path):
    """What a manager sees: UNSUPPORTED with one sentence; the table and the state file stay as they were."""
    keys = KeyRing([Key(1, b"\x01" * 32)])
    server = ServerCore(NfqueueBackend(filt), keys, 7, filt.state_id, lambda host: False)
    peer = ("192.0.2.1", 4000)

    def call(body, seq, session=0, epoch=0):
        wire = v2.encode_request(Request(body, 1, epoch, session, seq), keys)
        return v2.decode_response(server.receive(wire, peer, 0.0), keys)

    hello = call(Hello(), 1)
    session, epoch = hello.body.session, hello.epoch

    def state_rows():
        with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
            return sorted(db.execute("SELECT * FROM rules").fetchall())

    before_rows, before = state_rows(), sorted(str(r.rule) for r in filt.rules())
    for n, body in enumerate((Add(Rule.make("2001:db8::1", "ff0e::1", 8)),
                              Replace(Rule.make("2001:db8:0:1::/64", "ff0e::db8:1", 8, pps=100)),
                              Add(Rule.make("2001:db8::10", "ff15::/16", 8))), start=2):
        reply = call(body, n, session, epoch)
        assert reply.status == ReplyCode.UNSUPPORTED
        assert reply.body.message.startswith("the nfqueue backend filters IPv4 only, so it cannot hold the rule")
        assert "\n" not in reply.body.message
    assert call(Remove(RuleKey.make("2001:db8::1", "ff0e::1")), 5, session, epoch).status == ReplyCode.NOT_FOUND
    assert sorted(str(r.rule) for r in filt.rules()) == before and state_rows() == before_rows
    assert call(GetCounters(), 6, session, epoch).body.rule_count == len(ALL_RULES)


def test_musersd_refuses_a_rule_file_with_ipv6_lines_for_the_nfqueue_backend(tmp_path, ipt, caplog):
    from musersd.daemon import Musersd, Options, StartupError

    conf = tmp_path / "mauth.conf"
    conf.write_text("192.0.2.10 239.1.1.1 8\n2001:db8:0:1::/64 ff0e::db8:1 8\n")
    with pytest.raises(StartupError) as err:
        Musersd(Options(ifaces=["eth1"], config=str(conf), backend="nfqueue", state_dir=str(tmp_path / "s")))
    assert str(err.value) == (f"{conf}: the nfqueue backend filters IPv4 only, so it cannot hold the rule for"
                              " (2001:db8:0:1::/64, ff0e::db8:1)")
    assert not (tmp_path / "s").exists()  # refused before the state was touched
    # the XDP backend takes the same file
    assert len(Musersd(Options(ifaces=["eth1"], config=str(conf))).rule_file.rules) == 2

    # SIGHUP with an IPv6 line added: the file is rejected whole, the running rules stay
    conf.write_text("192.0.2.10 239.1.1.1 8\n")
    m = Musersd(Options(ifaces=["eth1"], config=str(conf), backend="nfqueue", state_dir=str(tmp_path / "s")))
    m.dp = NfqueueFilter(tmp_path / "s", iptables=Iptables(run=ipt)).open()
    m.dp.apply(m.rule_file.rules)
    conf.write_text("192.0.2.11 239.1.1.1 4\n2001:db8::10 ff0e::1 8\n")
    m.reload()
    assert [str(r.rule) for r in m.dp.rules()] == ["192.0.2.10 -> 239.1.1.1 max-ttl 8"]
    assert "rule file rejected" in caplog.text and "filters IPv4 only" in caplog.text
    m.dp.close()
