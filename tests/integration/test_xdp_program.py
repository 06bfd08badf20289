"""The compiled XDP program, run on crafted frames with BPF_PROG_TEST_RUN.

The same case table as the pure-Python model (tests/policy_cases.py): for
every frame the kernel's verdict and the reason counter it bumps must equal
the model's. Also: the ctypes mirrors match what bcc compiled, counters count
exactly, the denied table records who tried, and pinned state outlives the
process that made it.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys

import pytest

from musersd import maps
from musersd.dataplane import DataPlane, DataPlaneError, RuleExists, RuleNotFound, TableFull
from musersd.maps import Mode
from musersd.policy import decide
from musersd.rules import Rule
from tests.conftest import REPO
from tests.policy_cases import CASES, GROUP, RULES, SENDER, STRANGER, udp

XDP_DROP, XDP_PASS = 1, 2
ACTIONS = {XDP_DROP: "drop", XDP_PASS: "pass"}

pytestmark = pytest.mark.integration


@pytest.fixture
def dp(pin_dir):
    plane = DataPlane(pin_dir, max_rules=1024).load()
    for (src, grp), ttl in RULES.items():
        plane.add_rule(Rule.make(src, grp, ttl))
    yield plane
    plane.close()


def _reason_delta(before, after):
    return {r for r in after if after[r]["packets"] != before[r]["packets"]}


KERNEL_CASES = [c for c in CASES if c.runnable_in_kernel]


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
def test_kernel_matches_model_on_every_case(dp, mode):
    dp.set_mode(mode)
    mismatches = []
    for case in KERNEL_CASES:
        before = dp.counters()
        run = dp.test_run(case.frame)
        after = dp.counters()
        model = decide(case.frame, RULES, mode)
        got = (ACTIONS.get(run.retval, str(run.retval)), _reason_delta(before, after))
        want = (model.action, {model.reason})
        if got != want:
            mismatches.append((case.name, got, want))
        assert after[case.reason]["bytes"] - before[case.reason]["bytes"] == len(case.frame)
    assert mismatches == []


def test_struct_sizes_match_what_bcc_compiled(dp):
    for cname, (_, _, ktype, vtype, percpu) in maps.MAPS.items():
        table = dp._bpf[cname.encode()]
        assert ctypes.sizeof(table.Key) == ctypes.sizeof(ktype), cname
        leaf = ctypes.sizeof(table.Leaf)
        if percpu:
            leaf //= dp._map(cname).ncpus
        assert leaf == ctypes.sizeof(vtype), cname


def test_reason_names_match_the_header():
    header = maps.HEADER.read_text()
    defined = {int(v): n.lower() for n, v in re.findall(r"#define MAUTH_R_(\w+)\s+(\d+)", header) if n != "MAX"}
    assert defined == maps.REASONS


def test_rule_counters_count_exactly_and_denied_table_records_who_tried(dp):
    frame = udp(SENDER, GROUP, 5, b"z" * 100)
    for _ in range(37):
        assert dp.test_run(frame).retval == XDP_PASS
    rs = dp.get_rule((SENDER, GROUP))
    assert (rs.packets, rs.bytes) == (37, 37 * len(frame))
    assert rs.last_seen is not None

    bad = udp(STRANGER, GROUP, 9)
    over = udp(SENDER, GROUP, 200)
    dp.test_run(bad, repeat=11)
    dp.test_run(over, repeat=3)
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert denied[(STRANGER, GROUP)].packets == 11
    assert denied[(STRANGER, GROUP)].bytes == 11 * len(bad)
    assert denied[(STRANGER, GROUP)].reason == "unauthorized"
    assert denied[(STRANGER, GROUP)].last_ttl == 9
    assert denied[(SENDER, GROUP)].reason == "ttl"
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
    with pytest.raises(RuleExists):
        dp.add_rule((SENDER, GROUP, 3))
    with pytest.raises(RuleNotFound):
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
    assert dp.apply(wanted) == (1, 0, 2)
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
