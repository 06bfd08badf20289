"""Rules follow their sessions: `core.plan_follow` (pure), then the mediator re-planning an authorized
session when its announcement changes, across a restart and after an upgrade from schema 2."""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
from typing import Any

import pytest

from mauthcore.events import EventKind
from mauthcore.rules import Rule
from mauthserver import core
from mauthserver.core import Authorization, Delete, DesiredRule, FlowView, Put, SessionView
from mauthserver.service import Mediator
from mauthserver.store import SCHEMA_VERSION
from sap.sap import announcement, deletion, encode, make_msg_id_hash
from sap.sdp import deletion_payload, parse_sdp
from tests.support.mediators import mediator_env

ip = ipaddress.ip_address
T = 1000.0
SAP_PEER = ("198.51.100.2", 9875)

# =============================================================================
# plan_follow (pure)
# =============================================================================

SID = "abc"


def view(*flows: tuple[str, int | None, tuple[str, ...]]) -> SessionView:
    return SessionView(SID, "feed", "192.0.2.200", ip("198.51.100.2"),
                       tuple(FlowView(ip(g), ttl, tuple(ip(s) for s in srcs)) for g, ttl, srcs in flows))


def own(src: str, grp: str, ttl: int, *, expire: bool = False) -> DesiredRule:
    return DesiredRule(Rule.make(src, grp, ttl), SID, expire, created=1.0, updated=1.0, actor="alice")


def by_hand(src: str, grp: str, ttl: int) -> DesiredRule:
    return DesiredRule(Rule.make(src, grp, ttl), None, created=1.0, updated=1.0, actor="bob")


def plan(rules: list[DesiredRule], session: SessionView, auth: Authorization | None = None) -> core.FollowPlan:
    desired = {r.key: r for r in rules}
    mine = {r.key: r for r in rules if r.session_id == SID}
    return core.plan_follow(desired, mine, session, auth or Authorization(SID), actor="mauthserver", now=T)


def summary(p: core.FollowPlan) -> list[tuple[str, str, str, int]]:
    out = []
    for c in p.changes:
        r = c.previous if isinstance(c, Delete) else c.rule
        out.append((c.kind, str(r.rule.source), str(r.rule.group), r.rule.max_ttl))
    return out


def test_a_new_group_adds_its_rule_with_the_authorizations_terms():
    p = plan([own("192.0.2.10", "232.1.1.1", 16, expire=True)],
             view(("232.1.1.1", 16, ("192.0.2.10",)), ("232.2.2.2", 8, ("192.0.2.10",))),
             Authorization(SID, expire_with_session=True))
    assert summary(p) == [("added", "192.0.2.10", "232.2.2.2", 8)]
    (put,) = p.changes
    assert isinstance(put, Put)
    assert (put.rule.session_id, put.rule.expire_with_session, put.rule.actor, put.rule.created) == (
        SID, True, "mauthserver", T)
    assert p.detail() == {"added": ["192.0.2.10 232.2.2.2 8"], "changed": [], "removed": []}


def test_a_group_no_longer_announced_removes_only_its_rules():
    p = plan([own("192.0.2.10", "232.1.1.1", 16), own("192.0.2.10", "232.2.2.2", 16)],
             view(("232.1.1.1", 16, ("192.0.2.10",))))
    assert summary(p) == [("removed", "192.0.2.10", "232.2.2.2", 16)]


def test_a_changed_ttl_changes_the_rule_and_keeps_when_it_was_created():
    p = plan([own("192.0.2.10", "232.1.1.1", 16)], view(("232.1.1.1", 32, ("192.0.2.10",))))
    assert summary(p) == [("changed", "192.0.2.10", "232.1.1.1", 32)]
    (put,) = p.changes
    assert isinstance(put, Put) and put.rule.created == 1.0 and put.rule.updated == T
    assert p.detail()["changed"] == ["192.0.2.10 232.1.1.1 32 (was max TTL 16)"]
    # The max TTL override the operator gave still wins over the c= TTL.
    assert plan([own("192.0.2.10", "232.1.1.1", 5)], view(("232.1.1.1", 32, ("192.0.2.10",))),
                Authorization(SID, max_ttl=5)).changes == []


def test_a_changed_source_filter_adds_the_new_sender_and_removes_the_old_one():
    p = plan([own("192.0.2.10", "232.1.1.1", 16), own("192.0.2.11", "232.1.1.1", 16)],
             view(("232.1.1.1", 16, ("192.0.2.10", "192.0.2.12"))))
    assert summary(p) == [("added", "192.0.2.12", "232.1.1.1", 16), ("removed", "192.0.2.11", "232.1.1.1", 16)]
    # With senders given, an "excl" filter that now names one of them takes it off that group.
    excl = SessionView(SID, "feed", "192.0.2.200", ip("198.51.100.2"),
                       (FlowView(ip("239.1.1.1"), 8, (), (ip("192.0.2.55"),)),))
    p = plan([own("192.0.2.55", "239.1.1.1", 8)], excl, Authorization(SID, senders=("192.0.2.55", "192.0.2.56")))
    assert summary(p) == [("added", "192.0.2.56", "239.1.1.1", 8), ("removed", "192.0.2.55", "239.1.1.1", 8)]


def test_rules_made_by_hand_or_from_another_session_are_never_touched():
    hand = by_hand("192.0.2.12", "232.1.1.1", 4)
    other = DesiredRule(Rule.make("192.0.2.13", "232.1.1.1", 99), "other")
    p = plan([own("192.0.2.10", "232.1.1.1", 16), hand, other],
             view(("232.1.1.1", 32, ("192.0.2.10", "192.0.2.12", "192.0.2.13"))))
    assert summary(p) == [("changed", "192.0.2.10", "232.1.1.1", 32)]
    assert [(u["source"], u["reason"]) for u in p.untouched] == [
        ("192.0.2.12", "held by a rule not made by this authorization"),
        ("192.0.2.13", "held by a rule not made by this authorization (session other)")]
    # ... and a hand-made rule that the session no longer announces is not removed either.
    assert plan([hand], view(("232.9.9.9", 8, ("192.0.2.10",)))).changes == [
        Put(DesiredRule(Rule.make("192.0.2.10", "232.9.9.9", 8), SID, False, T, T, "mauthserver"))]


def test_an_authorization_that_does_not_follow_plans_nothing():
    rules = [own("192.0.2.10", "232.1.1.1", 16)]
    p = plan(rules, view(("232.2.2.2", 8, ("192.0.2.99",))), Authorization(SID, follow=False))
    assert p.changes == [] and p.untouched == [] and p.skipped == []


def test_an_announcement_that_asks_for_no_rule_is_refused_so_that_the_rules_are_kept():
    rules = [own("192.0.2.10", "232.1.1.1", 16)]
    with pytest.raises(core.Unprocessable, match="any-source"):  # the source filter was dropped
        plan(rules, view(("232.1.1.1", 16, ())))
    with pytest.raises(core.Unprocessable, match="no multicast group"):
        plan(rules, view())
    with pytest.raises(core.Unprocessable, match="no TTL"):
        plan(rules, view(("232.1.1.1", None, ("192.0.2.10",))))


def test_authorizing_again_adds_given_senders_up_and_takes_the_latest_options():
    first = Authorization(SID, ("192.0.2.10",), 8, True, True, "alice", 1.0, 1.0)
    again = first.again(("192.0.2.11", "192.0.2.10"), None, False, False, "bob", T)
    assert again == Authorization(SID, ("192.0.2.10", "192.0.2.11"), None, False, False, "bob", 1.0, T)
    assert first.again((), 8, True, True, "bob", T).senders == ()  # the declared senders now
    assert Authorization(SID).again(("192.0.2.11",), None, False, True, "bob", T).senders == ("192.0.2.11",)
    assert core.authorization_params([" 2001:DB8::1 ", "2001:db8::1"], "16") == (("2001:db8::1",), 16)
    with pytest.raises(core.Invalid, match="not an IP address"):
        core.authorization_params(["nobody"], None)


# =============================================================================
# the mediator: real store on disk, SAP packets as announced
# =============================================================================


def sdp(version: int, *flows: tuple[str, int, tuple[str, ...]], sess_id: int = 7) -> bytes:
    """A session with one m= line per (group, ttl, declared senders); no senders: any-source."""
    lines = ["v=0", f"o=- {sess_id} {version} IN IP4 192.0.2.200", "s=Feed", "t=0 0"]
    for group, ttl, sources in flows:
        lines += ["m=video 5004 RTP/AVP 33", f"c=IN IP4 {group}/{ttl}"]
        if sources:
            lines.append(f"a=source-filter: incl IN IP4 {group} {' '.join(sources)}")
    return ("\r\n".join(lines) + "\r\n").encode()


def ann(payload: bytes) -> bytes:
    return encode(announcement(SAP_PEER[0], payload))


def dele(payload: bytes) -> bytes:
    return encode(deletion(SAP_PEER[0], deletion_payload(parse_sdp(payload).origin),
                           msg_id_hash=make_msg_id_hash(payload)))


@pytest.fixture
def env(tmp_path):
    with mediator_env(tmp_path) as e:
        yield e


def authorized(make) -> tuple[Mediator, Any]:
    """A new mediator that heard V1 and authorized it (as alice, following it); the mediator and the session."""
    m = make()
    m.on_sap_packet(ann(V1), SAP_PEER)
    (s,) = m.directory.sessions()
    m.authorize(s.id, actor="alice")
    return m, s


def rules_of(m: Mediator) -> dict[tuple[str, str], tuple[int, str | None, bool]]:
    return {(str(k.source), str(k.group)): (r.rule.max_ttl, r.session_id, r.expire_with_session)
            for k, r in m.fleet.desired.items()}


def stored_rules(m: Mediator) -> dict[tuple[str, str], tuple[int, str | None, bool]]:
    return {(str(r.rule.source), str(r.rule.group)): (r.rule.max_ttl, r.session_id, r.expire_with_session)
            for r in m.store.rules()}


def drain(sub) -> list:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


V1 = sdp(1, ("232.1.1.1", 16, ("192.0.2.10",)))


def test_a_new_version_with_a_new_group_extends_the_rules_in_one_audited_transaction(env):
    clock, make, stores = env
    m = make()
    m.on_sap_packet(ann(V1), SAP_PEER)
    (s,) = m.directory.sessions()
    out = m.authorize(s.id[:6], expire_with_session=True, actor="alice")
    assert out["authorization"]["follow"] is True and out["authorization"]["senders"] == []
    assert m.session_view(m.directory.get(s.id))["authorization"]["actor"] == "alice"
    sub = m.bus.subscribe(None, clock())
    commits = m.store.commits
    clock.t += 60
    m.on_sap_packet(ann(sdp(2, ("232.1.1.1", 16, ("192.0.2.10",)), ("232.2.2.2", 8, ("192.0.2.10",)))), SAP_PEER)

    want = {("192.0.2.10", "232.1.1.1"): (16, s.id, True), ("192.0.2.10", "232.2.2.2"): (8, s.id, True)}
    assert rules_of(m) == stored_rules(m) == want
    assert m.store.commits == commits + 1  # the packet and the follow-up: one transaction
    (row,) = [e for e in m.store.audit_log() if e["action"] == "session-followed"]
    assert row["actor"] == "mauthserver" and row["at"] == clock.t
    assert row["detail"]["added"] == ["192.0.2.10 232.2.2.2 8"] and row["detail"]["removed"] == []
    assert row["detail"]["session"] == s.id and row["detail"]["expire_with_session"] is True
    events = drain(sub)[1:]  # after the stream's hello
    assert [e.kind for e in events] == [EventKind.RULE_ADDED, EventKind.SESSION_CHANGED]
    assert events[0].data["reason"] == "session-changed" and events[0].data["actor"] == "mauthserver"
    assert events[0].data["rule"]["group"] == "232.2.2.2"
    follow = events[1].data["follow"]
    assert follow["added"] == ["192.0.2.10 232.2.2.2 8"] and follow["untouched"] == []
    assert [r["group"] for r in events[1].data["session"]["rules"]] == ["232.1.1.1", "232.2.2.2"]
    assert m.get_rule("192.0.2.10", "232.2.2.2")["follow"] is True
    assert m.stats()["store"]["authorizations"] == 1


def test_changed_ttls_and_senders_update_and_remove_and_a_hand_made_rule_is_untouched(env):
    clock, make, stores = env
    m = make()
    m.on_sap_packet(ann(sdp(1, ("232.1.1.1", 16, ("192.0.2.10", "192.0.2.11")))), SAP_PEER)
    (s,) = m.directory.sessions()
    m.authorize(s.id, actor="alice")
    m.add_rule("192.0.2.12", "232.1.1.1", 4, actor="bob")
    sub = m.bus.subscribe(None, clock())
    clock.t += 60
    m.on_sap_packet(ann(sdp(2, ("232.1.1.1", 32, ("192.0.2.10", "192.0.2.12")))), SAP_PEER)

    assert rules_of(m) == stored_rules(m) == {("192.0.2.10", "232.1.1.1"): (32, s.id, False),
                                              ("192.0.2.12", "232.1.1.1"): (4, None, False)}
    assert m.fleet.desired[Rule.make("192.0.2.12", "232.1.1.1", 4).key].actor == "bob"
    events = drain(sub)[1:]
    assert [(e.kind, e.data["reason"]) for e in events[:2]] == [(EventKind.RULE_CHANGED, "session-changed"),
                                                                (EventKind.RULE_REMOVED, "session-changed")]
    assert events[0].data["previous"]["max_ttl"] == 16 and events[1].data["rule"]["source"] == "192.0.2.11"
    detail = next(e for e in m.store.audit_log() if e["action"] == "session-followed")["detail"]
    assert detail["changed"] == ["192.0.2.10 232.1.1.1 32 (was max TTL 16)"]
    assert detail["removed"] == ["192.0.2.11 232.1.1.1 16"]
    assert [u["source"] for u in detail["untouched"]] == ["192.0.2.12"]
    # The same version heard again (a refresh) plans nothing and writes nothing.
    audits = len(m.store.audit_log())
    m.on_sap_packet(ann(sdp(2, ("232.1.1.1", 32, ("192.0.2.10", "192.0.2.12")))), SAP_PEER)
    assert len(m.store.audit_log()) == audits


def test_an_unplannable_version_keeps_the_rules_and_says_so(env, caplog):
    clock, make, stores = env
    m, s = authorized(make)
    sub = m.bus.subscribe(None, clock())
    caplog.set_level(logging.WARNING, logger="mauthserver")
    clock.t += 60
    m.on_sap_packet(ann(sdp(2, ("232.1.1.1", 16, ()))), SAP_PEER)  # now any-source: needs a sender

    assert rules_of(m) == stored_rules(m) == {("192.0.2.10", "232.1.1.1"): (16, s.id, False)}
    (row,) = [e for e in m.store.audit_log() if e["action"] == "session-followed"]
    assert "any-source" in row["detail"]["error"] and row["detail"]["kept"] == ["192.0.2.10 232.1.1.1 16"]
    (event,) = drain(sub)[1:]
    assert event.kind == EventKind.SESSION_CHANGED and "any-source" in event.data["follow"]["error"]
    assert any("cannot follow" in r.message and s.id in r.message for r in caplog.records)
    assert m.counters["follow_refused"] == 1


def test_no_follow_keeps_the_rules_as_made(env):
    clock, make, stores = env
    m = make()
    m.on_sap_packet(ann(V1), SAP_PEER)
    (s,) = m.directory.sessions()
    out = m.authorize(s.id, follow=False, actor="alice")
    assert out["authorization"]["follow"] is False
    clock.t += 60
    m.on_sap_packet(ann(sdp(2, ("232.2.2.2", 8, ("192.0.2.10",)))), SAP_PEER)
    assert rules_of(m) == {("192.0.2.10", "232.1.1.1"): (16, s.id, False)}
    assert not [e for e in m.store.audit_log() if e["action"] == "session-followed"]
    assert m.session_view(m.directory.get(s.id))["authorization"]["follow"] is False
    assert m.get_rule("192.0.2.10", "232.1.1.1")["follow"] is False
    # Authorizing it again with follow: the stored authorization follows from then on (audited, no rule changed).
    m.authorize(s.id, actor="alice")
    assert m.store.audit_log()[0]["detail"]["follow"] is True
    clock.t += 60
    m.on_sap_packet(ann(sdp(3, ("232.3.3.3", 8, ("192.0.2.10",)))), SAP_PEER)
    assert rules_of(m) == {("192.0.2.10", "232.3.3.3"): (8, s.id, False)}


def test_following_survives_a_restart(env):
    clock, make, stores = env
    m = make()
    m.on_sap_packet(ann(V1), SAP_PEER)
    (s,) = m.directory.sessions()
    m.authorize(s.id, senders=["192.0.2.55"], max_ttl=5, actor="alice")
    stores.pop().close()  # the mediator "crashes"

    clock.t += 60
    m2 = make()
    m2.restore_sessions()
    assert m2.authorizations[s.id] == m.authorizations[s.id]
    m2.on_sap_packet(ann(sdp(2, ("232.1.1.1", 16, ("192.0.2.10",)), ("232.2.2.2", 8, ()))), SAP_PEER)
    assert rules_of(m2) == stored_rules(m2) == {("192.0.2.55", "232.1.1.1"): (5, s.id, False),
                                                ("192.0.2.55", "232.2.2.2"): (5, s.id, False)}


def test_revoke_and_the_end_of_the_session_drop_the_authorization_and_eviction_keeps_it(env):
    clock, make, stores = env
    m = make(max_sessions=1)
    m.on_sap_packet(ann(V1), SAP_PEER)
    (s,) = m.directory.sessions()
    m.authorize(s.id, actor="alice")
    m.revoke(s.id, actor="alice")
    assert m.store.authorizations() == [] and m.authorizations == {} and m.fleet.desired == {}
    with pytest.raises(core.NotFound):
        m.revoke(s.id, actor="alice")

    # Rules all taken over by hand: revoking still drops what would follow.
    m.authorize(s.id, actor="alice")
    m.add_rule("192.0.2.10", "232.1.1.1", 3, replace=True, actor="bob")
    assert m.revoke(s.id[:5], actor="alice")["rules"] == [] and m.store.authorizations() == []

    m.authorize(s.id, senders=["192.0.2.20"], expire_with_session=True, actor="alice")
    clock.t += 10
    other = sdp(1, ("232.9.9.9", 8, ("192.0.2.99",)), sess_id=8)
    m.on_sap_packet(ann(other), SAP_PEER)  # evicts the session: not its end
    assert [a.session_id for a in m.store.authorizations()] == [s.id]
    clock.t += 10
    m.on_sap_packet(ann(sdp(2, ("232.1.1.1", 16, ("192.0.2.10",)), ("232.2.2.2", 8, ("192.0.2.10",)))), SAP_PEER)
    assert rules_of(m)[("192.0.2.20", "232.2.2.2")] == (8, s.id, True)  # back (and changed): followed
    m.on_sap_packet(dele(sdp(2, ("232.1.1.1", 16, ("192.0.2.10",)), ("232.2.2.2", 8, ("192.0.2.10",)))),
                    SAP_PEER)
    assert m.store.authorizations() == [] and m.authorizations == {}
    assert rules_of(m) == {("192.0.2.10", "232.1.1.1"): (3, None, False)}  # bob's, which did not expire


def test_a_session_that_timed_out_while_down_drops_its_authorization(env):
    clock, make, stores = env
    m, s = authorized(make)
    stores.pop().close()
    clock.t += 10 * 3600
    m2 = make()
    m2.restore_sessions()
    assert m2.store.authorizations() == [] and m2.authorizations == {}
    assert rules_of(m2) == {("192.0.2.10", "232.1.1.1"): (16, s.id, False)}  # did not expire with it


def test_a_schema_2_database_is_upgraded_and_its_authorizations_do_not_follow(env, tmp_path):
    clock, make, stores = env
    m, s = authorized(make)
    stores.pop().close()
    raw = sqlite3.connect(tmp_path / "m.db")  # make it what a schema-2 mauthserver wrote
    raw.executescript("DROP TABLE authorizations; DROP TABLE receivers; DROP TABLE receiver_policies;"
                      " ALTER TABLE rules DROP COLUMN binding;"
                      " ALTER TABLE applied DROP COLUMN binding;"
                      " UPDATE meta SET value = '2' WHERE key = 'schema_version';")
    raw.commit()
    raw.close()

    clock.t += 60
    m2 = make()
    m2.restore_sessions()
    assert m2.store.meta("schema_version") == str(SCHEMA_VERSION) == "5"
    assert m2.store.audit_log()[0]["action"] == "upgrade-db"
    assert m2.store.audit_log()[0]["detail"] == {"from": 2, "to": 5}
    assert m2.store.authorizations() == []
    assert m2.session_view(m2.directory.get(s.id))["authorization"] is None
    m2.on_sap_packet(ann(sdp(2, ("232.2.2.2", 8, ("192.0.2.10",)))), SAP_PEER)
    assert rules_of(m2) == {("192.0.2.10", "232.1.1.1"): (16, s.id, False)}  # as made
    # Authorizing it again stores an authorization: from then on its rules follow.
    m2.authorize(s.id, actor="alice")
    clock.t += 60
    m2.on_sap_packet(ann(sdp(3, ("232.3.3.3", 8, ("192.0.2.10",)))), SAP_PEER)
    assert set(rules_of(m2)) == {("192.0.2.10", "232.3.3.3")}


def test_a_stored_authorization_that_does_not_parse_is_refused(env, tmp_path):
    clock, make, stores = env
    make()
    stores.pop().close()
    raw = sqlite3.connect(tmp_path / "m.db")
    raw.execute("INSERT INTO authorizations VALUES ('abc', '{\"no\": 1}', NULL, 0, 1, 'x', 1.0, 1.0)")
    raw.commit()
    raw.close()
    with pytest.raises(Exception, match="invalid authorization of session abc"):
        make()
