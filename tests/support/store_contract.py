"""What every store back end must do: the tests of mauthserver/store.py, written once for both engines.

`StoreContract` holds the test bodies; a test class per engine inherits them
and provides the `backend` fixture: tests/unit/test_mauthserver_store.py on
SQLite (the unit tier: a file, no socket), and
tests/loopback/test_mauthserver_store_postgres.py on a real PostgreSQL
server (tests/support/postgres.py). A backend opens the store through
`open_store` as mauthserver does, writes behind its back through a
connection of its own (`raw`, committed), and takes a `fingerprint` of the
database, so that a refusal can be shown to have changed nothing.
"""

from __future__ import annotations

from typing import Protocol

import pytest

from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import MAX_BPS, MAX_PPS, UNBOUND, Binding, Rule, RuleKey
from mauthserver.core import Delete, DesiredPolicy, DesiredReceiver, DesiredRule, Put
from mauthserver.store import SCHEMA_VERSION, SessionRow, Store, StoreError

T = 1_700_000_000.0


def rule(src="192.0.2.10", grp="239.1.1.1", ttl=8, **kw) -> DesiredRule:
    return DesiredRule(Rule.make(src, grp, ttl), created=T, updated=T, actor="test", **kw)


class Backend(Protocol):
    kind: str

    def open(self, now: float = T) -> Store: ...

    def raw(self, *statements: str) -> None: ...

    def fingerprint(self) -> object: ...


class StoreContract:
    """The behaviour both engines share. Subclasses provide the `backend` fixture."""

    def refused(self, backend: Backend, match: str) -> None:
        before = backend.fingerprint()
        with pytest.raises(StoreError, match=match) as info:
            backend.open()
        assert "\n" not in str(info.value)
        assert backend.fingerprint() == before  # never touched, never "repaired"

    def test_new_database_is_versioned_and_audited(self, backend):
        s = backend.open()
        try:
            assert s.kind == backend.kind
            assert s.meta("schema_version") == str(SCHEMA_VERSION)
            assert s.fleet_state_id > 0
            assert [e["action"] for e in s.audit_log()] == ["create-db"]
            assert s.audit_log()[0]["detail"] == {"schema_version": SCHEMA_VERSION}
            assert s.counts() == {"rules": 0, "applied": 0, "sessions": 0, "authorizations": 0, "receivers": 0,
                                  "receiver_policies": 0, "audit": 1, "routers": 0}
            assert not s.fencing
        finally:
            s.close()

    def test_changes_and_their_audit_row_commit_together(self, backend):
        s = backend.open()
        a, b = rule(), rule(grp="239.1.1.2", session_id="abc", expire_with_session=True)
        first = s.commit([Put(a), Put(b)], actor="alice", action="add-sender", detail={"n": 2}, now=T + 1)
        with pytest.raises(RuntimeError):
            with s.transaction(T + 2) as tx:
                tx.apply([Delete(a)])
                tx.audit("bob", "del-sender", {})
                raise RuntimeError("boom")  # nothing of this transaction may remain
        assert s.commits == 1
        state_id = s.fleet_state_id
        s.close()
        s = backend.open(T + 3)
        try:
            assert sorted(r.key for r in s.rules()) == sorted([a.key, b.key])
            got = {r.key: r for r in s.rules()}[b.key]
            assert (got.session_id, got.expire_with_session, got.actor) == ("abc", True, "test")
            assert [e["action"] for e in s.audit_log()] == ["add-sender", "create-db"]
            assert s.audit_log()[0]["actor"] == "alice" and s.audit_log()[0]["detail"] == {"n": 2}
            assert s.audit_log()[0]["id"] == first
            assert s.fleet_state_id == state_id  # the fleet keeps its identity across restarts
            s.commit([Put(rule(ttl=9), previous=a)], actor="alice", action="add-sender", detail={}, now=T + 4)
            assert {r.key: r.rule.max_ttl for r in s.rules()}[a.key] == 9
            s.commit([Delete(a)], actor="alice", action="del-sender", detail={}, now=T + 5)
            assert [r.key for r in s.rules()] == [b.key]
        finally:
            s.close()

    def test_routers_applied_state_and_sessions(self, backend):
        s = backend.open()
        try:
            assert s.sync_routers([("r1", "192.0.2.1", 7575), ("r2", "192.0.2.65", 7575)], now=T) == {
                "added": ["r1", "r2"], "removed": [], "moved": []}
            k1, k2 = RuleKey.make("192.0.2.10", "239.1.1.1"), RuleKey.make("192.0.2.10", "239.1.1.2")
            s.save_router("r1", epoch=5, state_id=7, mode="enforce", rule_count=2, last_contact=T, last_error=None,
                          applied_all={k1: (8, 0, 0, UNBOUND), k2: (4, 500, 0, UNBOUND)}, now=T)
            s.save_router("r2", epoch=1, state_id=2, mode=None, rule_count=None, last_contact=None,
                          last_error="down", applied_put={k1: (8, 0, 0, UNBOUND)}, now=T)
            s.save_router("r1", epoch=5, state_id=7, mode="enforce", rule_count=1, last_contact=T, last_error=None,
                          applied_del=[k2], now=T)
            assert s.applied() == {"r1": {k1: (8, 0, 0, UNBOUND)}, "r2": {k1: (8, 0, 0, UNBOUND)}}
            assert s.routers()["r1"].epoch == 5 and s.routers()["r2"].last_error == "down"
            # A router removed from the configuration takes its applied state with it; a moved one forgets it.
            assert s.sync_routers([("r1", "192.0.2.2", 7575)], now=T) == {"added": [], "removed": ["r2"],
                                                                         "moved": ["r1"]}
            assert s.applied() == {}
            assert s.routers()["r1"].epoch is None

            row = SessionRow("abc", "name", "192.0.2.1", "192.0.2.1", b"packet", T, T, T + 3600)
            with s.transaction(T) as tx:
                tx.save_session(row)
            s.touch_sessions([("abc", T + 10, T + 3610)], now=T + 10)
            (got,) = s.sessions()
            assert (got.packet, got.first_heard, got.last_heard, got.expires) == (b"packet", T, T + 10, T + 3610)
            with s.transaction(T) as tx:
                tx.delete_session("abc")
            assert s.sessions() == []
        finally:
            s.close()

    def test_values_keep_their_full_range_and_order(self, backend):
        """64-bit epochs and state ids, the largest rate limits, any packet bytes, router names in byte order."""
        s = backend.open()
        try:
            big = DesiredRule(Rule.make("192.0.2.0/24", "239.1.1.1", 255, pps=MAX_PPS, bps=MAX_BPS),
                              created=T, updated=T, actor="test")
            s.commit([Put(big)], actor="t", action="add", detail={"ü": "☃"}, now=T)
            assert [d.rule for d in s.rules()] == [big.rule]
            assert s.audit_log()[0]["detail"] == {"ü": "☃"}
            names = ["r_1", "R2", "r-1", "r1", "r.1", "a"]
            s.sync_routers([(n, "192.0.2.1", 7575) for n in names], now=T)
            assert list(s.routers()) == sorted(names)  # byte order, whatever the server's locale
            s.save_router("r1", epoch=2**64 - 1, state_id=2**63, mode="monitor", rule_count=1, last_contact=T,
                          last_error=None, applied_all={big.key: (*big.rule.terms, UNBOUND)}, now=T)
            r1 = s.routers()["r1"]
            assert (r1.epoch, r1.state_id, r1.mode) == (2**64 - 1, 2**63, "monitor")
            assert s.applied() == {"r1": {big.key: (255, MAX_PPS, MAX_BPS, UNBOUND)}}
            packet = bytes(range(256)) * 40
            with s.transaction(T) as tx:
                tx.save_session(SessionRow("s1", "n", "192.0.2.1", "192.0.2.1", packet, T, T, T + 1))
            assert s.sessions()[0].packet == packet
        finally:
            s.close()

    def test_audit_log_pages_back_from_the_newest(self, backend):
        s = backend.open()
        try:
            ids = [s.commit([], actor="t", action=f"a{i}", detail={"i": i}, now=T + i) for i in range(5)]
            assert ids == sorted(ids)
            assert [e["action"] for e in s.audit_log(limit=2)] == ["a4", "a3"]
            assert [e["action"] for e in s.audit_log(limit=3, before=ids[3])] == ["a2", "a1", "a0"]
            assert s.audit_log(limit=2, before=ids[3])[0]["at"] == T + 2
        finally:
            s.close()

    def test_meta_and_mode(self, backend):
        from mauthcore.protocol.model import Mode

        s = backend.open()
        try:
            assert s.desired_mode() is None
            with s.transaction(T) as tx:
                tx.set_meta("mode", "monitor")
            assert s.desired_mode() == Mode.MONITOR
            with s.transaction(T) as tx:
                tx.set_meta("mode", None)
            assert s.meta("mode") is None
        finally:
            s.close()

    def test_refuses_another_applications_database(self, backend):
        backend.raw("CREATE TABLE songs (title TEXT)")
        self.refused(backend, "not a mauthserver database|not mauthserver's")

    def test_refuses_a_newer_schema(self, backend):
        backend.open().close()
        backend.raw(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
        self.refused(backend, f"has schema {SCHEMA_VERSION + 1}, written by a newer mauthserver")

    def test_refuses_a_database_without_a_schema_version(self, backend):
        backend.open().close()
        backend.raw("DELETE FROM meta WHERE key = 'schema_version'")
        self.refused(backend, "has no schema version")

    def test_refuses_a_database_missing_a_table(self, backend):
        backend.open().close()
        backend.raw("DROP TABLE sessions")
        self.refused(backend, r"lacks table\(s\) sessions")

    def test_a_schema_1_database_is_upgraded_in_place(self, backend):
        backend.open().close()
        backend.raw("ALTER TABLE rules DROP COLUMN pps", "ALTER TABLE rules DROP COLUMN bps",
                    "ALTER TABLE applied DROP COLUMN pps", "ALTER TABLE applied DROP COLUMN bps",
                    "ALTER TABLE rules DROP COLUMN binding", "ALTER TABLE applied DROP COLUMN binding",
                    "DROP TABLE authorizations", "DROP TABLE receivers", "DROP TABLE receiver_policies",
                    "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
                    "INSERT INTO rules (source, grp, max_ttl, session_id, expire_with_session, created, updated, actor)"
                    " VALUES ('192.0.2.10', '239.1.1.1', 8, NULL, 0, 1.0, 1.0, 'old')")
        s = backend.open()
        try:
            assert s.meta("schema_version") == str(SCHEMA_VERSION) == "5"
            assert [d.rule for d in s.rules()] == [Rule.make("192.0.2.10", "239.1.1.1", 8)]
            assert s.audit_log()[0]["action"] == "upgrade-db"
            assert s.audit_log()[0]["detail"] == {"from": 1, "to": 5}
            s.commit([Put(rule(grp="239.1.1.2"))], actor="t", action="add", detail={}, now=T)  # the new columns work
        finally:
            s.close()

    def test_a_schema_3_database_is_upgraded_to_bindings(self, backend):
        """Schema 4 adds the bindings: the rules and applied rows of schema 3 come through unbound."""
        backend.open().close()
        backend.raw("ALTER TABLE rules DROP COLUMN binding", "ALTER TABLE applied DROP COLUMN binding",
                    "DROP TABLE receivers", "DROP TABLE receiver_policies",
                    "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
                    "INSERT INTO rules (source, grp, max_ttl, pps, bps, session_id, expire_with_session, created,"
                    " updated, actor) VALUES ('192.0.2.10', '239.1.1.1', 8, 0, 0, NULL, 0, 1.0, 1.0, 'old')",
                    "INSERT INTO routers (name, host, port, added) VALUES ('r1', '192.0.2.1', 7575, 1.0)",
                    "INSERT INTO applied (router, source, grp, max_ttl, pps, bps, at)"
                    " VALUES ('r1', '192.0.2.10', '239.1.1.1', 8, 0, 0, 1.0)")
        s = backend.open()
        try:
            assert s.meta("schema_version") == "5"
            assert s.audit_log()[0]["detail"] == {"from": 3, "to": 5}
            (old,) = s.rules()
            assert old.rule == Rule.make("192.0.2.10", "239.1.1.1", 8) and not old.rule.bound
            assert s.applied() == {"r1": {old.key: (8, 0, 0, UNBOUND)}}
        finally:
            s.close()

    def test_bound_rules_and_applied_bindings_round_trip(self, backend):
        """A desired rule keeps its binding as written (one interface per router included); a router's applied
        row keeps the binding as that router holds it."""
        s = backend.open()
        try:
            bound = Binding.make("r2=ens4,r1=eth1", rpf=True, mac="02:00:5e:10:00:01", learn=True)
            desired = DesiredRule(Rule.make("192.0.2.10", "239.1.1.1", 8, pps=100, binding=bound),
                                  created=T, updated=T, actor="test")
            prefix = DesiredRule(Rule.make("192.0.2.0/24", "239.1.1.2", 8, binding=Binding.make("eth0", rpf=True)),
                                 created=T, updated=T, actor="test")
            s.commit([Put(desired), Put(prefix), Put(rule(grp="239.1.1.3"))], actor="t", action="add", detail={},
                     now=T)
            got = {d.key: d.rule for d in s.rules()}
            assert got == {d.key: d.rule for d in (desired, prefix, rule(grp="239.1.1.3"))}
            assert got[desired.key].binding.iface == "r1=eth1,r2=ens4"
            s.sync_routers([("r1", "192.0.2.1", 7575), ("r2", "192.0.2.2", 7575)], now=T)
            on_r1 = desired.rule.on("r1")
            s.save_router("r1", epoch=1, state_id=1, mode=None, rule_count=2, last_contact=T, last_error=None,
                          applied_all={desired.key: (*on_r1.terms, on_r1.binding),
                                       prefix.key: (8, 0, 0, prefix.rule.binding)}, now=T)
            s.save_router("r2", epoch=1, state_id=1, mode=None, rule_count=1, last_contact=T, last_error=None,
                          applied_put={desired.key: (8, 100, 0, Binding(rpf=True))}, now=T)
            assert s.applied() == {
                "r1": {desired.key: (8, 100, 0, Binding("eth1", True, bytes.fromhex("02005e100001"), True)),
                       prefix.key: (8, 0, 0, Binding("eth0", rpf=True))},
                "r2": {desired.key: (8, 100, 0, Binding(rpf=True))}}
            # Changing only the binding is a change like any other, and unbinding is stored as unbound.
            s.commit([Put(DesiredRule(Rule.make("192.0.2.10", "239.1.1.1", 8, pps=100), created=T, updated=T,
                                      actor="t"), desired)], actor="t", action="add", detail={}, now=T)
            assert {d.key: d.rule.binding for d in s.rules()}[desired.key] == UNBOUND
        finally:
            s.close()

    def test_a_schema_4_database_is_upgraded_to_receivers(self, backend):
        """Schema 5 adds the receiver tables: everything of schema 4 (rules, routers, applied) comes through."""
        backend.open().close()
        backend.raw("DROP TABLE receivers", "DROP TABLE receiver_policies",
                    "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
                    "INSERT INTO rules (source, grp, max_ttl, pps, bps, binding, session_id, expire_with_session,"
                    " created, updated, actor) VALUES ('192.0.2.10', '239.1.1.1', 8, 100, 0, '', NULL, 0, 1.0, 1.0,"
                    " 'old')",
                    "INSERT INTO routers (name, host, port, added) VALUES ('r1', '192.0.2.1', 7575, 1.0)",
                    "INSERT INTO applied (router, source, grp, max_ttl, pps, bps, binding, at)"
                    " VALUES ('r1', '192.0.2.10', '239.1.1.1', 8, 100, 0, '', 1.0)")
        s = backend.open()
        try:
            assert s.meta("schema_version") == "5"
            assert s.audit_log()[0]["detail"] == {"from": 4, "to": 5}
            (old,) = s.rules()
            assert old.rule == Rule.make("192.0.2.10", "239.1.1.1", 8, pps=100) and old.actor == "old"
            assert s.applied() == {"r1": {old.key: (8, 100, 0, UNBOUND)}}
            assert s.receivers() == [] and s.receiver_policies() == []
            rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
            with s.transaction(T) as tx:  # the new tables work
                tx.put_receiver(DesiredReceiver(rule, T, "t"))
            assert [d.rule for d in s.receivers()] == [rule]
        finally:
            s.close()

    def test_receivers_and_policies_round_trip_with_their_audit_rows(self, backend):
        """Every field of a receiver rule is its key; a policy per (router, interface), '' for every router."""
        s = backend.open()
        try:
            plain = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
            ssm = ReceiverRule.make("10.1.0.7", "232.1.1.1", "192.0.2.10", "eth1")
            v6 = ReceiverRule.make("fe80::/10", "ff3e::/96", "2001:db8::10", "eth2")
            iface_only = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1")  # differs only there
            with s.transaction(T) as tx:
                for r in (plain, ssm, v6, iface_only):
                    tx.put_receiver(DesiredReceiver(r, T, "alice"))
                tx.audit("alice", "receiver-added", {"n": 4})
            with s.transaction(T + 1) as tx:
                tx.put_receiver(DesiredReceiver(plain, T + 1, "bob"))  # held: its first row is kept
            got = s.receivers()
            assert [d.rule for d in got] == sorted([plain, ssm, v6, iface_only])
            assert {d.rule: (d.created, d.actor) for d in got}[plain] == (T, "alice")
            with pytest.raises(RuntimeError):
                with s.transaction(T + 2) as tx:
                    tx.delete_receiver(ssm)
                    raise RuntimeError("boom")  # the deletion is not kept
            with s.transaction(T + 3) as tx:
                tx.delete_receiver(plain)
                tx.audit("bob", "receiver-removed", plain.as_json())
            assert [d.rule for d in s.receivers()] == sorted([ssm, v6, iface_only])

            everywhere = DesiredPolicy("", IfacePolicy.make("eth1", "closed", 20), T, "alice")
            on_r1 = DesiredPolicy("r1", IfacePolicy.make("eth1", "monitor"), T, "alice")
            with s.transaction(T) as tx:
                tx.put_receiver_policy(everywhere)
                tx.put_receiver_policy(on_r1)
                tx.audit("alice", "receiver-policy", {})
            changed = DesiredPolicy("", IfacePolicy.make("eth1", "open", 65535), T + 5, "bob")
            with s.transaction(T + 5) as tx:
                tx.put_receiver_policy(changed)
            assert s.receiver_policies() == [changed, on_r1]
            assert s.counts()["receivers"] == 3 and s.counts()["receiver_policies"] == 2
            assert [e["action"] for e in s.audit_log(limit=3)] == ["receiver-policy", "receiver-removed",
                                                                    "receiver-added"]
        finally:
            s.close()
        s = backend.open(T + 10)  # what was committed survives a restart
        try:
            assert [d.rule for d in s.receivers()] == sorted([ssm, v6, iface_only])
            assert s.receiver_policies() == [changed, on_r1]
        finally:
            s.close()
