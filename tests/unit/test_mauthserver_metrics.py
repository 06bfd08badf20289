"""mauthserver's denied-sender events: `DeniedTracker` and its rate limit on a fake clock.

The whole daemon in-process with its API and /metrics on 127.0.0.1 is
tests/loopback/test_mauthserver_metrics.py; the real daemons with real
traffic in the lab, tests/integration/test_metrics.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging

from mauthcore.protocol.model import DeniedEntry, DeniedJoinEntry, Reason
from mauthserver.denied import DeniedTracker, DeniedWatch, JoinTracker
from mauthserver.events import EventBus

A = ipaddress.IPv4Address


def entry(source: str, group: str, packets: int, reason: Reason = Reason.UNAUTHORIZED) -> DeniedEntry:
    return DeniedEntry(A(source), A(group), reason, packets, packets * 100, 7, 1_700_000_000_000)


# -- the tracker ------------------------------------------------------------------


def test_new_pairs_growth_and_resets_are_news_and_nothing_else_is():
    t = DeniedTracker()
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(str(r.entry.source), r.entry.packets, r.new_packets, r.first) for r in news] == [
        ("192.0.2.13", 30, 30, True), ("192.0.2.12", 10, 10, True)]  # biggest first
    event = news[0].to_dict()
    assert (event["last_seen"], event["last_ttl"], event["bytes"]) == (1_700_000_000.0, 7, 3000)
    for r in news:
        t.reported(r)
    assert t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10), entry("192.0.2.13", "239.1.1.1", 30)]) == []
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 25), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(str(r.entry.source), r.entry.packets, r.new_packets, r.first) for r in news] == [
        ("192.0.2.12", 25, 15, False)]
    t.reported(news[0])
    # Fewer packets than reported: the pair left the router's table and came back.
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 4), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(r.entry.packets, r.new_packets, r.first) for r in news] == [(4, 4, True)]
    # The same pair denied for another reason is another report.
    news = t.observe("r1", [entry("192.0.2.13", "239.1.1.1", 30, Reason.TTL)])
    assert [(str(r.entry.source), str(r.entry.reason), r.first) for r in news] == [("192.0.2.13", "ttl", True)]
    assert t.pairs["r1"] == 1 and t.packets["r1"] == {"ttl": 30}


def test_a_pair_gone_from_the_table_is_forgotten_and_routers_are_separate():
    t = DeniedTracker()
    for r in t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10)]):
        t.reported(r)
    assert t.observe("r2", [entry("192.0.2.12", "239.1.1.1", 10)])[0].first  # another router: news
    assert t.observe("r1", []) == []
    assert t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10)])[0].first


# -- the rate limit ---------------------------------------------------------------------


class _Fanout:
    tasks: dict = {}


def test_a_flood_of_pairs_is_reported_within_the_rate_and_summarised(caplog):
    now = [100.0]
    bus = EventBus()
    w = DeniedWatch(_Fanout(), bus, rate=1.0, burst=3, clock=lambda: now[0], wall=lambda: 5000.0)
    sub = bus.subscribe(None, 0.0)
    flood = [entry(f"192.0.2.{20 + i}", "239.1.1.1", 100 + i) for i in range(10)]
    with caplog.at_level(logging.INFO, logger="mauthserver.denied"):
        published = w.process("r1", flood)
    assert [r.entry.packets for r in published] == [109, 108, 107]  # the biggest first
    events = drain(sub)
    assert [k for k, _ in events] == ["denied"] * 3 + ["denied.suppressed"]
    assert events[0][1] == {"router": "r1", "source": "192.0.2.29", "group": "239.1.1.1", "reason": "unauthorized",
                            "packets": 109, "bytes": 10900, "new_packets": 109, "first": True, "last_ttl": 7,
                            "last_seen": 1_700_000_000.0}
    assert events[-1][1] == {"router": "r1", "suppressed": 7, "pairs": 10}
    assert len(caplog.records) == 4 and "7 more denied-sender reports suppressed" in caplog.records[-1].message
    assert w.counters == {"published_new": 3, "published_growing": 0, "suppressed": 7, "sender_moved": 0,
                          "joins_new": 0, "joins_growing": 0}

    # Two seconds later: two tokens. What was held back is offered again, biggest first.
    now[0] += 2.0
    published = w.process("r1", flood)
    assert [r.entry.packets for r in published] == [106, 105]
    assert [d["suppressed"] for k, d in drain(sub) if k == "denied.suppressed"] == [5]
    # The bucket refills up to its burst only: three more, then the last two.
    now[0] += 100.0
    assert [r.entry.packets for r in w.process("r1", flood)] == [104, 103, 102]
    now[0] += 100.0
    assert [r.entry.packets for r in w.process("r1", flood)] == [101, 100]
    # Nothing new and nothing grown: no report at all, and no summary.
    now[0] += 100.0
    assert w.process("r1", flood) == []
    events = drain(sub)
    assert [k for k, _ in events] == ["denied"] * 3 + ["denied.suppressed"] + ["denied"] * 2
    assert w.counters == {"published_new": 10, "published_growing": 0, "suppressed": 7 + 5 + 2, "sender_moved": 0,
                          "joins_new": 0, "joins_growing": 0}
    # A reported pair that keeps sending is reported again, as growing.
    flood[0] = entry("192.0.2.20", "239.1.1.1", 180)
    assert [(r.new_packets, r.first) for r in w.process("r1", flood)] == [(80, False)]


def drain(sub) -> list[tuple[str, dict]]:
    out = []
    while not sub.queue.empty():
        e = sub.queue.get_nowait()
        if e is not None and e.kind not in ("hello",):
            out.append((e.kind, e.data))
    return out


# -- the daemon, its /metrics and the denied events -------------------------------------------


def test_the_event_shape_is_documented_in_the_openapi_description():
    from mauthserver.openapi import spec

    doc = spec()
    props = doc["components"]["schemas"]["DeniedEvent"]["properties"]
    assert set(props) == {"at", "router", "source", "group", "reason", "packets", "bytes", "new_packets", "first",
                          "last_ttl", "last_seen"}
    report = DeniedTracker().observe("r1", [entry("192.0.2.12", "239.1.1.1", 1)])[0]
    assert set(report.to_dict()) | {"at"} == set(props)
    assert "denied" in json.dumps(doc["paths"]["/events"])


# -- a learning rule's sender moved ----------------------------------------------------------


class _Held:
    def __init__(self, rule):
        self.rule = rule


class _LearningFanout:
    """Routers r1 and r2, and the desired rules the denied watch looks up (task.mediator.fleet.desired)."""

    def __init__(self, *rules):
        fleet = type("Fleet", (), {"desired": {r.key: _Held(r) for r in rules}})()
        task = type("Task", (), {"mediator": type("Mediator", (), {"fleet": fleet})()})()
        self.tasks = {"r1": task, "r2": task}


def test_a_learning_rules_sender_seen_elsewhere_is_a_sender_moved_event_once_a_minute(caplog):
    from mauthcore.rules import Binding, Rule

    learning = Rule.make("192.0.2.10", "239.1.1.1", 8, binding=Binding.make("r1=eth1", learn=True))
    pinned = Rule.make("192.0.2.11", "239.1.1.1", 8, binding=Binding.make("eth1", mac="02:00:00:00:00:01"))
    now = [100.0]
    bus = EventBus()
    w = DeniedWatch(_LearningFanout(learning, pinned), bus, clock=lambda: now[0], wall=lambda: 5000.0)
    sub = bus.subscribe(None, 0.0)
    listing = [entry("192.0.2.10", "239.1.1.1", 3, Reason.WRONG_MAC),
               entry("192.0.2.11", "239.1.1.1", 4, Reason.WRONG_MAC),  # bound to a MAC, not learning: no move
               entry("192.0.2.12", "239.1.1.1", 5, Reason.UNAUTHORIZED)]
    with caplog.at_level(logging.WARNING, logger="mauthserver.denied"):
        w.process("r1", listing)
    moved = [d for k, d in drain(sub) if k == "sender.moved"]
    assert moved == [{"router": "r1", "source": "192.0.2.10", "group": "239.1.1.1", "reason": "wrong_mac",
                      "packets": 3, "new_packets": 3}]
    assert any("mauthctl rearm 192.0.2.10 239.1.1.1" in r.message for r in caplog.records)
    # Still sending: denied reports go on, the move is not repeated within the minute.
    now[0] += 10
    w.process("r1", [entry("192.0.2.10", "239.1.1.1", 9, Reason.WRONG_IIF)])
    assert [k for k, _ in drain(sub)] == ["denied"]
    now[0] += 60
    w.process("r1", [entry("192.0.2.10", "239.1.1.1", 12, Reason.WRONG_IIF)])
    assert [k for k, _ in drain(sub)] == ["denied", "sender.moved"]
    # On r2 the rule is not the first hop (the interface is r1's): it does not learn there.
    w.process("r2", [entry("192.0.2.10", "239.1.1.1", 2, Reason.WRONG_IIF)])
    assert [k for k, _ in drain(sub)] == ["denied"]
    assert w.counters["sender_moved"] == 2


# -- refused joins (RECV_DENIED) -------------------------------------------------------------


def join(receiver: str, group: str, records: int, source: str | None = None, iface: str = "eth1",
         reason: Reason = Reason.JOIN_REFUSED) -> DeniedJoinEntry:
    return DeniedJoinEntry(iface, A(receiver), A(group), None if source is None else A(source), reason, records,
                           1_700_000_000_000, 3)


def test_refused_joins_new_or_growing_are_receiver_denied_events_within_the_shared_rate(caplog):
    t = JoinTracker()
    news = t.observe("r1", [join("10.1.0.5", "239.1.1.1", 2), join("10.1.0.6", "232.1.1.1", 5, "192.0.2.10")])
    assert [(str(r.entry.receiver), r.new_records, r.first) for r in news] == [("10.1.0.6", 5, True),
                                                                              ("10.1.0.5", 2, True)]
    for r in news:
        t.reported(r)
    assert t.observe("r1", [join("10.1.0.5", "239.1.1.1", 2), join("10.1.0.6", "232.1.1.1", 5, "192.0.2.10")]) == []
    (grown,) = t.observe("r1", [join("10.1.0.5", "239.1.1.1", 6), join("10.1.0.6", "232.1.1.1", 5, "192.0.2.10")])
    assert (grown.new_records, grown.first) == (4, False)
    # The same join on another interface, for another reason, or refused afresh after it left, is news of its own.
    news = t.observe("r1", [join("10.1.0.5", "239.1.1.1", 1), join("10.1.0.5", "239.1.1.1", 1, iface="eth2"),
                            join("10.1.0.5", "239.1.1.1", 1, reason=Reason.JOIN_LIMIT)])
    assert len(news) == 3 and all(r.first for r in news)

    bus = EventBus()
    sub = bus.subscribe(None, 0.0)
    sub.queue.get_nowait()  # hello
    w = DeniedWatch(_NoFanout(), bus, rate=1.0, burst=2.0, clock=lambda: 100.0, wall=lambda: 1_700_000_100.0)
    published = w.process_joins("r1", [join(f"10.1.0.{i}", "239.1.1.1", i) for i in range(1, 6)])
    assert [p.entry.records for p in published] == [5, 4]  # the bucket's two tokens, biggest growth first
    events = [sub.queue.get_nowait() for _ in range(3)]
    assert [e.kind for e in events] == ["receiver.denied", "receiver.denied", "denied.suppressed"]
    assert events[0].data == {"router": "r1", "iface": "eth1", "receiver": "10.1.0.5", "group": "239.1.1.1",
                              "source": None, "reason": "join_refused", "records": 5, "new_records": 5,
                              "first": True, "last_seen": 1_700_000_000.0, "version": 3}
    assert w.counters["joins_new"] == 2 and w.counters["suppressed"] == 3
    from mauthserver.openapi import spec

    props = spec()["components"]["schemas"]["ReceiverDeniedEvent"]
    assert set(events[0].data) | {"at"} == set(props["properties"]) == set(props["required"])


class _NoFanout:
    tasks: dict = {}
