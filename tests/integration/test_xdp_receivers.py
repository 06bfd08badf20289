"""The compiled XDP program judging membership reports, run on crafted frames with BPF_PROG_TEST_RUN.

Frames come from lab/reports.py, so an expected output is built the same
way as the input and compared byte for byte: a rewritten report must be
exactly the report a host would have sent with only the allowed records
(lengths, record count, IP header and IGMP/ICMPv6 checksums included).
The interfaces are veths in a namespace of the test's own; frames come
in on them through ctx->ingress_ifindex. One filter for the module: a load
costs a minute in the emulated guest, where these tests run too
(`every_kernel`), proving the program on 6.1's verifier.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from lab import netns
from lab.reports import (
    ALLOW,
    BLOCK,
    IS_EX,
    IS_IN,
    TO_EX,
    TO_IN,
    Record,
    igmp_leave,
    igmp_query,
    igmp_v1,
    igmp_v2,
    igmp_v3,
    mld_done,
    mld_query,
    mld_v1,
    mld_v2,
    parse,
)
from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import Mode
from mauthcore.receivers import IfacePolicy, ReceiverRule
from musersd.dataplane import DataPlane
from musersd.filter import DataPlaneError, InvalidReceiver

XDP_DROP, XDP_PASS = 1, 2

pytestmark = pytest.mark.integration

CLOSED, OPEN = "mrcv0", "mrcv1"  # veths in the test's namespace
R4, R6 = "10.1.0.5", "fe80::5"  # the receivers
STRANGER4 = "10.9.0.5"
SRC4, SRC6 = "192.0.2.1", "2001:db8::1"

RULES = [
    ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface=CLOSED),
    ReceiverRule.make("10.1.0.0/24", "232.1.1.1", source=SRC4),
    ReceiverRule.make("fe80::/10", "ff0e::1:0/112", iface=CLOSED),
    ReceiverRule.make("fe80::/10", "ff3e::1", source=SRC6),
]


@pytest.fixture(scope="module")
def recv(bpffs):
    """(filter, {iface: ifindex}, namespace): CLOSED closed, OPEN without a policy."""
    ns = f"mauth-recv-{uuid.uuid4().hex[:6]}"
    netns.add(ns)
    try:
        for name in (CLOSED, OPEN):
            netns.sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", ns=ns)
            netns.sh("ip", "link", "set", name, "up", ns=ns)
        with netns.inside(ns):
            indexes = {name: socket.if_nametoindex(name) for name in (CLOSED, OPEN)}
            plane = DataPlane(bpffs / f"recv-{uuid.uuid4().hex[:8]}", max_rules=64, ifaces=[CLOSED, OPEN]).load()
        try:
            yield plane, indexes, ns
        finally:
            plane.close()
    finally:
        netns.delete(ns)


@pytest.fixture
def dp(recv):
    """The module's filter with RULES, CLOSED closed and no limit, OPEN open, nothing joined or refused."""
    plane, indexes, ns = recv
    with netns.inside(ns):
        plane.set_mode(Mode.ENFORCE)
        plane.apply_receivers(RULES)
        plane.set_receiver_policy(IfacePolicy.make(CLOSED, "closed"))
        plane.set_receiver_policy(IfacePolicy.make(OPEN, "open"))
        plane.clear_denied_joins()
        plane.sweep_groups(-1, -1)
        yield Runner(plane, indexes, ns)


class Runner:
    """Runs frames as if they came in on an interface, and reads what changed."""

    def __init__(self, plane: DataPlane, indexes: dict[str, int], ns: str):
        self.plane, self.indexes, self.ns = plane, indexes, ns

    def run(self, frame: bytes, iface: str = CLOSED):
        before = self.plane.counters()
        out = self.plane.test_run(frame, ingress=self.indexes[iface])
        after = self.plane.counters()
        reasons = {r for r in after if after[r]["packets"] != before[r]["packets"]}
        return out.retval, out.data, reasons

    def counters(self, iface: str = CLOSED) -> dict[str, int]:
        return next(p.counters for p in self.plane.receiver_policies() if p.policy.iface == iface)

    def groups(self, iface: str = CLOSED) -> int:
        return next(p.groups for p in self.plane.receiver_policies() if p.policy.iface == iface)

    def joined(self) -> dict[tuple[str, str], bool]:
        return {(j.iface, str(j.group)): j.left for j in self.plane.joined_groups()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.mark.every_kernel
def test_v2_report_allowed_or_dropped_on_a_closed_interface(dp):
    ok = igmp_v2(R4, "239.1.2.3")
    assert dp.run(ok) == (XDP_PASS, ok, {"igmp"})
    assert dp.run(igmp_v2(R4, "239.9.9.9"))[0::2] == (XDP_DROP, {"join_refused"})
    assert dp.run(igmp_v2(STRANGER4, "239.1.2.3"))[0::2] == (XDP_DROP, {"join_refused"})
    assert dp.run(igmp_v1(R4, "239.9.9.9"))[0::2] == (XDP_DROP, {"join_refused"})
    assert dp.joined() == {(CLOSED, "239.1.2.3"): False}
    denied = {(str(d.receiver), str(d.group)): d for d in dp.plane.denied_joins()}
    assert set(denied) == {(R4, "239.9.9.9"), (STRANGER4, "239.1.2.3")}
    d = denied[(R4, "239.9.9.9")]
    assert (d.iface, d.source, d.reason, d.records, d.version) == (CLOSED, None, "join_refused", 2, 1)
    # The rule allowed one join.
    stats = {s.rule: s for s in dp.plane.receiver_rules()}
    assert stats[RULES[0]].matched == 1 and stats[RULES[0]].last_seen > 0


@pytest.mark.every_kernel
def test_v3_report_keeps_exactly_the_allowed_records_with_valid_checksums(dp):
    before = dp.counters()
    frame = igmp_v3(R4, [Record(TO_EX, "239.1.2.3"), Record(TO_EX, "239.9.9.9"),
                         Record(ALLOW, "232.1.1.1", (SRC4, "192.0.2.2")), Record(BLOCK, "239.7.7.7", (SRC4,)),
                         Record(IS_IN, "232.1.1.1", ("192.0.2.3",)), Record(TO_IN, "232.1.1.1", ("192.0.2.4",)),
                         Record(IS_EX, "224.0.0.251")])
    retval, out, reasons = dp.run(frame)
    want = igmp_v3(R4, [Record(TO_EX, "239.1.2.3"), Record(ALLOW, "232.1.1.1", (SRC4,)),
                        Record(BLOCK, "239.7.7.7", (SRC4,)), Record(TO_IN, "232.1.1.1"),
                        Record(IS_EX, "224.0.0.251")])
    assert (retval, reasons) == (XDP_PASS, {"join_refused"})
    assert parse(out).records == parse(want).records  # parse() checks every length and checksum
    assert out == want
    assert _delta(before, dp.counters()) == {"reports": 1, "kept": 2, "refused": 4, "leaves": 1, "rewritten": 1}
    assert dp.joined() == {(CLOSED, "239.1.2.3"): False, (CLOSED, "232.1.1.1"): True}
    # Behind a VLAN tag, and without the router alert option (IHL 5): the same report, the same result.
    for ip in ({"vlan": 5}, {"router_alert": False}):
        tagged = igmp_v3(R4, [Record(TO_EX, "239.1.2.3"), Record(TO_EX, "239.9.9.9")], **ip)
        assert dp.run(tagged) == (XDP_PASS, igmp_v3(R4, [Record(TO_EX, "239.1.2.3")], **ip), {"join_refused"})


@pytest.mark.every_kernel
def test_mldv2_report_keeps_exactly_the_allowed_records(dp):
    frame = mld_v2(R6, [Record(IS_EX, "ff0e::1:5"), Record(TO_EX, "ff0e::2:5"),
                        Record(ALLOW, "ff3e::1", (SRC6, "2001:db8::2")), Record(7, "ff0e::1:6")])
    retval, out, reasons = dp.run(frame)
    want = mld_v2(R6, [Record(IS_EX, "ff0e::1:5"), Record(ALLOW, "ff3e::1", (SRC6,))])
    assert (retval, reasons) == (XDP_PASS, {"join_refused"})
    assert parse(out).records == parse(want).records
    assert out == want
    assert dp.counters()["malformed"] == 1  # the unknown record type
    # Nothing left: dropped.
    assert dp.run(mld_v2(R6, [Record(TO_EX, "ff0e::2:5")]))[0::2] == (XDP_DROP, {"join_refused"})
    # MLDv1 reports are one join each.
    assert dp.run(mld_v1(R6, "ff0e::1:9"))[0::2] == (XDP_PASS, {"mld"})
    assert dp.run(mld_v1(R6, "ff0e::2:9"))[0::2] == (XDP_DROP, {"join_refused"})


@pytest.mark.every_kernel
def test_report_with_nothing_refused_passes_byte_for_byte(dp):
    frame = igmp_v3(R4, [Record(TO_EX, "239.1.2.3"), Record(ALLOW, "232.1.1.1", (SRC4,))])
    assert dp.run(frame) == (XDP_PASS, frame, {"link_local"})
    frame6 = mld_v2(R6, [Record(IS_EX, "ff0e::1:5"), Record(IS_EX, "ff02::fb")])
    assert dp.run(frame6) == (XDP_PASS, frame6, {"link_local"})


@pytest.mark.every_kernel
def test_leaves_are_kept_and_mark_the_group_left_and_queries_are_untouched(dp):
    dp.run(igmp_v2(R4, "239.1.2.3"))
    dp.run(mld_v1(R6, "ff0e::1:9"))
    for frame, reason in [(igmp_leave(R4, "239.1.2.3"), "link_local"), (igmp_leave(R4, "239.9.9.9"), "link_local"),
                          (mld_done(R6, "ff0e::1:9"), "link_local"),
                          (igmp_v3(R4, [Record(TO_IN, "239.1.0.1")]), "link_local"),
                          (igmp_query("10.1.0.1"), "link_local"), (igmp_query("10.1.0.1", "239.1.2.3"), "igmp"),
                          (mld_query("fe80::1"), "link_local")]:
        assert dp.run(frame) == (XDP_PASS, frame, {reason})
    assert dp.joined() == {(CLOSED, "239.1.2.3"): True, (CLOSED, "ff0e::1:9"): True}
    # A left group goes after the grace, and a join refreshes it.
    dp.run(igmp_v2(R4, "239.1.2.3"))
    assert dp.plane.sweep_groups(10**12, -1) == 1
    assert dp.joined() == {(CLOSED, "239.1.2.3"): False}


@pytest.mark.every_kernel
def test_group_limit_refuses_new_groups_until_a_place_is_freed(dp):
    with netns.inside(dp.ns):
        dp.plane.set_receiver_policy(IfacePolicy.make(OPEN, "open", 2))
    assert dp.run(igmp_v2(STRANGER4, "239.5.0.1"), OPEN)[0] == XDP_PASS
    assert dp.run(mld_v1(R6, "ff0e::77"), OPEN)[0] == XDP_PASS  # both families count
    assert dp.run(igmp_v2(STRANGER4, "239.5.0.1"), OPEN)[0] == XDP_PASS  # a refresh takes no place
    assert dp.run(igmp_v2(STRANGER4, "239.5.0.2"), OPEN)[0::2] == (XDP_DROP, {"join_limit"})
    frame = igmp_v3(R4, [Record(TO_EX, "239.5.0.3"), Record(TO_EX, "239.5.0.1")])
    retval, out, reasons = dp.run(frame, OPEN)
    assert (retval, reasons, out) == (XDP_PASS, {"join_limit"}, igmp_v3(R4, [Record(TO_EX, "239.5.0.1")]))
    assert dp.groups(OPEN) == 2
    assert {d.reason for d in dp.plane.denied_joins()} == {"join_limit"}
    dp.run(igmp_leave(STRANGER4, "239.5.0.1"), OPEN)
    assert dp.plane.sweep_groups(10**12, -1) == 1
    assert dp.groups(OPEN) == 1
    assert dp.run(igmp_v2(STRANGER4, "239.5.0.2"), OPEN)[0] == XDP_PASS
    assert dp.groups(OPEN) == 2


@pytest.mark.every_kernel
@pytest.mark.parametrize("how", ["interface", "global"])
def test_monitor_passes_unchanged_while_counting(dp, how):
    with netns.inside(dp.ns):
        if how == "interface":
            dp.plane.set_receiver_policy(IfacePolicy.make(CLOSED, "monitor"))
        else:
            dp.plane.set_mode(Mode.MONITOR)
    before = dp.counters()
    frame = igmp_v3(R4, [Record(TO_EX, "239.1.2.3"), Record(TO_EX, "239.9.9.9")])
    assert dp.run(frame) == (XDP_PASS, frame, {"join_refused"})
    bad = igmp_v2(R4, "239.1.2.3", csum=0x1234)
    assert dp.run(bad) == (XDP_PASS, bad, {"malformed"})
    assert _delta(before, dp.counters()) == {"reports": 2, "kept": 1, "refused": 1, "rewritten": 1, "dropped": 1,
                                              "malformed": 1}
    assert [(str(d.group), d.reason) for d in dp.plane.denied_joins()] == [("239.9.9.9", "join_refused")]
    assert dp.joined() == {(CLOSED, "239.1.2.3"): False}


@pytest.mark.every_kernel
def test_open_interface_is_untouched_and_bad_reports_are_dropped_on_a_closed_one(dp):
    for frame, reason in [(igmp_v2(STRANGER4, "239.9.9.9"), "igmp"),
                          (igmp_v3(R4, [Record(TO_EX, "239.9.9.9")]), "link_local"),
                          (mld_v2(R6, [Record(TO_EX, "ff0e::2:5")]), "link_local"),
                          (igmp_v2(R4, "239.1.2.3", csum=0x1234), "igmp")]:
        assert dp.run(frame, OPEN) == (XDP_PASS, frame, {reason})
    assert dp.joined() == {}
    before = dp.counters()
    for frame in [igmp_v2(R4, "239.1.2.3", csum=0x1234),
                  mld_v2(R6, [Record(IS_EX, "ff0e::1:5")], csum=0x1234),
                  igmp_v3(R4, [Record(TO_EX, "239.1.2.3")], nrec=2),  # a record past the end
                  igmp_v3(R4, [Record(TO_EX, "239.1.2.3")], trailer=b"\0\0\0\0"),
                  igmp_v2(R4, "239.1.2.3", frag=0x2000)]:  # a first fragment
        assert dp.run(frame)[0::2] == (XDP_DROP, {"malformed"}), frame.hex()
    assert _delta(before, dp.counters()) == {"reports": 5, "dropped": 5, "malformed": 5}
    assert dp.joined() == {}


@pytest.mark.every_kernel
def test_receiver_api_refuses_bad_input_and_changes_nothing(dp):
    plane = dp.plane
    with netns.inside(dp.ns):
        before = plane.receiver_rules()
        matched = {s.rule: s.matched for s in before}
        with pytest.raises(Exists):
            plane.add_receiver(RULES[0])
        with pytest.raises(NotFound):
            plane.remove_receiver(ReceiverRule.make("10.1.0.0/24", "239.2.0.0/16"))
        with pytest.raises(InvalidReceiver, match="not one this router guards"):
            plane.add_receiver(ReceiverRule.make("10.1.0.0/24", "239.2.0.0/16", iface="lo"))
        with pytest.raises(InvalidReceiver):
            plane.set_receiver_policy(IfacePolicy.make("eth9", "closed"))
        with pytest.raises(DataPlaneError):
            plane.add_receiver(("10.1.0.0/24", "239.2.0.0/16"))  # type: ignore[arg-type]
        many = [ReceiverRule.make(f"10.{i // 256}.{i % 256}.0/24", "239.2.0.0/16") for i in range(513)]
        with pytest.raises(TableFull):
            plane.apply_receivers(many)
        assert plane.receiver_rules() == before
        # A change rewrites the other half; the counters of the rules kept stay.
        dp.run(igmp_v2(R4, "239.1.2.3"))
        extra = ReceiverRule.make("10.2.0.0/16", "239.9.9.9", iface=CLOSED)
        plane.add_receiver(extra)
        assert dp.run(igmp_v2("10.2.3.4", "239.9.9.9"))[0] == XDP_PASS
        assert plane.apply_receivers(RULES[:2]) == (0, 3)
        assert dp.run(igmp_v2("10.2.3.4", "239.9.9.9"))[0] == XDP_DROP
        assert dp.run(mld_v1(R6, "ff0e::1:9"))[0] == XDP_DROP
        assert {s.rule: s.matched - matched[s.rule] for s in plane.receiver_rules()} == {RULES[0]: 1, RULES[1]: 0}
        assert plane.apply_receivers(RULES) == (2, 0)
        assert plane.receiver_policies()[0].policy == IfacePolicy.make(CLOSED, "closed")


def test_layout5_pins_are_adopted_with_the_receiver_maps_added(pin_dir, tmp_path, recv):
    """A router running layout 5 upgrades in place: sender rules, counters, mode and state id kept; the new
    program judges reports at once."""
    from lab.older_filter import LAYOUT5_COMMIT, build_filter_at, layout5
    from mauthcore.rules import Rule

    _, indexes, ns = recv
    old_obj = build_filter_at(LAYOUT5_COMMIT, tmp_path)
    with layout5(old_obj):
        old = DataPlane(pin_dir, max_rules=64).load()
        old.add_rule(Rule.make("192.0.2.10", "239.1.1.1", 8))
        old.set_mode("monitor")
        state_id = old.state_id
        old.close()
    assert (pin_dir / "v5" / "rules4").exists() and not (pin_dir / "v6").exists()
    with DataPlane(pin_dir, max_rules=64, ifaces=[CLOSED]).load() as plane:
        assert not plane.created and plane.state_id == state_id and plane.mode is Mode.MONITOR
        assert not (pin_dir / "v5").exists() and (pin_dir / "v6" / "recv_rules").exists()
        assert [str(r.rule) for r in plane.rules()] == ["192.0.2.10 -> 239.1.1.1 max-ttl 8"]
        assert plane.receiver_rules() == [] and plane.joined_groups() == []
        plane.set_mode("enforce")
        with netns.inside(ns):
            plane.set_receiver_policy(IfacePolicy.make(CLOSED, "closed"))
            assert plane.test_run(igmp_v2(R4, "239.1.2.3"), ingress=indexes[CLOSED]).retval == XDP_DROP
            plane.add_receiver(RULES[0])
            assert plane.test_run(igmp_v2(R4, "239.1.2.3"), ingress=indexes[CLOSED]).retval == XDP_PASS
