"""mauthserver keeps, fans out and shows prefix rules and rate limits.

The mediator's rule model is musersd's: a rule is identified by its key
(host or prefix on each side) and holds its max TTL and rate limits. These
tests follow such rules through the store (including the upgrade of a
database written before rate limits existed), the planner, one router's
reconciler and the HTTP API.
"""

from __future__ import annotations

import sqlite3

from mauthcore.protocol.model import RuleEntry
from mauthcore.rules import UNBOUND, Rule
from mauthserver import core
from mauthserver.core import DesiredRule, Fleet, Install, Put, RouterCore
from mauthserver.store import SCHEMA_VERSION, Store

T = 1_700_000_000.0
SUBNET = Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=500)
SCOPE = Rule.make("192.0.2.10", "239.192.0.0/14", 16, bps=2_000_000)
HOST = Rule.make("192.0.2.0", "239.1.1.1", 4)  # the subnet's first address: another rule


def test_store_keeps_prefixes_and_limits(tmp_path):
    s = Store.open(tmp_path / "m.db", now=T)
    try:
        s.commit([Put(DesiredRule(r, created=T, updated=T, actor="t")) for r in (SUBNET, SCOPE, HOST)],
                 actor="t", action="add", detail={}, now=T)
        s.sync_routers([("r1", "192.0.2.1", 7575)], now=T)
        s.save_router("r1", epoch=1, state_id=2, mode="enforce", rule_count=3, last_contact=T, last_error=None,
                      applied_all={r.key: core.held(r) for r in (SUBNET, SCOPE, HOST)}, now=T)
    finally:
        s.close()
    s = Store.open(tmp_path / "m.db", now=T)
    try:
        assert {d.rule for d in s.rules()} == {SUBNET, SCOPE, HOST}
        assert s.applied() == {"r1": {SUBNET.key: (8, 500, 0, UNBOUND), SCOPE.key: (16, 0, 2_000_000, UNBOUND),
                                     HOST.key: (4, 0, 0, UNBOUND)}}
        assert sorted(r[0] for r in s.db.execute("SELECT source FROM rules")) == ["192.0.2.0", "192.0.2.0/24",
                                                                                "192.0.2.10"]
    finally:
        s.close()


def test_a_schema_1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "m.db"
    Store.open(path, now=T).close()
    raw = sqlite3.connect(path)  # make it what a schema-1 mauthserver wrote, with one rule
    raw.executescript("""
        CREATE TABLE rules1 AS SELECT source, grp, max_ttl, session_id, expire_with_session, created, updated, actor
            FROM rules;
        DROP TABLE rules;
        ALTER TABLE rules1 RENAME TO rules;
        CREATE TABLE applied1 AS SELECT router, source, grp, max_ttl, at FROM applied;
        DROP TABLE applied;
        ALTER TABLE applied1 RENAME TO applied;
        DROP TABLE authorizations;
        DROP TABLE receivers;
        DROP TABLE receiver_policies;
        UPDATE meta SET value = '1' WHERE key = 'schema_version';
        INSERT INTO rules VALUES ('192.0.2.10', '239.1.1.1', 8, NULL, 0, 1.0, 1.0, 'old');
    """)
    raw.commit()
    raw.close()
    s = Store.open(path, now=T)
    try:
        assert s.meta("schema_version") == str(SCHEMA_VERSION) == "5"  # through 2 (the limits)
        assert [d.rule for d in s.rules()] == [Rule.make("192.0.2.10", "239.1.1.1", 8)]
        assert s.audit_log()[0]["action"] == "upgrade-db"
        assert s.audit_log()[0]["detail"] == {"from": 1, "to": 5}
    finally:
        s.close()


def test_a_changed_limit_is_a_change_and_the_same_rule_is_not():
    desired = {SUBNET.key: DesiredRule(SUBNET)}
    assert core.plan_add(desired, SUBNET, replace_existing=False, actor="t", now=T) == []
    faster = Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=1000)
    try:
        core.plan_add(desired, faster, replace_existing=False, actor="t", now=T)
    except core.Conflict as exc:
        assert "max TTL 8, pps 500" in exc.message
    else:
        raise AssertionError("a different limit must conflict without replace")
    (change,) = core.plan_add(desired, faster, replace_existing=True, actor="t", now=T)
    assert change.rule.rule == faster and change.kind == "changed"
    assert DesiredRule(SCOPE).to_dict()["source"] == "192.0.2.10"
    assert DesiredRule(SCOPE).to_dict()["group"] == "239.192.0.0/14"
    assert (DesiredRule(SCOPE).to_dict()["pps"], DesiredRule(SCOPE).to_dict()["bps"]) == (0, 2_000_000)


def test_the_reconciler_reinstalls_a_rule_whose_limit_changed():
    fleet = Fleet([DesiredRule(SUBNET)])
    rc = RouterCore("r1", "192.0.2.1", 7575)
    fleet.add_router(rc)
    rc.probe_due = rc.verify_due = T + 100
    rc.on_listed([RuleEntry(Rule.make("192.0.2.0/24", "239.1.1.1", 8, pps=400))], fleet.desired, T)
    rc.probe_due = T + 100  # no probe due: the next action is the install
    assert rc.next_action(fleet.desired, None, T).op == Install(SUBNET)
    rc.on_done(Install(SUBNET), T)
    assert rc.rule_state(DesiredRule(SUBNET))["state"] == "applied"
    assert rc.pending(fleet.desired) == 0


