"""The receiver half of the policy model (musersd/policy.py judge_report()) against RECV_CASES.

Every row's expected verdict is written out in tests/policy_cases.py: the
action, the reason, the exact frame passed on, the counters, the refused
joins and the group-table changes. The frames the model writes are also read
back with lab/reports.py, whose checksum code is its own, so a rewritten
report is a valid report: lengths, record count, IPv4 header checksum,
IGMP/ICMPv6 checksum with its pseudo-header.
"""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab import reports as rep
from musersd.filter import RECV_COUNTERS
from musersd.maps import REASONS
from musersd.policy import DROP, PASS, judge_report, link_scope
from tests.policy_cases import (
    CLOSED,
    OPEN_LIMIT2,
    R4,
    RECV_CASES,
    RECV_IFACE,
    RECV_RULES,
    STRANGER4,
    G,
    message_offset,
)

ip = ipaddress.ip_address


def _judge(case):
    joined = {(RECV_IFACE, ip(g)) for g in case.joined}
    return judge_report(case.frame, RECV_IFACE, case.policy, RECV_RULES, joined, len(case.joined), case.monitor)


@pytest.mark.parametrize("case", RECV_CASES, ids=lambda c: c.name)
def test_model_gives_the_written_verdict(case):
    v = _judge(case)
    assert (v.action, v.reason, v.inspected) == (case.action, case.reason, case.inspected)
    assert v.frame == (case.frame if case.out is None else case.out)
    assert {k: n for k, n in v.counters.items() if n} == dict(case.counters)
    assert [(str(d.group), None if d.source is None else str(d.source), d.reason, d.version) for d in v.denied] \
        == list(case.denied)
    assert [(str(e.group), e.event) for e in v.groups] == list(case.groups)


@pytest.mark.parametrize("case", [c for c in RECV_CASES if c.out is not None], ids=lambda c: c.name)
def test_rewritten_reports_read_back_as_valid_reports(case):
    before, after = rep.parse(case.frame.rstrip(b"\0") if case.frame.endswith(b"\0\0") else case.frame), \
        rep.parse(_judge(case).frame)
    assert (after.family, after.receiver, after.dst, after.mtype) == \
        (before.family, before.receiver, before.dst, before.mtype)
    # every kept record was in the report, in the same order, with a subset of its sources
    it = iter(before.records)
    for kept in after.records:
        orig = next(r for r in it if (r.rtype, r.group) == (kept.rtype, kept.group))
        assert set(kept.sources) <= set(orig.sources) and kept.aux == orig.aux
    assert len(after.records) < len(before.records) or sum(len(r.sources) for r in after.records) < \
        sum(len(r.sources) for r in before.records)


def test_table_covers_every_outcome_and_counter():
    verdicts = [_judge(c) for c in RECV_CASES]
    outcomes = {o.outcome for v in verdicts for o in v.outcomes}
    assert outcomes == {"kept", "refused", "limited", "leave", "block", "link_scope", "malformed"}
    grown = {k for v in verdicts for k, n in v.counters.items() if n}
    assert grown == set(RECV_COUNTERS)
    assert {c.reason for c in RECV_CASES if c.inspected} == {
        "igmp", "mld", "link_local", "join_refused", "join_limit", "malformed"}
    assert {"join_refused", "join_limit"} <= set(REASONS.values())
    types = {c.frame[off] for c in RECV_CASES if (off := message_offset(c.frame)) < len(c.frame)}
    assert types >= {
        rep.IGMP_V1_REPORT, rep.IGMP_V2_REPORT, rep.IGMP_V2_LEAVE, rep.IGMP_V3_REPORT, rep.IGMP_QUERY,
        rep.MLD_V1_REPORT, rep.MLD_V1_DONE, rep.MLD_V2_REPORT, rep.MLD_QUERY}


def test_arguments_are_not_changed():
    joined = {(RECV_IFACE, ip(G))}
    rules = list(RECV_RULES)
    frame = rep.igmp_v3(R4, rep.records((rep.TO_EX, "239.1.9.9"), (rep.TO_IN, G)))
    judge_report(frame, RECV_IFACE, CLOSED, rules, joined, 1)
    assert joined == {(RECV_IFACE, ip(G))} and rules == list(RECV_RULES)


def test_other_interfaces_groups_neither_refresh_nor_count():
    frame = rep.igmp_v2(STRANGER4, G)
    v = judge_report(frame, RECV_IFACE, OPEN_LIMIT2, RECV_RULES, {("other0", ip(G))}, 0)
    assert [(str(e.group), e.event) for e in v.groups] == [(G, "inserted")]


def test_first_allowing_rule_gets_the_hit():
    frame = rep.igmp_v3(R4, rep.records((rep.ALLOW, "232.1.1.1", ["192.0.2.10"]), (rep.TO_EX, G)))
    v = judge_report(frame, RECV_IFACE, CLOSED, RECV_RULES, set(), 0)
    assert [o.rule for o in v.outcomes] == [RECV_RULES[1], RECV_RULES[0]]


def test_link_scope():
    assert link_scope(ip("224.0.0.22")) and link_scope(ip("224.0.0.255"))
    assert not link_scope(ip("224.0.1.1")) and not link_scope(ip("239.1.1.1"))
    assert link_scope(ip("ff02::16")) and link_scope(ip("ff01::1")) and link_scope(ip("ff12::1"))
    assert not link_scope(ip("ff05::1")) and not link_scope(ip("fe80::1"))


@given(st.binary(max_size=300), st.sampled_from([c.frame for c in RECV_CASES if c.inspected]),
       st.integers(0, 400), st.booleans())
def test_any_bytes_give_a_verdict_and_a_sound_frame(noise, frame, cut, splice):
    """Random frames, and real reports cut or overwritten anywhere: always a verdict, never an exception."""
    if splice:
        frame = frame[:cut] + noise + frame[cut + len(noise):]
    else:
        frame = (frame + noise)[:cut] if cut >= 14 else noise
    v = judge_report(frame, RECV_IFACE, CLOSED, RECV_RULES, set(), 0)
    assert v.action in (PASS, DROP)
    if v.frame != frame:
        assert v.reason in ("join_refused", "join_limit", "malformed") and len(v.frame) < len(frame)
        if _ipv4_header_sound(frame):
            rep.parse(v.frame)  # a rewritten frame is a valid report
        else:  # the IPv4 header checksum is updated, not made right: the kernel drops the packet still
            assert not _ipv4_header_sound(v.frame)


def _ipv4_header_sound(frame: bytes) -> bool:
    """False only for an IPv4 frame whose header checksum is wrong."""
    if frame[12:14] != b"\x08\x00":
        return True
    return rep.checksum(frame[14:14 + (frame[14] & 0x0F) * 4]) == 0
