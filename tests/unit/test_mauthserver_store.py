"""mauthserver's SQLite store: durability settings, atomic changes with audit, refusing what it does not know."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from mauthcore.rules import Rule, RuleKey
from mauthserver.core import Delete, DesiredRule, Put
from mauthserver.store import APPLICATION_ID, SCHEMA_VERSION, SessionRow, Store, StoreError

T = 1_700_000_000.0


def rule(src="192.0.2.10", grp="239.1.1.1", ttl=8, **kw) -> DesiredRule:
    return DesiredRule(Rule.make(src, grp, ttl), created=T, updated=T, actor="test", **kw)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "m.db"


def test_new_database_is_durable_marked_and_private(db):
    s = Store.open(db, now=T)
    try:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert s.meta("schema_version") == str(SCHEMA_VERSION)
        assert s.fleet_state_id > 0
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        assert [e["action"] for e in s.audit_log()] == ["create-db"]
    finally:
        s.close()


def test_changes_and_their_audit_row_commit_together(db):
    s = Store.open(db, now=T)
    a, b = rule(), rule(grp="239.1.1.2", session_id="abc", expire_with_session=True)
    s.commit([Put(a), Put(b)], actor="alice", action="add-sender", detail={"n": 2}, now=T + 1)
    with pytest.raises(RuntimeError):
        with s.transaction(T + 2) as tx:
            tx.apply([Delete(a)])
            tx.audit("bob", "del-sender", {})
            raise RuntimeError("boom")  # nothing of this transaction may remain
    state_id = s.fleet_state_id
    s.close()
    s = Store.open(db, now=T + 3)
    try:
        assert sorted(r.key for r in s.rules()) == sorted([a.key, b.key])
        got = {r.key: r for r in s.rules()}[b.key]
        assert (got.session_id, got.expire_with_session, got.actor) == ("abc", True, "test")
        assert [e["action"] for e in s.audit_log()] == ["add-sender", "create-db"]
        assert s.audit_log()[0]["actor"] == "alice" and s.audit_log()[0]["detail"] == {"n": 2}
        assert s.fleet_state_id == state_id  # the fleet keeps its identity across restarts
        s.commit([Put(rule(ttl=9), previous=a)], actor="alice", action="add-sender", detail={}, now=T + 4)
        assert {r.key: r.rule.max_ttl for r in s.rules()}[a.key] == 9
        s.commit([Delete(a)], actor="alice", action="del-sender", detail={}, now=T + 5)
        assert [r.key for r in s.rules()] == [b.key]
    finally:
        s.close()


def test_routers_applied_state_and_sessions(db):
    s = Store.open(db, now=T)
    try:
        assert s.sync_routers([("r1", "192.0.2.1", 7575), ("r2", "192.0.2.65", 7575)], now=T) == {
            "added": ["r1", "r2"], "removed": [], "moved": []}
        k1, k2 = RuleKey.make("192.0.2.10", "239.1.1.1"), RuleKey.make("192.0.2.10", "239.1.1.2")
        s.save_router("r1", epoch=5, state_id=7, mode="enforce", rule_count=2, last_contact=T, last_error=None,
                      applied_all={k1: (8, 0, 0), k2: (4, 500, 0)}, now=T)
        s.save_router("r2", epoch=1, state_id=2, mode=None, rule_count=None, last_contact=None, last_error="down",
                      applied_put={k1: (8, 0, 0)}, now=T)
        s.save_router("r1", epoch=5, state_id=7, mode="enforce", rule_count=1, last_contact=T, last_error=None,
                      applied_del=[k2], now=T)
        assert s.applied() == {"r1": {k1: (8, 0, 0)}, "r2": {k1: (8, 0, 0)}}
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


def _refused(path, match: str) -> None:
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(StoreError, match=match) as info:
        Store.open(path, now=T)
    assert "\n" not in str(info.value)
    if before is not None:
        assert path.read_bytes() == before  # never touched, never "repaired"


def test_refuses_a_file_that_is_not_sqlite(db):
    db.write_bytes(b"this is my shopping list\n" * 100)
    _refused(db, "is not a SQLite database")


def test_refuses_a_corrupt_database(db):
    s = Store.open(db, now=T)
    s.commit([Put(rule(grp=f"239.1.{i // 200}.{i % 200 + 1}")) for i in range(2000)],
             actor="t", action="add", detail={}, now=T)
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray(db.read_bytes())
    for off in range(4096 + 100, len(data), 4096):  # scribble over every page but the header page
        data[off:off + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    _refused(db, "corrupt|cannot be used")


def test_refuses_another_applications_database(db):
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE songs (title TEXT)")
    other.commit()
    other.close()
    _refused(db, "not a mauthserver database")


def test_refuses_a_newer_schema(db):
    Store.open(db, now=T).close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    raw.commit()
    raw.close()
    _refused(db, "newer mauthserver")


def test_one_mediator_per_database(db):
    first = Store.open(db, now=T)
    try:
        _refused(db, "in use by another mauthserver")
    finally:
        first.close()
    Store.open(db, now=T).close()  # released with the first one


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nope" / "m.db", now=T)
