"""musersd's Prometheus collector: what a scrape shows, from a fake data plane and a real protocol core.

The data plane is a fake with DataPlane's read methods (the real one needs
root and the kernel's BPF; tests/integration/test_metrics.py scrapes a real musersd in
the lab). The protocol core is the real `ServerCore` on a `MemoryBackend`,
fed real v1 datagrams, so the protocol metrics are the core's own counters.
"""

from __future__ import annotations

import ipaddress

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mauthcore.protocol import v1
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.metrics import REJECTIONS, protocol_metrics
from mauthcore.protocol.model import DeniedEntry, Mode, Reason, RuleEntry, millis
from mauthcore.protocol.server import STATS, ServerCore, legacy_checker
from mauthcore.rules import Rule
from musersd import maps
from musersd.metrics import (
    MetricsError,
    MusersdCollector,
    parse_metrics_address,
)

A = ipaddress.IPv4Address


class FakeDataPlane:
    """DataPlane's read side: counters by reason, rules with stats, denied pairs, mode and sizes."""

    def __init__(self) -> None:
        self.reasons = {name: {"packets": 0, "bytes": 0} for name in maps.REASONS.values()}
        self.rule_stats: list[RuleEntry] = []
        self.denied_entries: list[DeniedEntry] = []
        self.mode = Mode.ENFORCE
        self.max_rules = 65536
        self.max_denied = 4096
        self.state_id = 0xABCDEF
        self.reads = 0

    def counters(self):
        self.reads += 1
        return {k: dict(v) for k, v in self.reasons.items()}

    def rule_count(self) -> int:
        return len(self.rule_stats)

    def rules(self):
        return list(self.rule_stats)

    def denied(self):
        return list(self.denied_entries)

    def add_rule(self, source: str, group: str, ttl: int, packets: int = 0, last_seen: float | None = None):
        self.rule_stats.append(RuleEntry(Rule.make(source, group, ttl), packets, packets * 100, millis(last_seen)))

    def deny(self, source: str, group: str, packets: int, reason: str = "unauthorized"):
        self.denied_entries.append(DeniedEntry(A(source), A(group), Reason[reason.upper()], packets, packets * 64, 8))


def scrape(*collectors) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape: (name, sorted label items) -> value."""
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    text = generate_latest(reg).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples) -> set[str]:
    return {n for n, _ in samples}


@pytest.fixture
def dp():
    return FakeDataPlane()


def test_every_reason_of_the_filter_is_exported_with_its_counts(dp):
    dp.reasons["unauthorized"] = {"packets": 7, "bytes": 700}
    dp.reasons["passed"] = {"packets": 3, "bytes": 300}
    s = scrape(MusersdCollector(dp))
    for name in maps.REASONS.values():
        assert ("musersd_filter_packets_total", (("reason", name),)) in s
    assert value(s, "musersd_filter_packets_total", reason="unauthorized") == 7
    assert value(s, "musersd_filter_bytes_total", reason="unauthorized") == 700
    assert value(s, "musersd_filter_packets_total", reason="passed") == 3
    dp.reasons["unauthorized"]["packets"] += 5  # read at scrape time, not cached
    assert value(scrape(MusersdCollector(dp)), "musersd_filter_packets_total", reason="unauthorized") == 12


def test_per_rule_series_with_labels_and_last_seen(dp):
    dp.add_rule("192.0.2.10", "239.1.1.1", 8, packets=40, last_seen=1_700_000_000.5)
    dp.add_rule("192.0.2.11", "239.1.1.2", 4)
    s = scrape(MusersdCollector(dp))
    lab = {"source": "192.0.2.10", "group": "239.1.1.1"}
    assert value(s, "musersd_rule_packets_total", **lab) == 40
    assert value(s, "musersd_rule_bytes_total", **lab) == 4000
    assert value(s, "musersd_rule_max_ttl", **lab) == 8
    assert value(s, "musersd_rule_last_seen_timestamp_seconds", **lab) == 1_700_000_000.5
    quiet = {"source": "192.0.2.11", "group": "239.1.1.2"}
    assert value(s, "musersd_rule_packets_total", **quiet) == 0
    assert ("musersd_rule_last_seen_timestamp_seconds", tuple(sorted(quiet.items()))) not in s  # never seen
    assert value(s, "musersd_rules") == 2 and value(s, "musersd_rule_capacity") == 65536
    assert value(s, "musersd_rule_series_omitted") == 0


def test_a_rule_seen_twice_by_a_restarted_hash_walk_is_one_series(dp):
    dp.add_rule("192.0.2.10", "239.1.1.1", 8, packets=5)
    dp.rule_stats.append(dp.rule_stats[0])
    s = scrape(MusersdCollector(dp))  # a duplicate sample would make the text unparsable
    assert value(s, "musersd_rule_packets_total", source="192.0.2.10", group="239.1.1.1") == 5


def test_per_rule_series_are_left_out_whole_above_the_limit(dp):
    for i in range(5):
        dp.add_rule(f"192.0.2.{10 + i}", "239.1.1.1", 8, packets=i)
    s = scrape(MusersdCollector(dp, rule_series=4))
    assert "musersd_rule_packets_total" not in names(s)
    assert value(s, "musersd_rules") == 5 and value(s, "musersd_rule_series_omitted") == 5
    s = scrape(MusersdCollector(dp, rule_series=5))
    assert value(s, "musersd_rule_series_omitted") == 0
    assert sum(v for (n, _), v in s.items() if n == "musersd_rule_packets_total") == 0 + 1 + 2 + 3 + 4
    assert "musersd_rule_packets_total" not in names(scrape(MusersdCollector(dp, rule_series=0)))


def test_denied_pairs_counted_by_reason_and_the_top_ones_by_packets(dp):
    dp.deny("192.0.2.12", "239.1.1.1", 10)
    dp.deny("192.0.2.13", "239.1.1.1", 300)
    dp.deny("192.0.2.10", "239.1.1.1", 20, reason="ttl")
    s = scrape(MusersdCollector(dp, denied_series=2))
    assert value(s, "musersd_denied_pairs", reason="unauthorized") == 2
    assert value(s, "musersd_denied_pairs", reason="ttl") == 1
    assert value(s, "musersd_denied_pairs", reason="rate") == 0  # every drop reason, even at 0
    pairs = {(dict(lv)["source"], dict(lv)["reason"]): v for (n, lv), v in s.items()
             if n == "musersd_denied_pair_packets_total"}
    assert pairs == {("192.0.2.13", "unauthorized"): 300, ("192.0.2.10", "ttl"): 20}
    assert value(s, "musersd_denied_pair_bytes_total", source="192.0.2.13", group="239.1.1.1",
                 reason="unauthorized") == 300 * 64
    assert value(s, "musersd_denied_capacity") == 4096
    assert "musersd_denied_pair_packets_total" not in names(scrape(MusersdCollector(dp, denied_series=0)))


def test_mode_info_start_time_and_attachment(dp):
    dp.mode = Mode.MONITOR
    status = {"in0": ("generic", 42), "in1": ("generic", 99)}  # in1: someone else's program

    def xdp_status(iface):
        if iface not in status:
            raise OSError("no such interface")
        return status[iface]

    c = MusersdCollector(dp, attached={"in0": "generic", "in1": "generic", "gone0": "native"},
                         epoch=0x1122334455667788, started=1234.5, xdp_status=xdp_status, prog_id=42)
    s = scrape(c)
    assert value(s, "musersd_mode", mode="monitor") == 1 and value(s, "musersd_mode", mode="enforce") == 0
    assert value(s, "musersd_info", epoch="1122334455667788", state_id="0000000000abcdef", backend="xdp") == 1
    assert value(s, "musersd_start_time_seconds") == 1234.5
    assert value(s, "musersd_xdp_attached", iface="in0", mode="generic") == 1
    assert value(s, "musersd_xdp_attached", iface="in1", mode="generic") == 0
    assert value(s, "musersd_xdp_attached", iface="gone0", mode="native") == 0


def _v1_add(seq: int, source: str, group: str, ttl: int) -> bytes:
    return v1.encode_request(v1.V1Add(seq, Rule.make(source, group, ttl)))


def test_protocol_counters_come_from_the_core(dp):
    core = ServerCore(MemoryBackend(), None, epoch=1, state_id=1, legacy_allowed=legacy_checker(["127.0.0.0/8"]))
    here = ("127.0.0.1", 4000)
    req = _v1_add(1, "192.0.2.10", "239.1.1.1", 8)
    assert core.receive(req, here, 0.0) is not None
    assert core.receive(req, here, 0.1) is not None  # a retransmission: answered from memory
    assert core.receive(_v1_add(0, "192.0.2.10", "239.1.1.1", 8), here, 0.2) is None  # older seq
    assert core.receive(req, ("192.0.2.99", 4000), 0.3) is None  # not allowed to use v1
    assert core.receive(b"garbage", here, 0.4) is None
    s = scrape(MusersdCollector(dp, core=lambda: core))
    assert value(s, "musersd_protocol_datagrams_total") == 5
    assert value(s, "musersd_protocol_executed_total") == 1
    assert value(s, "musersd_protocol_requests_total", command="add") == 3
    assert value(s, "musersd_protocol_requests_total", command="hello") == 0
    assert value(s, "musersd_protocol_answered_from_memory_total", version="v1") == 1
    assert value(s, "musersd_protocol_answered_from_memory_total", version="v2") == 0
    assert value(s, "musersd_protocol_replies_total", version="v1", status="ack") == 2
    assert value(s, "musersd_protocol_replies_total", version="v2", status="ok") == 0
    assert value(s, "musersd_protocol_rejected_total", reason="v1_stale") == 1
    assert value(s, "musersd_protocol_rejected_total", reason="v1_refused") == 1
    assert value(s, "musersd_protocol_rejected_total", reason="unrecognized") == 1
    assert value(s, "musersd_protocol_rejected_total", reason="bad_auth") == 0
    assert value(s, "musersd_protocol_v1_clients") == 1 and value(s, "musersd_protocol_sessions") == 0


def test_every_protocol_counter_appears_exactly_once():
    stats = {name: i + 1 for i, name in enumerate(STATS)}
    families = protocol_metrics("x", stats)
    total = sum(sample.value for f in families for sample in f.samples)
    assert total == sum(stats.values())  # each counter once: none lost, none doubled
    assert set(REJECTIONS) <= set(STATS)


def test_close_waits_and_makes_later_scrapes_empty(dp):
    c = MusersdCollector(dp)
    c.close()
    reads = dp.reads
    assert scrape(c) == {}
    assert dp.reads == reads  # the maps were not touched after close


@pytest.mark.parametrize("text, message", [
    ("9575", "is not HOST:PORT"),
    ("localhost:9575", "needs a numeric IP address"),
    ("127.0.0.1:0", "no valid port"),
])
def test_bad_metrics_addresses(text, message):
    with pytest.raises(MetricsError, match=message):
        parse_metrics_address(text)
    assert parse_metrics_address("[::1]:9575") == ("::1", 9575)


# --- receivers (membership reports) ----------------------------------------------------


class ReceivingDataPlane(FakeDataPlane):
    """The read side with a receiver half (tests/support/fake_receivers.py's receiver methods)."""

    def __init__(self) -> None:
        from tests.support.fake_receivers import FakeReceivers

        super().__init__()
        self.half = FakeReceivers(("eth1", "eth2"))
        self.receives = True
        self.receiver_policies = self.half.receiver_policies
        self.receiver_rules = self.half.receiver_rules
        self.denied_joins = self.half.denied_joins


def test_receiver_series_per_interface_and_outcome():
    from mauthcore.protocol.model import RECV_COUNTERS
    from mauthcore.receivers import IfacePolicy, ReceiverRule
    from musersd.filter import DeniedJoin

    dp = ReceivingDataPlane()
    assert "musersd_receiver_groups" not in names(scrape(MusersdCollector(FakeDataPlane())))  # no receiver half
    dp.half.set_receiver_policy(IfacePolicy.make("eth1", "closed", 20))
    dp.half.iface_counters["eth1"].update(reports=10, kept=6, refused=3, limited=1, leaves=2, rewritten=1)
    dp.half.join("eth1", A("239.1.1.1"), A("10.1.0.1"))
    dp.half.join("eth1", A("239.1.1.2"), A("10.1.0.1"))
    dp.half.add_receiver(ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16"))
    dp.half.refuse(DeniedJoin("eth1", A("10.1.0.9"), A("239.9.9.9"), None, "join_refused", 1, 1, 2))
    s = scrape(MusersdCollector(dp))
    outcomes = ["judged", *RECV_COUNTERS[1:]]
    for iface in ("eth1", "eth2"):
        for outcome in outcomes:
            assert ("musersd_receiver_reports_total", (("iface", iface), ("outcome", outcome))) in s
    assert value(s, "musersd_receiver_reports_total", iface="eth1", outcome="judged") == 10
    assert value(s, "musersd_receiver_reports_total", iface="eth1", outcome="refused") == 3
    assert value(s, "musersd_receiver_reports_total", iface="eth2", outcome="kept") == 0
    assert value(s, "musersd_receiver_groups", iface="eth1") == 2 and value(s, "musersd_receiver_groups",
                                                                            iface="eth2") == 0
    assert value(s, "musersd_receiver_group_limit", iface="eth1") == 20
    assert value(s, "musersd_receiver_mode", iface="eth1", mode="closed") == 1
    assert value(s, "musersd_receiver_mode", iface="eth2", mode="open") == 1
    assert value(s, "musersd_receiver_mode", iface="eth2", mode="closed") == 0
    assert value(s, "musersd_denied_joins", reason="join_refused") == 1
    assert value(s, "musersd_denied_joins", reason="join_limit") == 0
    assert value(s, "musersd_receiver_rules") == 1 and value(s, "musersd_receiver_rule_capacity") == 512
