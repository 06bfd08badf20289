"""The compiled XDP program against the receiver model on every row of RECV_CASES, byte for byte.

Each row of tests/policy_cases.py RECV_CASES runs through BPF_PROG_TEST_RUN
as if it came in on RECV_IFACE (a veth in a namespace of the test's own),
after the row's joined groups were put in the table by the program itself
(reports on an open interface with a limit). The kernel must do exactly
what musersd/policy.py judge_report() says: the same action, the same
output frame to the byte, the same reason counted, the same receiver
counters, the same refused joins recorded, the same groups in the table
(left or not), the same rule credited. Every mismatch is collected, so one
run names every row the two disagree on. One filter for the module: a load
costs a minute in the emulated guest, where this runs too (`every_kernel`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
import uuid
from collections import Counter

import pytest

from lab import netns
from lab.reports import igmp_v2, mld_v1
from mauthcore.protocol.model import Mode
from mauthcore.receivers import IfacePolicy
from musersd.dataplane import DataPlane
from musersd.policy import judge_report
from tests.policy_cases import RECV_CASES, RECV_IFACE, RECV_RULES

XDP_DROP, XDP_PASS = 1, 2
ACTIONS = {XDP_DROP: "drop", XDP_PASS: "pass"}
OTHER_IFACE = "mrecv9"  # the interface RECV_RULES' rule for another interface names
SEEDER4, SEEDER6 = "10.1.0.200", "fe80::200"  # who joins a row's `joined` groups beforehand

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plane(bpffs):
    """(filter with RECV_RULES, ifindex of RECV_IFACE, namespace)."""
    ns = f"mauth-rcase-{uuid.uuid4().hex[:6]}"
    netns.add(ns)
    try:
        for name in (RECV_IFACE, OTHER_IFACE):
            netns.sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", ns=ns)
            netns.sh("ip", "link", "set", name, "up", ns=ns)
        with netns.inside(ns):
            ifindex = socket.if_nametoindex(RECV_IFACE)
            dp = DataPlane(bpffs / f"rcase-{uuid.uuid4().hex[:8]}", max_rules=64,
                           ifaces=[RECV_IFACE, OTHER_IFACE]).load()
            dp.apply_receivers(RECV_RULES)
        try:
            yield dp, ifindex, ns
        finally:
            dp.close()
    finally:
        netns.delete(ns)


def _table(dp: DataPlane) -> dict[str, bool]:
    return {str(j.group): j.left for j in dp.joined_groups() if j.iface == RECV_IFACE}


def _state(dp: DataPlane) -> tuple[int, dict[str, int]]:
    ours = next(p for p in dp.receiver_policies() if p.policy.iface == RECV_IFACE)
    return ours.groups, dict(ours.counters)


def _run_row(dp: DataPlane, ifindex: int, case) -> list[str]:
    """Run one row on the kernel and the model; what differs, one line each."""
    dp.set_mode(Mode.ENFORCE)
    dp.clear_denied_joins()
    dp.sweep_groups(-1, -1)
    if case.joined:  # the program itself puts the row's groups in the table
        dp.set_receiver_policy(IfacePolicy.make(RECV_IFACE, "open", 65535))
        for g in case.joined:
            seed = igmp_v2(SEEDER4, g) if ipaddress.ip_address(g).version == 4 else mld_v1(SEEDER6, g)
            assert dp.test_run(seed, ingress=ifindex).retval == XDP_PASS
    dp.set_receiver_policy(case.policy)
    dp.set_mode(Mode.MONITOR if case.monitor else Mode.ENFORCE)
    assert _table(dp) == dict.fromkeys(case.joined, False) and _state(dp)[0] == len(case.joined)

    reasons0, (_, counters0) = dp.counters(), _state(dp)
    hits0 = {s.rule: s.matched for s in dp.receiver_rules()}
    run = dp.test_run(case.frame, ingress=ifindex)
    reasons1, (groups1, counters1) = dp.counters(), _state(dp)

    joined = {(RECV_IFACE, ipaddress.ip_address(g)) for g in case.joined}
    model = judge_report(case.frame, RECV_IFACE, case.policy, RECV_RULES, joined, len(case.joined), case.monitor)
    got_left = dict.fromkeys(case.joined, False)
    for e in model.groups:
        got_left[str(e.group)] = e.event == "left"
    denied = Counter((str(d.group), None if d.source is None else str(d.source), d.reason, d.version)
                     for d in model.denied)
    hits = Counter(o.rule for o in model.outcomes if o.outcome == "kept" and o.rule is not None)

    kernel = {
        "action": ACTIONS.get(run.retval, str(run.retval)),
        "frame": run.data.hex(),
        "reason": {r for r in reasons1 if reasons1[r]["packets"] != reasons0[r]["packets"]},
        "counters": {k: counters1[k] - counters0[k] for k in counters1 if counters1[k] != counters0[k]},
        "denied": Counter({(str(d.group), None if d.source is None else str(d.source), d.reason, d.version): d.records
                           for d in dp.denied_joins()}),
        "table": _table(dp),
        "groups": groups1,
        "hits": Counter({s.rule: s.matched - hits0.get(s.rule, 0) for s in dp.receiver_rules()
                         if s.matched != hits0.get(s.rule, 0)}),
    }
    want = {
        "action": model.action, "frame": model.frame.hex(), "reason": {model.reason},
        "counters": {k: n for k, n in model.counters.items() if n}, "denied": denied, "table": got_left,
        "groups": len(got_left), "hits": hits,
    }
    return [f"{case.name}: {what}: kernel {kernel[what]!r}, model {want[what]!r}"
            for what in kernel if kernel[what] != want[what]]


@pytest.mark.every_kernel  # the router tier's guest runs it too: the program proven on that verifier as well
def test_kernel_matches_the_receiver_model_on_every_case(plane):
    dp, ifindex, ns = plane
    mismatches = []
    with netns.inside(ns):
        for case in RECV_CASES:
            mismatches += _run_row(dp, ifindex, case)
    assert not mismatches, "the kernel and the model differ:\n" + "\n".join(mismatches)


def _mutants(seed: int = 16, per_row: int = 6) -> list:
    """Every row's frame cut short and with bytes overwritten past the Ethernet header, deterministically."""
    rng = random.Random(seed)
    out = []
    for case in RECV_CASES:
        if not case.inspected:
            continue
        f = case.frame
        for k in range(per_row):
            if k % 2 == 0:
                cut = rng.randrange(15, len(f))
                out.append(dataclasses.replace(case, name=f"{case.name} [cut to {cut}]", frame=f[:cut]))
            else:
                pos = rng.randrange(14, len(f))
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
                out.append(dataclasses.replace(case, name=f"{case.name} [{junk.hex()} at {pos}]",
                                               frame=f[:pos] + junk + f[pos + len(junk):]))
    return out


@pytest.mark.every_kernel
def test_kernel_matches_the_receiver_model_on_damaged_reports(plane):
    """The rows' frames cut and overwritten anywhere: the kernel still does what the model does."""
    dp, ifindex, ns = plane
    mismatches = []
    with netns.inside(ns):
        for case in _mutants():
            mismatches += _run_row(dp, ifindex, case)
    assert not mismatches, "the kernel and the model differ:\n" + "\n".join(mismatches)
