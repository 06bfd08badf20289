"""mauthserver with IPv6: announced IPv6 sessions become IPv6 rules; store, API and reports keep canonical text.

The session comes in as a SAP packet through the real directory, so the
chain under test is SAP -> SDP (c=IN IP6, source filters in IPv6) ->
SessionView -> plan_authorize -> store. The fan-out of those rules to
routers over protocol v2 is in test_mauthctl_ipv6.py (LoopbackFleet).
"""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest

from mauthcore.protocol.model import DeniedEntry, Reason
from mauthcore.rules import Rule
from mauthserver import core
from mauthserver.core import IPV6_DEFAULT_MAX_TTL, DesiredRule, FlowView, Put, SessionView
from mauthserver.denied import DeniedTracker
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, encode

T = 1_700_000_000.0
ip = ipaddress.ip_address

SSM6 = b"""v=0\r
o=operator 3900000001 1 IN IP6 2001:db8:10::20\r
s=Campus radio (IPv6 SSM)\r
t=0 0\r
m=audio 5004 RTP/AVP 96\r
c=IN IP6 FF3E::8000:1\r
a=source-filter: incl IN IP6 FF3E::8000:1 2001:DB8:10::20\r
m=video 5006 RTP/AVP 97\r
c=IN IP6 ff3e::8000:2/2\r
a=source-filter: incl IN IP6 ff3e::8000:2 2001:db8:10::21\r
a=source-filter: excl IN IP6 ff3e::8000:3 2001:db8:10::66\r
"""
DUAL = b"""v=0\r
o=- 80 1 IN IP6 fe80::1\r
s=Dual stack\r
t=0 0\r
m=audio 5004 RTP/AVP 0\r
c=IN IP4 233.252.0.7/32\r
c=IN IP6 ff15::db8:7\r
"""


def session(sdp: bytes, announcer: str):
    d = Directory()
    (event,) = d.handle_packet(encode(announcement(announcer, sdp)), T)
    return SessionView.of(event.session)


def rules_of(plan) -> list[tuple[str, str, int]]:
    return sorted((str(r.rule.source), str(r.rule.group), r.rule.max_ttl) for r in plan.rules)


def test_an_announced_ipv6_session_gives_ipv6_rules_with_the_default_hop_limit():
    view = session(SSM6, "2001:db8:10::20")
    assert [(str(f.group), f.ttl) for f in view.flows] == [("ff3e::8000:1", None), ("ff3e::8000:2", None),
                                                          ("ff3e::8000:3", None)]
    plan = core.plan_authorize({}, view, actor="a", now=T)
    assert IPV6_DEFAULT_MAX_TTL == 255
    assert rules_of(plan) == [("2001:db8:10::20", "ff3e::8000:1", 255), ("2001:db8:10::21", "ff3e::8000:2", 255)]
    assert all(r.rule.key.family == 6 for r in plan.rules)
    assert plan.skipped == [{"group": "ff3e::8000:3", "reason": "the session declares no sender for this group"}]
    plan = core.plan_authorize({}, view, max_ttl=16, actor="a", now=T)
    assert {r.rule.max_ttl for r in plan.rules} == {16}
    # Given senders replace the declared ones, except where the session excludes them.
    plan = core.plan_authorize({}, view, senders=["2001:db8:10::66"], actor="a", now=T)
    assert rules_of(plan) == [("2001:db8:10::66", "ff3e::8000:1", 255), ("2001:db8:10::66", "ff3e::8000:2", 255)]
    assert plan.skipped == [{"group": "ff3e::8000:3", "source": "2001:db8:10::66",
                             "reason": "the session excludes 2001:db8:10::66 from ff3e::8000:3"}]


def test_given_senders_go_to_the_groups_of_their_family_and_suggestions_skip_link_local():
    view = session(DUAL, "2001:db8:10::30")
    with pytest.raises(core.Unprocessable) as info:
        core.plan_authorize({}, view, actor="a", now=T)
    assert info.value.details["suggestions"] == ["2001:db8:10::30"]  # not the link-local o= address
    plan = core.plan_authorize({}, view, senders=["192.0.2.55", "2001:db8:10::30"], actor="a", now=T)
    assert rules_of(plan) == [("192.0.2.55", "233.252.0.7", 32), ("2001:db8:10::30", "ff15::db8:7", 255)]
    assert plan.skipped == []
    plan = core.plan_authorize({}, view, senders=["192.0.2.55"], actor="a", now=T)
    assert rules_of(plan) == [("192.0.2.55", "233.252.0.7", 32)]
    assert plan.skipped == [{"group": "ff15::db8:7", "reason": "no sender of its address family (IPv6) was given"}]
    with pytest.raises(core.Unprocessable, match="fe80::2 is link-local"):
        core.plan_authorize({}, view, senders=["fe80::2"], actor="a", now=T)


def test_a_link_scope_group_in_a_session_is_skipped_with_the_rules_sentence():
    view = SessionView("x", "link", "2001:db8::5", ip("2001:db8::5"),
                       (FlowView(ip("ff02::db8:1"), None, (ip("2001:db8::5"),)),
                        FlowView(ip("ff05::db8:1"), None, (ip("2001:db8::5"),))))
    plan = core.plan_authorize({}, view, actor="a", now=T)
    assert rules_of(plan) == [("2001:db8::5", "ff05::db8:1", 255)]
    assert plan.skipped == [{"group": "ff02::db8:1", "source": "2001:db8::5", "reason": (
        "group ff02::db8:1 is a link-scope group (scope 2 or smaller), which the filter always passes")}]


def test_the_store_keeps_ipv6_rules_in_canonical_text(tmp_path):
    s = Store.open(tmp_path / "m.db", now=T)
    rules = [DesiredRule(Rule.make("2001:DB8:0:1:0::/64", "FF0E::DB8:1", 8), created=T, updated=T, actor="t"),
             DesiredRule(Rule.make("2001:db8::10", "ff15::/16", 4, pps="2k"), "sess", True, T, T, "t")]
    s.commit([Put(r) for r in rules], actor="t", action="add-sender", detail={}, now=T)
    s.close()
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert sorted(db.execute("SELECT source, grp, max_ttl, pps FROM rules")) == [
            ("2001:db8:0:1::/64", "ff0e::db8:1", 8, 0), ("2001:db8::10", "ff15::/16", 4, 2000)]
    s = Store.open(tmp_path / "m.db", now=T + 1)
    try:
        assert sorted(s.rules(), key=lambda r: r.key) == sorted(rules, key=lambda r: r.key)
    finally:
        s.close()


def test_denied_reports_name_ipv6_pairs_canonically():
    entry = DeniedEntry(ipaddress.IPv6Address("2001:db8:0:2::66"), ipaddress.IPv6Address("ff0e::db8:9"),
                        Reason.TTL, 7, 700, 64, 1_700_000_000_000)
    (report,) = DeniedTracker().observe("r1", [entry])
    assert report.to_dict() | {"last_seen": None} == {
        "router": "r1", "source": "2001:db8:0:2::66", "group": "ff0e::db8:9", "reason": "ttl", "packets": 7,
        "bytes": 700, "new_packets": 7, "first": True, "last_ttl": 64, "last_seen": None}


