"""The dashboard's decisions without a screen: events and counter reads in, rows out (`mauthclient.board`)."""

from __future__ import annotations

import pytest

from mauthclient.board import (
    DENIED_WINDOW,
    Board,
    human_age,
    human_rate,
    joined_key,
    receivers_changed,
    refused_key,
    tiny_count,
)

DECLARED = {"id": "aaaa000000000001", "name": "Declared", "announcer": "198.51.100.2", "origin": "192.0.2.56",
            "groups": [{"address": "232.1.1.1", "ttl": 16}, {"address": "232.1.1.2", "ttl": 16}],
            "sources": ["192.0.2.10"], "first_heard": 1000.0, "expires": 4600.0}
ANY = {"id": "bbbb000000000002", "name": "Lobby", "announcer": "198.51.100.2", "origin": "192.0.2.55",
       "groups": [{"address": "239.255.12.42", "ttl": 32}], "sources": [],
       "suggested_senders": ["192.0.2.55", "198.51.100.2"], "first_heard": 1000.0, "expires": 4600.0}
ROUTERS = [{"name": "r1", "state": "up", "mode": "enforce", "rule_count": 0, "pending": 0, "epoch": "00000000000000aa",
            "counters": {"restarts_seen": 1, "state_losses": 0}, "last_contact": 1000.0},
           {"name": "r2", "state": "up", "mode": "enforce", "rule_count": 0, "pending": 0, "epoch": "bb",
            "counters": {}, "last_contact": 1000.0}]


def rule(source, group, ttl, session=None):
    return {"source": source, "group": group, "max_ttl": ttl, "session": session, "updated": 1.0}


def view(source, group, ttl, session=None, **states):
    """A rule as the server shows it (GET /rules): its state on each router and overall, as it decided."""
    routers = {name: {"state": st} for name, st in states.items()}
    overall = ("applied" if set(states.values()) <= {"applied"} else
               "refused" if "refused" in states.values() else "pending")
    return {**rule(source, group, ttl, session), "routers": routers, "state": overall}


def added(source, group, ttl, session=None, **states):
    """The data of a rule.added event: the desired rule, with its routers and state as in its view."""
    v = view(source, group, ttl, session, **states)
    return {"rule": rule(source, group, ttl, session), "actor": "t", "reason": "add-sender",
            "routers": v["routers"], "state": v["state"]}


def read(rules=(), denied=(), at=1000.0, ok=True):
    return {"ok": ok, "at": at, "mode": "enforce", "rule_count": len(rules),
            "rules": [{"source": s, "group": g, "max_ttl": t, "packets": p, "bytes": b} for s, g, t, p, b in rules],
            "denied": [{"source": s, "group": g, "reason": r, "packets": p, "bytes": b, "last_ttl": ttl,
                        "last_seen": seen} for s, g, r, p, b, ttl, seen in denied]}


def board() -> Board:
    b = Board()
    b.load([DECLARED, ANY], [], ROUTERS, None)
    return b


def test_a_session_is_authorized_when_the_server_says_every_pair_is_applied():
    b = board()
    assert b.session_authorized(DECLARED) == "no"
    b.apply_event("x-1", "rule.added", added("192.0.2.10", "232.1.1.1", 16, DECLARED["id"], r1="pending",
                                             r2="pending"))
    assert b.session_authorized(DECLARED) == "partial"  # one of its two groups
    b.apply_event("x-2", "rule.added", added("192.0.2.10", "232.1.1.2", 16, DECLARED["id"], r1="pending",
                                             r2="pending"))
    assert b.session_authorized(DECLARED) == "pending"  # the server says no router holds them yet
    one, two = ("192.0.2.10", "232.1.1.1"), ("192.0.2.10", "232.1.1.2")
    both = [(*one, 16, 0, 0), (*two, 16, 0, 0)]
    # The routers' listings say nothing about the state: r2 lists the rule, the server still says pending.
    b.apply_traffic({"routers": {"r1": read(both), "r2": read(both)},
                     "rules": [view(*one, 16, DECLARED["id"], r1="applied", r2="applied"),
                               view(*two, 16, DECLARED["id"], r1="applied", r2="pending")]}, now=1.0)
    assert b.session_authorized(DECLARED) == "pending" and b.rule_state_on(two, "r2") == "pending"
    assert b.rule_rows()[1][1][3] == "r1✓ r2…"
    b.apply_traffic({"routers": {"r1": read(both), "r2": read(both[:1])},
                     "rules": [view(*one, 16, DECLARED["id"], r1="applied", r2="applied"),
                               view(*two, 16, DECLARED["id"], r1="applied", r2="refused")]}, now=2.0)
    assert b.rule_state_on(two, "r2") == "refused" and b.rule_rows()[1][1][3] == "r1✓ r2✗"
    assert b.session_authorized(DECLARED) == "pending"
    b.apply_traffic({"routers": {"r1": read(both), "r2": read(both)},
                     "rules": [view(*one, 16, DECLARED["id"], r1="applied", r2="applied"),
                               view(*two, 16, DECLARED["id"], r1="applied", r2="applied")]}, now=3.0)
    assert b.session_authorized(DECLARED) == "yes"
    assert b.session_rows(1010.0)[0][1][5] == "yes"
    # A view of an older version of the rule (answered before a rule event arrived) is not taken.
    b.apply_event("x-3", "rule.changed", {**added(*two, 8, DECLARED["id"], r1="pending", r2="pending"),
                                          "rule": {**rule(*two, 8, DECLARED["id"]), "updated": 2.0}})
    b.apply_traffic({"routers": {"r1": read(both), "r2": read(both)},
                     "rules": [view(*two, 16, DECLARED["id"], r1="applied", r2="applied")]}, now=4.0)
    assert b.rule_state_on(two, "r1") == "pending" and b.session_authorized(DECLARED) == "pending"
    # A router the server said nothing about is unknown.
    assert b.rule_state_on(two, "r3") == "unknown" and b.rule_state_on(("192.0.2.99", "232.1.1.1"), "r1") == "unknown"


def test_any_source_sessions_count_rules_on_their_groups_and_removal_events_apply():
    b = board()
    assert b.session_authorized(ANY) == "no"
    b.apply_event("x-1", "rule.added", added("192.0.2.55", "239.255.12.42", 32, r1="applied", r2="pending"))
    assert b.session_authorized(ANY) == "pending"
    b.apply_event("x-2", "rule.removed", {"rule": rule("192.0.2.55", "239.255.12.42", 32)})
    assert b.session_authorized(ANY) == "no" and b.rules == {}
    b.apply_event("x-3", "session.removed", {"session": ANY, "reason": "deleted"})
    assert set(b.sessions) == {DECLARED["id"]}
    assert b.apply_event("x-4", "resync", {}) == "resync" and b.apply_event("x-5", "overflow", {}) == "resync"
    assert b.last_event_id == "x-5"
    b.apply_event("x-6", "router.changed", {**ROUTERS[0], "state": "down", "at": 5.0})
    assert b.routers["r1"]["state"] == "down" and b.routers_up() == 1
    b.apply_event("x-7", "mode.changed", {"mode": "monitor"})
    assert b.mode_text() == "monitor"


def test_rates_come_from_two_reads_and_survive_a_counter_reset():
    b = board()
    b.apply_event("x-1", "rule.added", added("192.0.2.10", "239.1.1.1", 8, r1="applied", r2="applied"))
    key = ("192.0.2.10", "239.1.1.1")
    b.apply_traffic({"routers": {"r1": read([(*key, 8, 100, 10000)]), "r2": read([(*key, 8, 0, 0)])}}, now=10.0)
    assert b.rule_rates[key].packets is None  # one read: no rate yet
    assert b.rule_rows()[0][1][4:] == ["-", "-", "100"]
    b.apply_traffic({"routers": {"r1": read([(*key, 8, 300, 30000)]), "r2": read([(*key, 8, 50, 5000)])}}, now=12.0)
    assert (b.rule_rates[key].packets, b.rule_rates[key].octets) == (125.0, 12500.0)  # (200 + 50) / 2 s
    assert b.rule_rows()[0][1][4:] == ["125", "12.5k", "350"]
    b.apply_traffic({"routers": {"r1": read([(*key, 8, 20, 2000)]), "r2": read([(*key, 8, 50, 5000)])}}, now=14.0)
    assert b.rule_rates[key].packets == 10.0  # r1 restarted: its 20 packets are new, not -280


def denied_event(router, source, group, reason, packets, ttl):
    return {"router": router, "source": source, "group": group, "reason": reason, "packets": packets,
            "bytes": packets * 100, "new_packets": packets, "first": True, "last_ttl": ttl, "last_seen": 999.0}


def test_denied_pairs_show_while_the_server_reports_them_and_leave_when_the_router_forgets_them():
    b = board()
    pair = ("192.0.2.66", "239.9.9.9", "unauthorized")
    old = ("192.0.2.77", "239.9.9.9", "unauthorized")
    # A pair the server reports shows at once, before any counter read.
    b.apply_event("x-1", "denied", denied_event("r1", *pair, 10, 5), now=49.0)
    assert [r[0] for r in b.denied_rows(49.0)] == ["192.0.2.66|239.9.9.9|unauthorized"]
    b.apply_traffic({"routers": {"r1": read(denied=[(*pair, 10, 1000, 5, 999.0), (*old, 3, 300, 5, 999.0)]),
                                 "r2": read()}}, now=50.0)
    # The other pair is listed, seen just now even, but the server did not report it: not shown.
    assert [r[0] for r in b.denied_rows(50.0)] == ["192.0.2.66|239.9.9.9|unauthorized"]
    b.apply_traffic({"routers": {"r1": read(denied=[(*pair, 30, 3000, 6, 1001.0), (*old, 3, 300, 5, 100.0)]),
                                 "r2": read(denied=[(*pair, 4, 400, 7, 1001.0)])}}, now=52.0)
    row = b.denied_rows(52.0)[0][1]
    assert row == ["192.0.2.66", "239.9.9.9", "unauth", "10", "1.0k", "7", "r1,r2"]  # r1: 20 packets in 2 s
    assert b.counts(52.0)["denied"] == 1
    # The server stops reporting it: shown until the window passes.
    b.apply_traffic({"routers": {"r1": read(denied=[(*pair, 30, 3000, 6, 1001.0)]),
                                 "r2": read(denied=[(*pair, 4, 400, 7, 1001.0)])}}, now=54.0)
    assert b.denied_rows(49.0 + DENIED_WINDOW - 1) and not b.denied_rows(49.0 + DENIED_WINDOW + 1)
    # Reported again, then the sender is authorized: the routers forget the pair, and it is gone at once.
    b.apply_event("x-2", "denied", {**denied_event("r2", *pair, 9, 7), "first": False}, now=55.0)
    assert b.denied_rows(55.0)
    b.apply_traffic({"routers": {"r1": read(), "r2": read()}}, now=56.0)
    assert b.denied_rows(56.0) == [] and b.counts(56.0)["denied"] == 0


def test_a_dashboard_opened_later_shows_the_pairs_the_server_reported_within_the_window():
    b = board()
    recent, old = ("192.0.2.66", "239.9.9.9", "unauthorized"), ("192.0.2.77", "239.9.9.9", "unauthorized")
    answer = read(denied=[(*recent, 10, 1000, 5, 900.0), (*old, 3, 300, 5, 999.0)], at=1000.0)
    answer["denied"][0]["reported"] = 995.0  # the server reported it 5 s before this read
    answer["denied"][1]["reported"] = None  # never reported (held back by the rate limit, say)
    b.apply_traffic({"routers": {"r1": answer, "r2": read()}}, now=50.0)
    assert [r[0] for r in b.denied_rows(50.0)] == ["192.0.2.66|239.9.9.9|unauthorized"]
    assert b.denied_rows(50.0 + DENIED_WINDOW - 6) and not b.denied_rows(50.0 + DENIED_WINDOW - 4)
    answer["denied"][0]["reported"] = 900.0  # reported long before: not being dropped now
    fresh = board()
    fresh.apply_traffic({"routers": {"r1": answer, "r2": read()}}, now=50.0)
    assert fresh.denied_rows(50.0) == []


def test_rows_fit_their_columns_and_text_helpers():
    b = board()
    for columns, rows in ((Board.SESSION_COLUMNS, b.session_rows(1100.0)),
                          (Board.ROUTER_COLUMNS, b.router_rows(0.0, 1100.0))):
        for _, cells in rows:
            assert len(cells) == len(columns)
            assert all(len(c) <= w for c, (_, w) in zip(cells, columns)), cells
    assert sum(w + 2 for _, w in Board.SESSION_COLUMNS) <= 80
    assert sum(w + 2 for _, w in Board.RULE_COLUMNS) <= 80
    assert sum(w + 2 for _, w in Board.DENIED_COLUMNS) <= 80
    assert sum(w + 2 for _, w in Board.ROUTER_COLUMNS) <= 80
    declared = dict(b.session_rows(1100.0))[DECLARED["id"]]
    assert declared[1] == "232.1.1.1/16 +1" and declared[2] == "192.0.2.10" and declared[3] == "2m"
    assert dict(b.router_rows(0.0, 1100.0))["r1"] == ["r1", "up", "enforce", "0", "0", "000000aa", "1", "2m"]
    assert b.mode_text() == "enforce"
    assert (human_rate(None), human_rate(0), human_rate(2.5), human_rate(1234), human_rate(5e6)) == (
        "-", "0", "2.5", "1.2k", "5.0M")
    assert (human_age(5), human_age(125), human_age(7300), human_age(None)) == ("5s", "2m", "2h", "-")
    assert "any (suggested: 192.0.2.55, 198.51.100.2)" in b.session_detail(ANY["id"], 1100.0)


SIX = {"id": "cccc000000000003", "name": "Radio six", "announcer": "2001:db8:10::20", "origin": "2001:db8:10::20",
       "groups": [{"address": "ff3e::8000:1", "ttl": None}], "sources": ["2001:db8:10::20"],
       "first_heard": 1000.0, "expires": 4600.0}


def test_ipv6_sessions_and_rules_in_address_order_after_ipv4():
    b = Board()
    b.load([DECLARED, SIX], [rule("2001:db8:0:1::/64", "ff0e::db8:1", 8), rule("2001:db8::10", "ff15::/16", 8),
                             rule("192.0.2.0/24", "239.1.1.1", 4), rule("2001:db8::10", "ff0e::1", 255),
                             rule("192.0.2.10", "239.1.1.1", 4)], ROUTERS, None)
    b.rules[("192.0.2.0", "239.1.1.1")] = rule("192.0.2.0", "239.1.1.1", 4)  # a host sorts before its prefix
    assert [r[0] for r in b.rule_rows()] == ["192.0.2.0|239.1.1.1", "192.0.2.0/24|239.1.1.1", "192.0.2.10|239.1.1.1",
                                             "2001:db8::10|ff0e::1", "2001:db8::10|ff15::/16",
                                             "2001:db8:0:1::/64|ff0e::db8:1"]
    row = dict(b.session_rows(1100.0))[SIX["id"]]
    assert row[1] == "ff3e::8000:1" and row[2] == "2001:db8:10::20"  # no "/TTL" for an IPv6 group
    assert b.session_authorized(SIX) == "no"
    b.apply_event("x-1", "rule.added", added("2001:db8:10::20", "ff3e::8000:1", 255, SIX["id"], r1="pending",
                                             r2="pending"))
    held = [("2001:db8:10::20", "ff3e::8000:1", 255, 0, 0)]
    b.apply_traffic({"routers": {"r1": read(held), "r2": read(held)},
                     "rules": [view("2001:db8:10::20", "ff3e::8000:1", 255, SIX["id"], r1="applied", r2="applied")]},
                    now=1.0)
    assert b.session_authorized(SIX) == "yes"
    assert {"SOURCE", "GROUP"} == set(Board.ADDRESS_COLUMNS)


def test_a_binding_shows_in_the_senders_detail_and_its_drops_in_the_denied_pane():
    b = board()
    key = ("192.0.2.10", "239.1.1.1")
    event = added(*key, 8, r1="applied", r2="applied")
    event["rule"]["binding"] = {"iface": "r1=eth1", "rpf": True, "learn": True}
    b.apply_event("x-1", "rule.added", event)
    learned = {**read([(*key, 8, 100, 10000)])["rules"][0], "learned": {"iface": "eth1", "mac": "02:00:5e:10:00:01"},
               "moved": 3}
    pair = ("192.0.2.10", "239.1.1.1", "wrong_mac")
    spoofed = read(denied=[(*pair, 5, 500, 8, 999.0)])
    spoofed["denied"][0].update(iface="eth1", mac="02:00:5e:10:00:09")
    b.apply_event("x-2", "denied", {**denied_event("r1", *pair, 5, 8), "iface": "eth1", "mac": "02:00:5e:10:00:09"},
                  now=10.0)
    b.apply_traffic({"routers": {"r1": {**spoofed, "rules": [learned]}, "r2": read()}}, now=10.0)
    detail = b.rule_detail(key)
    assert "bound: iface=r1=eth1 rpf learn" in detail and "learned: r1 eth1 02:00:5e:10:00:01, moved 3" in detail
    (row,) = b.denied_rows(10.0)
    assert row[1][2] == "mac"
    assert b.denied_detail(pair) == ("192.0.2.10 -> 239.1.1.1 dropped: the rule's binding wants another source MAC"
                                     " (wrong_mac) (last from eth1 02:00:5e:10:00:09); 5 packets, 500 bytes so far"
                                     " on r1")


# -- the Receivers pane: JSON as mauthserver's GET /receivers, /receivers/denied, /receivers/joined answer it ----

def refused(router, iface, receiver, group, source=None, reason="join_refused", records=1, last_seen=990.0,
            version=3):
    return {"router": router, "iface": iface, "receiver": receiver, "group": group, "source": source,
            "reason": reason, "records": records, "last_seen": last_seen, "version": version}


def joined(router, iface, group, reporter, first_seen=700.0, last_seen=995.0, reports=4, left=False):
    return {"router": router, "iface": iface, "group": group, "reporter": reporter, "first_seen": first_seen,
            "last_seen": last_seen, "reports": reports, "left": left}


def receiver_view(receiver, group, source=None, iface=None, **states):
    rule = {"receiver": receiver, "group": group}
    if source:
        rule["source"] = source
    if iface:
        rule["iface"] = iface
    return {**rule, "routers": {n: {"state": st, "matched": 0, "last_seen": None} for n, st in states.items()}}


def test_the_receivers_pane_lists_refused_joins_newest_first_then_joined_groups_per_router_and_interface():
    b = board()
    b.load_receivers([], [refused("r1", "eth1", "10.1.0.5", "239.1.1.1", records=3, last_seen=940.0),
                          refused("r2", "eth2", "10.2.0.9", "232.1.1.1", "192.0.2.10", last_seen=998.0, records=12345),
                          refused("r1", "eth1", "10.1.0.6", "239.1.1.9", reason="join_limit", last_seen=999.0,
                                  version=2)],
                      [joined("r2", "eth2", "239.2.2.2", "10.2.0.7", left=True),
                       joined("r1", "eth1", "239.1.1.10", "10.1.0.6"), joined("r1", "eth1", "239.1.1.2", "10.1.0.5"),
                       joined("r1", "eth0", "ff0e::db8:1", "fe80::1", reports=20000)])
    rows = b.receiver_rows(1000.0)
    assert [cells for _, cells in rows] == [
        ["r1 eth1", "10.1.0.6", "239.1.1.9", "any", "limit", "1", "1s"],
        ["r2 eth2", "10.2.0.9", "232.1.1.1", "192.0.2.10", "deny", "12k", "2s"],
        ["r1 eth1", "10.1.0.5", "239.1.1.1", "any", "deny", "3", "1m"],
        ["r1 eth0", "fe80::1", "ff0e::db8:1", "-", "join", "20k", "5s"],
        ["r1 eth1", "10.1.0.5", "239.1.1.2", "-", "join", "4", "5s"],  # address order: .2 before .10
        ["r1 eth1", "10.1.0.6", "239.1.1.10", "-", "join", "4", "5s"],
        ["r2 eth2", "10.2.0.7", "239.2.2.2", "-", "left", "4", "5s"]]
    assert sum(w + 2 for _, w in Board.RECEIVER_COLUMNS) <= 80
    for _, cells in rows:  # the cells that are not addresses fit; addresses widen their columns
        assert len(cells) == len(Board.RECEIVER_COLUMNS)
        assert all(len(c) <= w for c, (label, w) in zip(cells, Board.RECEIVER_COLUMNS)
                   if label not in Board.RECEIVER_ADDRESS_COLUMNS), cells
    keys = [k for k, _ in rows]
    assert b.receiver_detail(keys[1], 1000.0) == (
        "10.2.0.9 may not join 232.1.1.1 from 192.0.2.10 on eth2 of r2: no receiver rule allows it (join_refused);"
        " 12345 records refused in IGMPv3 reports, the last 2s ago")
    assert b.receiver_detail(keys[0], 1000.0) == (
        "10.1.0.6 may not join 239.1.1.9 on eth1 of r1: the interface holds its limit of groups (join_limit);"
        " 1 records refused in IGMPv2 reports, the last 1s ago")
    assert b.receiver_detail(keys[3], 1000.0) == (
        "ff0e::db8:1 joined on eth0 of r1: last report from fe80::1 5s ago, 20000 reports since 5m ago")
    assert b.receiver_detail(keys[6], 1000.0).endswith("; left (a leave was heard)")
    assert b.receiver_detail("joined|r9|eth9|239.9.9.9", 1000.0) == ""


def test_authorizing_a_refused_join_asks_for_that_host_its_group_its_source_and_interface():
    b = board()
    asm = refused("r1", "eth1", "10.1.0.5", "239.1.1.1")
    ssm = refused("r2", "eth2", "10.2.0.9", "232.1.1.1", "192.0.2.10")
    mld = refused("r1", "eth0", "fe80::1:2", "ff0e::db8:1", version=2)
    limit = refused("r1", "eth1", "10.1.0.6", "239.1.1.9", reason="join_limit")
    gone = refused("r1", "#7", "10.1.0.8", "239.1.1.1")
    b.load_receivers([], [asm, ssm, mld, limit, gone], [joined("r1", "eth1", "239.1.1.2", "10.1.0.5")])
    assert b.authorize_join(refused_key(asm)) == {"receiver": "10.1.0.5", "group": "239.1.1.1", "iface": "eth1"}
    assert b.authorize_join(refused_key(ssm)) == {"receiver": "10.2.0.9", "group": "232.1.1.1",
                                                  "source": "192.0.2.10", "iface": "eth2"}
    assert b.authorize_join(refused_key(mld)) == {"receiver": "fe80::1:2", "group": "ff0e::db8:1", "iface": "eth0"}
    assert "MLDv2 reports" in b.receiver_detail(refused_key(mld), 1000.0)
    with pytest.raises(ValueError, match="group limit of eth1 on r1: a receiver rule does not lift it"):
        b.authorize_join(refused_key(limit))
    with pytest.raises(ValueError, match="the interface #7 this join came in on is gone from r1"):
        b.authorize_join(refused_key(gone))
    with pytest.raises(ValueError, match="select a refused join"):
        b.authorize_join(joined_key(joined("r1", "eth1", "239.1.1.2", "10.1.0.5")))

    # Once a rule allows it (the server's listing of rules), the refused join shows as authorized until the
    # router's listing drops it; a rule on another interface, or for another source, does not count.
    b.load_receivers([receiver_view("10.1.0.0/24", "239.1.0.0/16", iface="eth9", r1="applied"),
                      receiver_view("10.2.0.9", "232.1.1.1", "192.0.2.99", r2="applied")],
                     [asm, ssm, limit], [])
    assert [r[1][4] for r in b.receiver_rows(1000.0)] == ["deny", "limit", "deny"]
    b.load_receivers([receiver_view("10.1.0.0/24", "239.1.0.0/16", iface="eth1", r1="applied"),
                      receiver_view("10.2.0.9", "232.1.1.1", "192.0.2.10", "eth2", r2="pending"),
                      {"receiver": "a newer server's rule", "group": "?", "routers": {}}],
                     [asm, ssm, limit], [])
    assert [r[1][4] for r in b.receiver_rows(1000.0)] == ["auth", "limit", "auth"]  # the limit is not lifted
    assert b.receiver_detail(refused_key(ssm), 1000.0).endswith(
        "; now allowed: 10.2.0.9 may join 232.1.1.1 from 192.0.2.10 on eth2 (r2 pending)")
    with pytest.raises(ValueError, match="already authorized: 10.1.0.0/24 may join 239.1.0.0/16 on eth1"):
        b.authorize_join(refused_key(asm))
    b.load_receivers([], [ssm], [])  # the router forgot the other join: its row is gone
    assert [r[0] for r in b.receiver_rows(1000.0)] == [refused_key(ssm)]


def test_receiver_entries_a_dashboard_cannot_show_are_left_out_and_counts_stay_narrow():
    b = board()
    b.load_receivers(["not a rule"], [{"router": "r1", "iface": "eth1"}, "junk",  # type: ignore[list-item]
                                      refused("r1", "eth1", "10.1.0.5", "239.1.1.1", last_seen=None)],
                     [{"group": "239.1.1.1"}, joined("r1", "eth1", "239.1.1.2", None, last_seen=None)])
    assert [cells for _, cells in b.receiver_rows(1000.0)] == [
        ["r1 eth1", "10.1.0.5", "239.1.1.1", "any", "deny", "1", "-"],
        ["r1 eth1", "-", "239.1.1.2", "-", "join", "4", "-"]]
    assert b.receiver_rules == []
    # Routers whose listings could not be read are named before the selected row's details.
    b.load_receivers([], [refused("r1", "eth1", "10.1.0.5", "239.1.1.1")], [], {"r2": "timed out"})
    (key,) = b.refused
    assert b.receiver_detail(None, 1000.0) == "r2 not read: timed out"
    assert b.receiver_detail(key, 1000.0).startswith("r2 not read: timed out │ 10.1.0.5 may not join 239.1.1.1")
    assert [tiny_count(n) for n in (0, 9999, 10000, 999_499, 999_500, 12_345_678, 5 * 10**9, 10**13)] == [
        "0", "9999", "10k", "999k", "1M", "12M", "5G", "1T+"]
    assert receivers_changed("receiver.denied") and receivers_changed("receiver.added")
    assert not receivers_changed("rule.added") and not receivers_changed("denied")
