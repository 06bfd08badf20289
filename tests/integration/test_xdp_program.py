"""The compiled XDP program, run on crafted frames with BPF_PROG_TEST_RUN.

The same case table as the pure-Python model (tests/policy_cases.py): for
every frame the kernel's verdict and the reason counter it bumps must equal
the model's. Also: the ctypes mirrors match the object's BTF, counters count
exactly, the denied table records who tried, and pinned state outlives the
process that made it.
"""

from __future__ import annotations

import ctypes
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import Mode, Reason
from mauthcore.rules import Rule, RuleKey
from musersd import bpfobj, maps
from musersd.dataplane import DataPlane, DataPlaneError
from musersd.policy import decide
from tests.conftest import REPO
from tests.policy_cases import (
    CASES,
    EVERY_RULE,
    GROUP,
    IPV6_CASES,
    PREFIX_CASES,
    SENDER,
    STRANGER,
    as_rules,
    udp,
)

XDP_DROP, XDP_PASS = 1, 2
ACTIONS = {XDP_DROP: "drop", XDP_PASS: "pass"}

pytestmark = pytest.mark.integration


@pytest.fixture
def dp(pin_dir):
    plane = DataPlane(pin_dir, max_rules=1024).load()
    for rule in as_rules(EVERY_RULE):
        plane.add_rule(rule)
    yield plane
    plane.close()


def _reason_delta(before, after):
    return {r for r in after if after[r]["packets"] != before[r]["packets"]}


KERNEL_CASES = [c for c in CASES + PREFIX_CASES + IPV6_CASES if c.runnable_in_kernel]


@pytest.fixture(scope="module")
def case_dp(bpffs):
    """One filter with every rule of the case table for both modes: a load costs a minute in the emulated guest."""
    plane = DataPlane(bpffs / f"cases-{uuid.uuid4().hex[:8]}", max_rules=1024).load()
    for rule in as_rules(EVERY_RULE):
        plane.add_rule(rule)
    yield plane
    plane.close()


@pytest.mark.every_kernel  # the router tier's guest runs it too: the program proven on that verifier as well
@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
def test_kernel_matches_model_on_every_case(case_dp, mode):
    dp = case_dp
    dp.set_mode(mode)
    mismatches = []
    for case in KERNEL_CASES:
        before = dp.counters()
        run = dp.test_run(case.frame)
        after = dp.counters()
        model = decide(case.frame, EVERY_RULE, mode)
        got = (ACTIONS.get(run.retval, str(run.retval)), _reason_delta(before, after), _rewritten(case.frame, run.data))
        want = (model.action, {model.reason}, _expected_rewrite(case.frame, model.new_ttl))
        if got != want:
            mismatches.append((case.name, got, want))
        assert after[case.reason]["bytes"] - before[case.reason]["bytes"] == len(case.frame)
    assert mismatches == []


def _ip_offset(frame: bytes) -> int:
    off, proto = 14, int.from_bytes(frame[12:14], "big")
    while proto in (0x8100, 0x88A8):
        proto, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
    return off


def _rewritten(before: bytes, after: bytes) -> bytes | None:
    """None if the program left the frame as it was, else the frame it made."""
    return None if after == before else after


def _expected_rewrite(frame: bytes, new_ttl: int | None) -> bytes | None:
    """The frame with its TTL (hop limit) set and an IPv4 header checksum recomputed from scratch (scapy)."""
    if new_ttl is None:
        return None
    from scapy.layers.l2 import Ether

    pkt = Ether(frame)
    ip = pkt.getlayer("IP")
    if ip is None:
        pkt.getlayer("IPv6").hlim = new_ttl
    else:
        ip.ttl, ip.chksum = new_ttl, None
    out = bytes(pkt)
    off = _ip_offset(frame)
    assert out[:off] == frame[:off] and len(out) == len(frame)
    return out


def test_struct_sizes_match_the_compiled_object():
    with bpfobj.BPFObject(maps.OBJECT) as obj:
        for cname, (_, _, ktype, vtype, _) in maps.MAPS.items():
            assert obj.key_size(cname) == ctypes.sizeof(ktype), cname
            assert obj.value_size(cname) == ctypes.sizeof(vtype), cname
        assert obj.value_size(".rodata.opts") == ctypes.sizeof(maps.Opts)


def test_reason_names_match_the_header():
    header = maps.HEADER.read_text()
    defined = {int(v): n.lower() for n, v in re.findall(r"#define MAUTH_R_(\w+)\s+(\d+)", header) if n != "MAX"}
    assert defined == maps.REASONS


def test_rule_counters_count_exactly_and_denied_table_records_who_tried(dp):
    frame = udp(SENDER, GROUP, 5, b"z" * 100)
    for _ in range(37):
        assert dp.test_run(frame).retval == XDP_PASS
    rs = dp.get_rule((SENDER, GROUP))
    assert (rs.packets, rs.octets) == (37, 37 * len(frame))
    assert rs.last_seen > 0  # ms since the Unix epoch

    bad = udp(STRANGER, GROUP, 9)
    over = udp(SENDER, GROUP, 200)
    dp.test_run(bad, repeat=11)
    dp.test_run(over, repeat=3)
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert denied[(STRANGER, GROUP)].packets == 11
    assert denied[(STRANGER, GROUP)].octets == 11 * len(bad)
    assert denied[(STRANGER, GROUP)].reason == Reason.UNAUTHORIZED
    assert denied[(STRANGER, GROUP)].last_ttl == 9
    assert denied[(SENDER, GROUP)].reason == Reason.TTL
    assert denied[(SENDER, GROUP)].last_ttl == 200
    assert denied[(SENDER, GROUP)].packets == 3

    # Authorizing a denied pair clears its denied entry and lets it through at once.
    dp.add_rule(Rule.make(STRANGER, GROUP, 9))
    assert (STRANGER, GROUP) not in {(str(d.source), str(d.group)) for d in dp.denied()}
    assert dp.test_run(bad).retval == XDP_PASS


def test_add_replace_remove_take_effect_at_once(dp):
    frame = udp(STRANGER, GROUP, 10)
    assert dp.test_run(frame).retval == XDP_DROP
    dp.add_rule(Rule.make(STRANGER, GROUP, 10))
    assert dp.test_run(frame).retval == XDP_PASS
    dp.replace_rule(Rule.make(STRANGER, GROUP, 9))
    assert dp.test_run(frame).retval == XDP_DROP
    assert dp.get_rule((STRANGER, GROUP)).rule.max_ttl == 9
    dp.replace_rule(Rule.make(STRANGER, GROUP, 10))
    assert dp.test_run(frame).retval == XDP_PASS
    assert dp.get_rule((STRANGER, GROUP)).packets == 2  # replace keeps the counters
    dp.remove_rule((STRANGER, GROUP))
    assert dp.test_run(frame).retval == XDP_DROP


def test_invalid_input_raises_and_changes_nothing(dp):
    before = dp.rules()
    for bad in [
        (SENDER, "10.0.0.1", 5),  # not multicast
        (SENDER, "224.0.0.5", 5),  # link-local control group
        (SENDER, GROUP, 0),
        (SENDER, GROUP, 256),
        (SENDER, GROUP, "many"),
        ("239.9.9.9", GROUP, 5),  # multicast source
        ("0.0.0.0", GROUP, 5),
        ("not-an-address", GROUP, 5),
    ]:
        with pytest.raises(DataPlaneError):
            dp.add_rule(bad)
    with pytest.raises(Exists):
        dp.add_rule((SENDER, GROUP, 3))
    with pytest.raises(NotFound):
        dp.remove_rule((STRANGER, GROUP))
    with pytest.raises(DataPlaneError, match="does not exist"):
        dp.attach("mauth-no-such-if0")
    with pytest.raises(DataPlaneError):
        dp.set_mode("audit")
    assert dp.rules() == before
    assert dp.mode is Mode.ENFORCE


def test_table_full_is_an_error_and_slots_are_reused(pin_dir):
    with DataPlane(pin_dir, max_rules=4).load() as dp:
        for i in range(4):
            dp.add_rule((f"192.0.2.{i + 1}", GROUP, 5))
        with pytest.raises(TableFull):
            dp.add_rule(("192.0.2.99", GROUP, 5))
        dp.remove_rule(("192.0.2.2", GROUP))
        dp.add_rule(("192.0.2.99", GROUP, 5))
        assert len(dp.rules()) == 4
        slots = {v.slot for _, v in dp._map("mauth_rules4").items()}
        assert slots == {0, 1, 2, 3}
        # A reused slot starts with zero counters.
        assert dp.get_rule(("192.0.2.99", GROUP)).packets == 0


def test_flush_and_apply_touch_only_the_difference(dp):
    dp.test_run(udp(SENDER, GROUP, 2), repeat=5)
    wanted = [Rule.make(SENDER, GROUP, 16), Rule.make(STRANGER, GROUP, 4)]
    assert dp.apply(wanted) == (1, 0, len(EVERY_RULE) - 1)  # one added, none replaced, the others removed
    assert dp.get_rule((SENDER, GROUP)).packets == 5  # untouched rule kept its counters
    assert {str(r.rule) for r in dp.rules()} == {str(r) for r in wanted}
    assert dp.flush() == 2
    assert dp.rules() == []


def test_pinned_state_outlives_the_process_and_is_adopted(pin_dir):
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from musersd.dataplane import DataPlane
dp = DataPlane({str(pin_dir)!r}, max_rules=1024).load()
dp.add_rule(({SENDER!r}, {GROUP!r}, 7))
dp.set_mode("monitor")
print(dp.state_id)
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    state_id = int(out.stdout.strip())
    # Another process, reading only the pins: no compile, no program.
    with DataPlane(pin_dir).open() as reader:
        assert [str(r.rule) for r in reader.rules()] == [f"{SENDER} -> {GROUP} max-ttl 7"]
        assert reader.mode is Mode.MONITOR
        assert reader.state_id == state_id
    # A new loader adopts them rather than creating afresh.
    with DataPlane(pin_dir, max_rules=1024).load() as dp:
        assert not dp.created
        assert dp.state_id == state_id
        assert dp.test_run(udp(SENDER, GROUP, 7)).retval == XDP_PASS
        assert dp.test_run(udp(SENDER, GROUP, 8)).retval == XDP_PASS  # monitor mode was kept
        dp.set_mode("enforce")
        assert dp.test_run(udp(SENDER, GROUP, 8)).retval == XDP_DROP


def test_pins_of_another_size_are_refused_not_reinterpreted(pin_dir):
    with DataPlane(pin_dir, max_rules=1024).load() as dp:
        dp.add_rule((SENDER, GROUP, 7))
    with pytest.raises(DataPlaneError, match="1024 entries"):
        DataPlane(pin_dir, max_rules=2048).load()
    with DataPlane(pin_dir, max_rules=1024).load() as dp:
        assert len(dp.rules()) == 1


def test_open_without_pins_is_a_clear_error(pin_dir):
    with pytest.raises(DataPlaneError, match="no mauth maps"):
        DataPlane(pin_dir).open()


def test_pin_dir_must_be_on_bpffs(tmp_path):
    with pytest.raises(DataPlaneError, match="bpffs"):
        DataPlane(tmp_path / "pins").load()


def test_denied_table_set_hash_agrees_between_kernel_and_user_space(pin_dir):
    """The program and musersd.maps.denied_index() must pick the same set for a pair.

    User space finds a pair's entry only through its own copy of the hash (to
    forget it when the pair is authorized), so every pair the kernel recorded
    must be forgotten by authorizing it. 200 random pairs, exact counts first.
    """
    import random

    from musersd.maps import denied_index

    rng = random.Random(5)
    with DataPlane(pin_dir, max_rules=1024, max_denied=4096).load() as dp:
        pairs = {(f"192.0.2.{rng.randint(2, 250)}", f"239.{rng.randint(0, 255)}.{rng.randint(0, 255)}.9")
                 for _ in range(200)}
        for i, (src, grp) in enumerate(sorted(pairs)):
            dp.test_run(udp(src, grp, 3), repeat=1 + i % 5)
        seen = {(str(d.source), str(d.group)): d.packets for d in dp.denied()}
        # Sets of 4 per CPU: a handful of pairs may share a set and evict each other.
        assert len(seen) >= len(pairs) - 10
        for i, (src, grp) in enumerate(sorted(pairs)):
            if (src, grp) in seen:
                assert seen[(src, grp)] == 1 + i % 5
        cfg = dp._cfg()
        nsets = dp._map("mauth_denied4").lookup(ctypes.c_uint32(0))  # exists: a per-CPU set array
        assert nsets is not None
        for src, grp in seen:
            dp.add_rule(Rule.make(src, grp, 3))
        assert dp.denied() == [], "an entry survived its authorization: the C and Python set hashes disagree"
        assert cfg.denied_seed != 0 or denied_index(b"\0" * 8, 0, 8) == 0


def test_bulk_load_is_all_or_nothing(pin_dir):
    with DataPlane(pin_dir, max_rules=20000).load() as dp:
        rules = [Rule.make(f"192.0.{2 + i // 250}.{1 + i % 250}", f"239.3.{i % 200}.{1 + i // 200}", 1 + i % 255)
                 for i in range(10000)]
        assert dp.add_rules_bulk(rules) == 10000
        assert dp.rule_count() == 10000
        r = rules[1234]
        assert dp.test_run(udp(str(r.source), str(r.group), r.max_ttl)).retval == XDP_PASS
        assert dp.test_run(udp(str(r.source), str(r.group), r.max_ttl + 1) if r.max_ttl < 255 else
                           udp(STRANGER, str(r.group), 1)).retval == XDP_DROP
        clash = [Rule.make("198.51.100.9", GROUP, 4), rules[5]]
        with pytest.raises(Exists):
            dp.add_rules_bulk(clash)
        assert dp.rule_count() == 10000
        assert dp.get_rule(("198.51.100.9", GROUP)) is None
        assert dp.get_rule((str(r.source), str(r.group))).packets == 1


# -- rate limits -----------------------------------------------------------------------
#
# BPF_PROG_TEST_RUN with `repeat` runs the program back to back within
# microseconds, so the program's clock (one tick: 4 ms) moves at most once
# during a run, and at these rates one tick refills less than the cost of one
# packet on top of what the burst leaves over: exactly as many packets pass
# as the model's buckets (musersd.policy.RateBuckets) say at a standing clock.

RATE_GROUP = "239.1.1.3"


def _burst_of(rule: Rule, frame: bytes, n: int) -> int:
    from musersd.policy import RateBuckets

    b = RateBuckets()
    return sum(b((rule.source, rule.group), rule, len(frame)) for _ in range(n))


@pytest.mark.parametrize("limits", [dict(pps=1), dict(pps=200), dict(bps=1000), dict(bps=100_000),
                                    dict(pps=100, bps=100_000), dict(pps=1000, bps=20_000)],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_rate_limit_passes_the_burst_then_drops_as_the_model_says(pin_dir, limits):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        rule = Rule.make(SENDER, RATE_GROUP, 8, **limits)
        dp.add_rule(rule)
        frame = udp(SENDER, RATE_GROUP, 8, b"r" * 200)
        want = _burst_of(rule, frame, 2000)
        assert 0 < want < 2000
        before = dp.counters()
        assert dp.test_run(frame, repeat=2000).retval == XDP_DROP  # the last run was over the rate
        after = dp.counters()
        delta = {r: after[r]["packets"] - before[r]["packets"] for r in after}
        assert (delta["passed"], delta["rate"]) == (want, 2000 - want)
        rs = dp.get_rule((SENDER, RATE_GROUP))
        assert rs.packets == want  # the rule counts what it let through
        assert (rs.rule.pps, rs.rule.bps) == (rule.pps, rule.bps)
        denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
        assert denied[(SENDER, RATE_GROUP)].reason == Reason.RATE
        assert denied[(SENDER, RATE_GROUP)].packets == 2000 - want


def test_rate_limit_in_monitor_mode_counts_but_passes(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make(SENDER, RATE_GROUP, 8, pps=100))  # a burst of 10
        dp.set_mode("monitor")
        frame = udp(SENDER, RATE_GROUP, 8)
        before = dp.counters()
        assert dp.test_run(frame, repeat=50).retval == XDP_PASS
        after = dp.counters()
        assert after["passed"]["packets"] - before["passed"]["packets"] == 10
        assert after["rate"]["packets"] - before["rate"]["packets"] == 40


def test_other_rules_and_unlimited_rules_are_untouched_by_a_limit(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make(SENDER, RATE_GROUP, 8, pps=1))
        dp.add_rule(Rule.make(SENDER, GROUP, 8))
        dp.add_rule(Rule.make(STRANGER, RATE_GROUP, 8, pps=1))  # its own buckets
        assert dp.test_run(udp(SENDER, RATE_GROUP, 8), repeat=100).retval == XDP_DROP
        assert dp.test_run(udp(SENDER, GROUP, 8), repeat=10_000).retval == XDP_PASS
        assert dp.get_rule((SENDER, GROUP)).packets == 10_000
        assert dp.test_run(udp(STRANGER, RATE_GROUP, 8)).retval == XDP_PASS


def test_replacing_a_limit_refills_only_when_the_limit_changes(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        frame = udp(SENDER, RATE_GROUP, 8)
        dp.add_rule(Rule.make(SENDER, RATE_GROUP, 8, pps=1))
        assert dp.test_run(frame, repeat=5).retval == XDP_DROP
        dp.replace_rule(Rule.make(SENDER, RATE_GROUP, 9, pps=1))  # TTL only: the empty bucket stays empty
        assert dp.test_run(frame).retval == XDP_DROP
        dp.replace_rule(Rule.make(SENDER, RATE_GROUP, 9, pps=2))  # a new limit: a full bucket
        assert dp.test_run(frame).retval == XDP_PASS
        dp.replace_rule(Rule.make(SENDER, RATE_GROUP, 9))  # no limit at all
        assert dp.test_run(frame, repeat=1000).retval == XDP_PASS
        assert dp._map("mauth_rates").lookup(ctypes.c_uint32(dp._value(Rule.make(SENDER, RATE_GROUP, 9).key).slot)) \
            is None
        assert dp.get_rule((SENDER, RATE_GROUP)).rule == Rule.make(SENDER, RATE_GROUP, 9)
        assert dp.remove_rule((SENDER, RATE_GROUP)) == Rule.make(SENDER, RATE_GROUP, 9)


def test_rate_buckets_are_shared_by_every_cpu(pin_dir):
    """One bucket per rule, not per CPU: runs on each CPU in turn share a single burst.

    pps=1 gives a burst of one packet and a refill of one a second, so the
    time between the two runs (milliseconds) adds nothing.
    """
    import os

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs to show the bucket is shared")
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make(SENDER, RATE_GROUP, 8, pps=1))
        frame = udp(SENDER, RATE_GROUP, 8)
        mask = os.sched_getaffinity(0)
        passed = 0
        try:
            for cpu in cpus[:2]:
                os.sched_setaffinity(0, {cpu})
                before = dp.counters()["passed"]["packets"]
                dp.test_run(frame, repeat=8)
                passed += dp.counters()["passed"]["packets"] - before
        finally:
            os.sched_setaffinity(0, mask)
        assert passed == 1  # per-CPU buckets would have let one through on each CPU


# -- prefix rules ----------------------------------------------------------------------


def _cfg_prefixes(dp) -> int:
    return dp._cfg().prefixes


def test_prefix_tries_are_consulted_only_while_they_hold_rules(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        assert _cfg_prefixes(dp) == 0
        dp.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 8))
        assert _cfg_prefixes(dp) == maps.CFG_SRC_PREFIXES
        dp.add_rule(Rule.make("192.0.2.20", "239.192.0.0/14", 8))
        assert _cfg_prefixes(dp) == maps.CFG_SRC_PREFIXES | maps.CFG_GRP_PREFIXES
        assert dp.test_run(udp("192.0.2.130", "239.2.2.2", 8)).retval == XDP_PASS
        assert dp.test_run(udp("192.0.2.20", "239.193.0.1", 8)).retval == XDP_PASS
        dp.remove_rule(("192.0.2.128/25", "239.2.2.2"))
        assert _cfg_prefixes(dp) == maps.CFG_GRP_PREFIXES
        assert dp.test_run(udp("192.0.2.130", "239.2.2.2", 8)).retval == XDP_DROP
        assert dp.flush() == 1
        assert _cfg_prefixes(dp) == 0
        assert dp.test_run(udp("192.0.2.20", "239.193.0.1", 8)).retval == XDP_DROP


def test_prefix_rules_are_found_by_their_exact_key_not_the_longest_match(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 8))
        # A trie lookup of the /26 would answer with the /25's rule: it is not the /26's.
        assert dp.get_rule(("192.0.2.192/26", "239.2.2.2")) is None
        with pytest.raises(NotFound):
            dp.remove_rule(("192.0.2.192/26", "239.2.2.2"))
        dp.add_rule(Rule.make("192.0.2.192/26", "239.2.2.2", 2))
        with pytest.raises(Exists):
            dp.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 3))
        assert dp.get_rule(("192.0.2.192/26", "239.2.2.2")).rule.max_ttl == 2
        assert dp.get_rule(("192.0.2.128/25", "239.2.2.2")).rule.max_ttl == 8
        assert dp.replace_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 5, bps=1_000_000)) is False  # replaced
        assert {str(r.rule) for r in dp.rules()} == {
            "192.0.2.128/25 -> 239.2.2.2 max-ttl 5 bps 1000000", "192.0.2.192/26 -> 239.2.2.2 max-ttl 2"}
        dp.test_run(udp("192.0.2.130", "239.2.2.2", 5), repeat=7)
        dp.test_run(udp("192.0.2.200", "239.2.2.2", 2), repeat=3)
        assert dp.get_rule(("192.0.2.128/25", "239.2.2.2")).packets == 7
        assert dp.get_rule(("192.0.2.192/26", "239.2.2.2")).packets == 3
        assert dp.remove_rule(("192.0.2.192/26", "239.2.2.2")).max_ttl == 2
        assert dp.test_run(udp("192.0.2.200", "239.2.2.2", 5)).retval == XDP_PASS  # now under the /25


def test_prefix_and_rate_rules_survive_the_process_and_are_adopted(pin_dir):
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from musersd.dataplane import DataPlane
from mauthcore.rules import Rule, RuleKey
dp = DataPlane({str(pin_dir)!r}, max_rules=1024).load()
dp.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 8, pps=1))
dp.add_rule(Rule.make("192.0.2.20", "239.192.0.0/14", 16))
dp.add_rule(Rule.make("192.0.2.20", "239.1.1.1", 4))
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    with DataPlane(pin_dir).open() as reader:
        assert [str(r.rule) for r in reader.rules()] == [
            "192.0.2.20 -> 239.1.1.1 max-ttl 4",
            "192.0.2.20 -> 239.192.0.0/14 max-ttl 16",
            "192.0.2.128/25 -> 239.2.2.2 max-ttl 8 pps 1",
        ]
    with DataPlane(pin_dir, max_rules=1024).load() as dp:
        assert not dp.created and dp.rule_count() == 3
        assert _cfg_prefixes(dp) == maps.CFG_SRC_PREFIXES | maps.CFG_GRP_PREFIXES
        assert dp.test_run(udp("192.0.2.200", "239.2.2.2", 8), repeat=5).retval == XDP_DROP
        assert dp.get_rule(("192.0.2.128/25", "239.2.2.2")).packets == 1
        with pytest.raises(Exists):
            dp.add_rule(Rule.make("192.0.2.20", "239.192.0.0/14", 1))
        dp.add_rule(Rule.make("192.0.2.21", "239.1.1.1", 4))
        slots = [v.slot for _, v in dp._entries()]
        assert len(set(slots)) == 4  # the new rule did not take an adopted rule's slot


def test_authorizing_a_subnet_clears_its_hosts_from_the_denied_table(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        for host in ("192.0.2.130", "192.0.2.131", "192.0.2.5"):
            dp.test_run(udp(host, "239.2.2.2", 4))
        dp.test_run(udp("192.0.2.130", "239.2.2.3", 4))
        dp.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 8))
        assert sorted((str(d.source), str(d.group)) for d in dp.denied()) == [
            ("192.0.2.130", "239.2.2.3"), ("192.0.2.5", "239.2.2.2")]


def test_bulk_load_takes_prefix_and_rate_rules_too_all_or_nothing(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        rules = [Rule.make(f"192.0.2.{i}", GROUP, 4) for i in range(1, 11)]
        rules += [Rule.make("192.0.2.128/25", "239.2.2.2", 8), Rule.make(SENDER, RATE_GROUP, 8, pps=1)]
        assert dp.add_rules_bulk(rules) == 12
        assert {r.rule for r in dp.rules()} == set(rules)
        with pytest.raises(Exists):
            dp.add_rules_bulk([Rule.make("198.51.100.1", GROUP, 4), Rule.make("192.0.2.128/25", "239.2.2.2", 1)])
        assert dp.rule_count() == 12
        with pytest.raises(TableFull):
            dp.add_rules_bulk([Rule.make("198.51.100.0/24", f"239.9.9.{i}", 1) for i in range(1, 60)])
        assert dp.rule_count() == 12 and _cfg_prefixes(dp) == maps.CFG_SRC_PREFIXES


def test_protocol_backend_pages_through_exact_prefix_and_rate_rules(pin_dir):
    from mauthcore.protocol.errors import Exists, NotFound
    from musersd.dataplane_backend import DataPlaneBackend

    with DataPlane(pin_dir, max_rules=128).load() as dp:
        b = DataPlaneBackend(dp)
        want = {Rule.make(f"192.0.2.{i}", "239.2.2.2", 4) for i in range(1, 11)}
        want |= {Rule.make(f"192.0.2.{16 * i}/28", "239.2.2.2", 5, pps=100 * i) for i in range(8)}
        want |= {Rule.make("192.0.2.0", f"239.{192 + i}.0.0/16", 6, bps=10**6 * (i + 1)) for i in range(4)}
        want |= {Rule.make("192.0.2.0", "239.2.2.2", 7)}  # same addresses as the /28 and the /16s: another key
        for rule in sorted(want):
            b.add(rule)
        with pytest.raises(Exists):
            b.add(Rule.make("192.0.2.16/28", "239.2.2.2", 1))
        seen, cursor = [], b""
        while True:
            page = b.list(cursor, 5)
            seen += [e.rule for e in page.items]
            cursor = page.cursor
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == len(want) == b.counters().rule_count
        assert set(seen) == want
        b.remove(RuleKey.make("192.0.2.0", "239.193.0.0/16"))
        with pytest.raises(NotFound):
            b.remove(RuleKey.make("192.0.2.0", "239.193.0.0/16"))
        assert b.replace(Rule.make("192.0.2.32/28", "239.2.2.2", 5)) is False  # replaced, no limit now
        assert dp.get_rule(("192.0.2.32/28", "239.2.2.2")).rule.pps == 0
        assert b.counters().rule_count == len(want) - 1


def test_an_older_layout_is_not_adopted_and_is_pointed_out(pin_dir, caplog):
    """Pins of layout 3 (another map shape) live under v3/; layout 6 starts afresh beside them."""
    import logging

    (pin_dir / "v3").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="musersd.dataplane"):
        with DataPlane(pin_dir, max_rules=64).load() as dp:
            assert dp.created and dp.layout_dir.name == f"v{maps.LAYOUT}" == "v6"
            assert dp.rule_count() == 0
    assert any("layout 3 remain" in r.getMessage() for r in caplog.records)


# -- IPv6 ----------------------------------------------------------------------------

from tests.policy_cases import (  # noqa: E402  (the IPv6 names, next to their tests)
    GROUP6,
    IPV6_RULES,
    SAP6_SITE,
    SENDER6,
    STRANGER6,
    sap6,
    udp6,
)


def test_ipv6_rule_counters_and_denied_table(dp):
    frame = udp6(SENDER6, GROUP6, 5, payload=b"z" * 100)
    assert dp.test_run(frame, repeat=23).retval == XDP_PASS
    rs = dp.get_rule((SENDER6, GROUP6))
    assert (rs.packets, rs.octets) == (23, 23 * len(frame))

    bad, over = udp6(STRANGER6, GROUP6, 9), udp6(SENDER6, GROUP6, 200)
    dp.test_run(bad, repeat=11)
    dp.test_run(over, repeat=3)
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert (denied[(STRANGER6, GROUP6)].packets, denied[(STRANGER6, GROUP6)].octets) == (11, 11 * len(bad))
    assert (denied[(STRANGER6, GROUP6)].reason, denied[(STRANGER6, GROUP6)].last_ttl) == (Reason.UNAUTHORIZED, 9)
    assert (denied[(SENDER6, GROUP6)].reason, denied[(SENDER6, GROUP6)].last_ttl) == (Reason.TTL, 200)
    # last_seen travels as a 32-bit tick of about 1 ms: it must still read as "just now".
    assert abs(denied[(STRANGER6, GROUP6)].last_seen / 1000 - time.time()) < 5  # ms since the Unix epoch

    dp.add_rule(Rule.make(STRANGER6, GROUP6, 9))
    assert (STRANGER6, GROUP6) not in {(str(d.source), str(d.group)) for d in dp.denied()}
    assert dp.test_run(bad).retval == XDP_PASS
    # An IPv4 rule with the "same" addresses means nothing to IPv6, and the reverse.
    dp.remove_rule((STRANGER6, GROUP6))
    assert dp.test_run(bad).retval == XDP_DROP


def test_ipv6_denied_set_hash_agrees_between_kernel_and_user_space(pin_dir):
    """mauth_denied6_index() and maps.denied_index() on 32-byte keys: authorizing every recorded pair empties
    the table."""
    import random

    rng = random.Random(6)
    with DataPlane(pin_dir, max_rules=1024, max_denied=4096).load() as dp:
        pairs = {(f"2001:db8:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}",
                  f"ff0e::{rng.randint(0, 0xffff):x}:{rng.randint(1, 0xffff):x}") for _ in range(200)}
        for i, (src, grp) in enumerate(sorted(pairs)):
            dp.test_run(udp6(src, grp, 3), repeat=1 + i % 5)
        seen = {(str(d.source), str(d.group)): d.packets for d in dp.denied()}
        assert len(seen) >= len(pairs) - 10
        for i, (src, grp) in enumerate(sorted(pairs)):
            if (src, grp) in seen:
                assert seen[(src, grp)] == 1 + i % 5
        for src, grp in seen:
            dp.add_rule(Rule.make(src, grp, 3))
        assert dp.denied() == [], "an entry survived its authorization: the C and Python set hashes disagree"


def test_ipv6_prefix_tries_have_their_own_cfg_bits(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make("192.0.2.0/24", GROUP, 4))
        assert dp._cfg().prefixes == maps.CFG_SRC_PREFIXES
        dp.add_rule(Rule.make("2001:db8:0:3::/64", GROUP6, 4))
        dp.add_rule(Rule.make(SENDER6, "ff15::/16", 4))
        assert dp._cfg().prefixes == (maps.CFG_SRC_PREFIXES | maps.CFG_SRC_PREFIXES6 | maps.CFG_GRP_PREFIXES6)
        assert dp.test_run(udp6("2001:db8:0:3::99", GROUP6, 4)).retval == XDP_PASS
        assert dp.test_run(udp6(SENDER6, "ff15::1:2", 4)).retval == XDP_PASS
        dp.remove_rule(("2001:db8:0:3::/64", GROUP6))
        dp.remove_rule((SENDER6, "ff15::/16"))
        assert dp._cfg().prefixes == maps.CFG_SRC_PREFIXES
        assert dp.test_run(udp6("2001:db8:0:3::99", GROUP6, 4)).retval == XDP_DROP
        assert {str(k) for k in dp.rule_keys()} == {"(192.0.2.0/24, 239.1.1.1)"}


def test_bulk_load_and_apply_mix_families(pin_dir):
    v4 = [Rule.make(f"192.0.2.{i}", "239.3.0.1", 4) for i in range(1, 101)]
    v6 = [Rule.make(f"2001:db8:0:1::{i:x}", "ff0e::db8:1", 4) for i in range(1, 101)]
    NEW6 = "2001:db8:0:9::1"
    with DataPlane(pin_dir, max_rules=512).load() as dp:
        assert dp.add_rules_bulk(v4 + v6 + [Rule.make("2001:db8:0:3::/64", GROUP6, 2)]) == 201
        assert dp.rule_count() == 201
        assert dp.test_run(udp6("2001:db8:0:1::42", "ff0e::db8:1", 4)).retval == XDP_PASS
        assert dp.test_run(udp("192.0.2.42", "239.3.0.1", 4)).retval == XDP_PASS
        # A clash on an IPv6 key refuses the whole batch.
        with pytest.raises(Exists):
            dp.add_rules_bulk([Rule.make(NEW6, GROUP6, 1), v6[7]])
        assert dp.get_rule((NEW6, GROUP6)) is None and dp.rule_count() == 201
        assert dp.apply(v4[:50] + v6[50:] + [Rule.make(NEW6, GROUP6, 3)]) == (1, 0, 101)
        assert sorted(str(r.rule.key) for r in dp.rules()) == sorted(str(r.key) for r in
                                                                     v4[:50] + v6[50:] + [Rule.make(NEW6, GROUP6, 3)])
        assert dp.flush() == 101
        assert dp.test_run(udp6(NEW6, GROUP6, 3)).retval == XDP_DROP


def test_ipv6_sap_groups_follow_the_configuration(pin_dir):
    with DataPlane(pin_dir, max_rules=64, sap_groups=("224.2.127.254", "ff0e::2:7ffe")).load() as dp:
        assert dp.test_run(sap6(STRANGER6, "ff0e::2:7ffe", 9)).retval == XDP_PASS
        assert dp.test_run(sap6(STRANGER6, SAP6_SITE, 9)).retval == XDP_DROP  # not configured here
        assert dp.counters()["sap_local"]["packets"] == 1
    for bad, match in [(("ff02::2:7ffe",), "not a routable IPv6"), (("ff0e::1", "ff0e::2", "ff0e::3", "ff0e::4",
                                                                      "ff0e::5"), "at most 4 IPv6"),
                       (("2001:db8::1",), "not a routable IPv6"), (("sap",), "not an IP address")]:
        with pytest.raises(DataPlaneError, match=match):
            DataPlane(pin_dir, sap_groups=bad)


def test_every_ipv6_rule_of_the_case_table_reads_back(dp):
    keys = {str(k) for k in dp.rule_keys()}
    for (s, g) in IPV6_RULES:
        assert f"({s}, {g})" in keys


def test_a_filter_that_records_no_denied_pairs_drops_and_counts_the_same(pin_dir):
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.test_run(udp(STRANGER, GROUP, 3), repeat=4)
        assert len(dp.denied()) == 1
    with DataPlane(pin_dir, record_denied=False).load() as dp:  # adopts the maps; the old record is cleared
        assert dp.denied() == []
        for frame in (udp(STRANGER, GROUP, 3), udp6(STRANGER6, GROUP6, 3)):
            assert dp.test_run(frame, repeat=5).retval == XDP_DROP
        assert dp.counters()["unauthorized"]["packets"] == 4 + 10
        assert dp.denied() == []


# -- bindings --------------------------------------------------------------------------

from lab import netns  # noqa: E402
from lab.older_filter import LAYOUT4_COMMIT, build_filter_at, layout4  # noqa: E402
from mauthcore.rules import Binding as RuleBinding  # noqa: E402
from mauthcore.rules import format_mac  # noqa: E402
from musersd.filter import Binding, BindingRefused  # noqa: E402
from musersd.policy import Bindings  # noqa: E402
from tests.policy_cases import (  # noqa: E402
    B_IFACE,
    B_MAC,
    B_RPF,
    BIND_CASES,
    BIND_GROUP,
    BIND_IFACES,
    BIND_MOVED,
    BIND_ROUTES,
    BIND_RULES,
    BIND_SPECS,
    MAC_A,
    MAC_B,
    A,
    N,
    bind_routes,
    bound_udp,
)


@pytest.fixture
def bind_ns():
    """A namespace with BIND_IFACES (veths, up, forwarding on) and their connected subnets; its ifindexes."""
    ns = f"mauth-bind-{uuid.uuid4().hex[:6]}"
    netns.add(ns)
    try:
        for sysctl in ("net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1"):
            netns.sh("sysctl", "-qw", sysctl, ns=ns)
        for name in BIND_IFACES:
            netns.sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", ns=ns)
            netns.sh("ip", "link", "set", name, "up", ns=ns)
            netns.sh("ip", "link", "set", f"{name}p", "up", ns=ns)
        for net, name in BIND_ROUTES.items():
            netns.sh("ip", "addr", "add", f"{net.network_address + 1}/{net.prefixlen}", "dev", name,
                     *(["nodad"] if net.version == 6 else []), ns=ns)
        with netns.inside(ns):
            indexes = {name: socket.if_nametoindex(name) for name in BIND_IFACES}
        yield ns, indexes
    finally:
        netns.delete(ns)


def _bind(dp, indexes) -> dict:
    table = {}
    for (s, g), spec in BIND_SPECS.items():
        b = Binding.make(indexes[spec["iface"]] if "iface" in spec else None,
                         **{p: v for p, v in spec.items() if p != "iface"})
        dp.set_binding((str(s), str(g)), b)
        table[(s, g)] = b
    return table


@pytest.mark.every_kernel  # bpf_fib_lookup and the spin lock proven on the guest's verifier too
@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
def test_kernel_matches_model_on_every_binding_row(pin_dir, bind_ns, mode):
    ns, indexes = bind_ns
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        for rule in as_rules(BIND_RULES):
            dp.add_rule(rule)
        model = Bindings(_bind(dp, indexes), bind_routes(indexes))
        dp.set_mode(mode)
        mismatches = []
        with netns.inside(ns):
            for case in BIND_CASES:
                before = dp.counters()
                run = dp.test_run(case.frame, ingress=indexes[case.iface])
                after = dp.counters()
                want = decide(case.frame, BIND_RULES, mode, bindings=model, ingress=indexes[case.iface])
                got = (ACTIONS.get(run.retval, str(run.retval)), _reason_delta(before, after))
                if got != (want.action, {want.reason}) or want.reason != case.reason:
                    mismatches.append((case.name, got, (want.action, want.reason)))
        assert mismatches == []
        moved = {k: dp.binding((str(k[0]), str(k[1]))).moved for k in BIND_MOVED}
        assert moved == BIND_MOVED == {k: model.moved.get(k, 0) for k in BIND_MOVED}
        learned = dp.binding((str(next(iter(BIND_MOVED))[0]), str(next(iter(BIND_MOVED))[1]))).learned
        assert learned == model.learned[next(iter(BIND_MOVED))]
        # Drops are recorded with their reason, and a binding's with where its last offender came from.
        with netns.inside(ns):  # interfaces are named in the namespace that has them, as musersd on its router
            listed = dp.denied()
        denied = {(str(d.source), str(d.group)): (d.reason, d.iface, format_mac(d.mac)) for d in listed}
        assert denied[("2001:db8:b0::13", "ff0e::3:1")] == (Reason.WRONG_IIF, "mbind1", MAC_B)
        assert denied[(B_MAC, BIND_GROUP)] == (Reason.WRONG_MAC, "mbind0", MAC_B)
        assert denied[(B_RPF, BIND_GROUP)] == (Reason.RPF_FAIL, "mbind1", MAC_B)
        assert denied[(B_IFACE, BIND_GROUP)] == (Reason.TTL, "", "")  # its last drop was the TTL's, not the binding's
        assert all(d.iface == "" and d.mac == b"" for d in listed if not d.reason.binding)


@pytest.mark.every_kernel
def test_binding_api_reads_back_refuses_bad_input_and_rearms(pin_dir, bind_ns):
    ns, indexes = bind_ns
    src, grp = "198.51.100.13", "239.3.3.1"
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        dp.add_rule(Rule.make(src, grp, 8))
        dp.add_rule(Rule.make("198.51.100.0/24", grp, 8))
        with pytest.raises(NotFound):
            dp.set_binding(("198.51.100.99", grp), Binding.make(learn=True))
        with pytest.raises(DataPlaneError, match="has no one MAC"):
            dp.set_binding(("198.51.100.0/24", grp), Binding.make(mac=MAC_A))
        with pytest.raises(DataPlaneError, match="does not learn"):
            dp.clear_learned((src, grp))
        assert dp.binding((src, grp)) is None and dp.binding(("198.51.100.0/24", grp)) is None
        dp.set_binding((src, grp), Binding.make(indexes["mbind0"], learn=True, mac=MAC_A))
        state = dp.binding((src, grp))
        assert (state.binding, state.learned, state.moved) == (
            Binding(indexes["mbind0"], False, bytes.fromhex("02000000 0b0a"), True), None, 0)
        frame = bound_udp(src, grp, MAC_A)
        with netns.inside(ns):
            assert dp.test_run(frame, ingress=indexes["mbind0"]).retval == XDP_PASS
            assert dp.binding((src, grp)).learned == (indexes["mbind0"], bytes.fromhex("02000000 0b0a"))
            # The rule carries its binding: read back by name, with what it learned and how often it moved.
            held = dp.get_rule((src, grp))
            named = RuleBinding.make("mbind0", mac=MAC_A, learn=True)
            learned = ("mbind0", bytes.fromhex("02000000 0b0a"))
            assert (held.rule.binding, held.learned, held.moved) == (named, learned, 0)
            # A TTL change with the same binding keeps what it learned; a rule without one unbinds.
            assert dp.replace_rule(Rule.make(src, grp, 9, binding=named)) is False
            assert dp.binding((src, grp)).learned == (indexes["mbind0"], bytes.fromhex("02000000 0b0a"))
            dp.replace_rule(Rule.make(src, grp, 9))
            assert dp.binding((src, grp)) is None and dp.get_rule((src, grp)).rule.binding == RuleBinding()
            dp.replace_rule(Rule.make(src, grp, 9, binding=named))
            assert dp.binding((src, grp)).learned is None  # a binding that comes back starts afresh
            with pytest.raises(BindingRefused, match="does not exist"):  # refused, nothing changed
                dp.replace_rule(Rule.make(src, grp, 9, binding=RuleBinding.make("nosuch0")))
            assert dp.get_rule((src, grp)).rule.binding == named
            dp.set_binding((src, grp), Binding.make(learn=True))
            assert dp.test_run(frame, ingress=indexes["mbind1"]).retval == XDP_PASS  # a new binding learns anew
            assert dp.test_run(frame, ingress=indexes["mbind0"]).retval == XDP_DROP
            assert dp.clear_learned((src, grp)).moved == 1
            assert dp.binding((src, grp)).learned is None and dp.binding((src, grp)).moved == 0
            assert dp.test_run(frame, ingress=indexes["mbind0"]).retval == XDP_PASS
            dp.set_binding((src, grp), None)
            assert dp.binding((src, grp)) is None
            assert dp.test_run(frame, ingress=indexes["mbind1"]).retval == XDP_PASS
        # The binding lives in the pins: another process sees it.
        dp.set_binding(("198.51.100.0/24", grp), Binding.make(indexes["mbind1"], rpf=True))
        with DataPlane(pin_dir).open() as reader:
            assert reader.binding(("198.51.100.0/24", grp)).binding == Binding(indexes["mbind1"], True)


@pytest.mark.every_kernel
def test_an_interface_checking_every_rules_reverse_path(pin_dir, bind_ns):
    """musersd --rpf-iface: on mbind1 every rule's packets must route back through it, bound or not;
    elsewhere nothing changes. The kernel agrees with the model on each packet."""
    ns, indexes = bind_ns
    near, far = "198.51.100.20", "198.51.100.140"  # routed back through mbind0 and mbind1 (BIND_ROUTES)
    prefix_src = "198.51.100.0/24"
    rules = {(A(near), A(BIND_GROUP)): 8, (A(far), A(BIND_GROUP)): 8, (N(prefix_src), A("239.3.3.9")): 8}
    with netns.inside(ns):
        plane = DataPlane(pin_dir, max_rules=64, rpf_ifaces=["mbind1"])
    assert plane.rpf_ifindexes == (indexes["mbind1"],)
    with plane.load() as dp:
        for rule in as_rules(rules):
            dp.add_rule(rule)
        model = Bindings({}, bind_routes(indexes), frozenset({indexes["mbind1"]}))
        cases = [(near, BIND_GROUP, "mbind1", "rpf_fail"), (far, BIND_GROUP, "mbind1", "passed"),
                 (near, BIND_GROUP, "mbind0", "passed"), (far, BIND_GROUP, "mbind0", "passed"),
                 (near, "239.3.3.9", "mbind1", "rpf_fail"), (far, "239.3.3.9", "mbind1", "passed"),
                 ("198.51.100.99", "239.3.3.1", "mbind1", "unauthorized")]
        got, want = [], []
        with netns.inside(ns):
            for src, grp, iface, _ in cases:
                frame = bound_udp(src, grp, MAC_A)
                before = dp.counters()
                dp.test_run(frame, ingress=indexes[iface])
                got.append(_reason_delta(before, dp.counters()))
                verdict = decide(frame, rules, Mode.ENFORCE, bindings=model, ingress=indexes[iface])
                want.append({verdict.reason})
        assert got == want == [{c[3]} for c in cases]
    with pytest.raises(DataPlaneError, match="--rpf-iface: interface 'nosuch0' does not exist"):
        DataPlane(pin_dir, rpf_ifaces=["nosuch0"])


def test_layout4_pins_are_adopted_and_the_program_replaced_without_a_gap(pin_dir, tmp_path, bind_ns):
    """A router running layout 4 upgrades in place: rules, counters, mode and state id kept, bindings added."""
    from musersd.dataplane import xdp_status

    ns, indexes = bind_ns
    old_obj = build_filter_at(LAYOUT4_COMMIT, tmp_path)
    with layout4(old_obj):  # a musersd of layout 4: its object, its layout number, its maps
        old = DataPlane(pin_dir, max_rules=64).load()
        old.add_rule(Rule.make(SENDER, GROUP, 8))
        old.add_rule(Rule.make("192.0.2.128/25", "239.2.2.2", 8, pps=1000))
        old.set_mode("monitor")
        state_id = old.state_id
        with netns.inside(ns):
            old.attach("mbind0", "generic")
            old_mode, old_prog = xdp_status("mbind0")
            assert old_mode == "generic"
            assert old.test_run(udp(SENDER, GROUP, 8), repeat=3).retval == XDP_PASS
        old.close()
    assert (pin_dir / "v4" / "rules4").exists() and not (pin_dir / "v6").exists()
    with DataPlane(pin_dir, max_rules=64).load() as dp:
        assert not dp.created and dp.state_id == state_id and dp.mode is Mode.MONITOR
        assert dp._cfg().layout == maps.LAYOUT == 6
        assert not (pin_dir / "v4").exists()  # unpinned; the maps live on under v6
        assert {str(r.rule) for r in dp.rules()} == {f"{SENDER} -> {GROUP} max-ttl 8",
                                                      "192.0.2.128/25 -> 239.2.2.2 max-ttl 8 pps 1000"}
        assert dp.get_rule((SENDER, GROUP)).packets == 3
        with netns.inside(ns):
            # The old program, still attached, enforces the very maps the new one adopted until it is replaced.
            assert dp.attach("mbind0") == "generic"  # replaced in the mode in use: one netlink operation
            mode, prog = xdp_status("mbind0")
            assert mode == "generic" and prog not in (0, old_prog)
            dp.set_mode("enforce")
            dp.set_binding((SENDER, GROUP), Binding.make(indexes["mbind0"]))
            assert dp.test_run(udp(SENDER, GROUP, 8), ingress=indexes["mbind0"]).retval == XDP_PASS
            assert dp.test_run(udp(SENDER, GROUP, 8), ingress=indexes["mbind1"]).retval == XDP_DROP
            assert dp.get_rule((SENDER, GROUP)).packets == 4
            dp.detach("mbind0")
