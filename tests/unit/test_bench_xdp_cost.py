"""The pure parts of bench/xdp_cost.py's receiver rows: round order, per-round comparison, the report frames
and the rule table they are judged against (the measurement itself runs only as the benchmark)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from bench import common, xdp_cost
from lab import reports


def test_rotated_starts_each_round_one_further_and_keeps_every_row():
    order = ["a", "b", "c"]
    assert [xdp_cost.rotated(order, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def _sample(floor: float, filt: float, cpu_floor: float, cpu_filt: float) -> tuple:
    return (floor, cpu_floor, filt, cpu_filt, floor, cpu_floor)


def test_versus_takes_medians_of_per_round_ratios_and_cpu_differences():
    base = [_sample(10, 20, 11, 21), _sample(10, 40, 11, 41), _sample(10, 30, 11, 31)]
    rows = [_sample(10, 30, 11, 32), _sample(10, 40, 11, 46), _sample(10, 60, 11, 60)]
    # ratios 1.5, 1.0, 2.0 -> 1.5; CPU added ns 21 - 10 = 11, 35 - 30 = 5, 49 - 20 = 29 -> 11
    assert xdp_cost.versus(rows, base) == (1.5, 11.0)
    assert xdp_cost.versus(base, base) == (1.0, 0.0)
    with pytest.raises(ValueError):  # samples of different rounds are no comparison
        xdp_cost.versus(rows[:2], base)


def test_the_allowing_rule_is_judged_after_every_filler_which_allows_no_row():
    fillers = xdp_cost.filler_receivers(xdp_cost.RECV_RULES - 1)
    table = sorted(fillers + [xdp_cost.ALLOWED4])
    assert len(set(table)) == xdp_cost.RECV_RULES and table[-1] == xdp_cost.ALLOWED4
    receiver = ipaddress.ip_address(xdp_cost.REPORTER4)
    for kind, (frame, _, _) in xdp_cost.report_frames().items():
        report = reports.parse(frame)
        groups = [report.group] if report.group else [r.group for r in report.records]
        for g in groups:
            group = ipaddress.ip_address(g)
            assert not any(f.allows(receiver, group, None, "") for f in fillers), (kind, g)


def test_report_frames_say_what_the_program_must_leave_of_them():
    frames = xdp_cost.report_frames()
    assert set(frames) == set(xdp_cost.REPORT_KINDS)
    assert set(xdp_cost.REPORT_REASONS) == set(xdp_cost.REPORT_KINDS) - {"floor"}
    allowed = {4: (xdp_cost.ALLOWED4, xdp_cost.REPORTER4), 6: (xdp_cost.ALLOWED6, xdp_cost.REPORTER6)}
    for kind, (frame, action, out) in frames.items():
        report = reports.parse(frame)
        rule, reporter = allowed[report.family]
        assert report.receiver == reporter

        def ok(group: str, rule=rule, reporter=reporter) -> bool:
            return rule.allows(ipaddress.ip_address(reporter), ipaddress.ip_address(group), None, "")

        if action == xdp_cost.XDP_DROP:
            assert out is None and not ok(report.group), kind
            continue
        kept = reports.parse(out)
        if report.group is not None:
            assert out == frame and ok(report.group), kind
            continue
        assert len(report.records) == 10, kind
        # What passes is the allowed records, in order, in a frame with its lengths and checksums right.
        assert kept.records == tuple(r for r in report.records if ok(r.group)), kind
        assert (out == frame) == (len(kept.records) == 10), kind
    assert len(reports.parse(frames["v3_half10"][2]).records) == 5
    assert len(reports.parse(frames["mld2_half10"][2]).records) == 5


def test_stored_section_reads_one_section_or_none(tmp_path):
    path = tmp_path / "benchmarks.json"
    assert common.stored_section("xdp_cost", path) is None
    path.write_text(json.dumps({"xdp_cost": {"results": []}, "sap": {}}))
    assert common.stored_section("xdp_cost", path) == {"results": []}
    assert common.stored_section("loader", path) is None
    path.write_text("[1, 2")
    assert common.stored_section("xdp_cost", path) is None


def test_the_receivers_table_has_a_row_per_measured_row():
    fig = {"floor_ns": 27.0, "filter_ns": 70.0, "added_ns": 43.0, "added_ns_iqr": [42.0, 44.0], "ratio": 2.59,
           "cpu_clock": {"added_ns": 43.2}}
    rec = {
        "data": [{"kind": "passed", "variant": v, "action": "pass", "vs_layout5": 1.0,
                  "vs_layout5_cpu_added_ns": 0.0, **fig} for v in xdp_cost.DATA_VARIANTS],
        "reports": [{"kind": "v3_half10", "action": "pass", "rules_scanned": 1, "frame_bytes": 126,
                     "out_bytes": 86, "vs_open": 9.9, "vs_open_cpu_added_ns": 1900.0, **fig}],
    }
    text = xdp_cost.receivers_markdown(rec)
    assert len([line for line in text.splitlines() if line.startswith("| passed |")]) == len(xdp_cost.DATA_VARIANTS)
    assert "| v3_half10 | pass | 1 | 126 → 86 |" in text and "| 9.90 |" in text
    assert xdp_cost.markdown([], [], None, rec).endswith(text)
