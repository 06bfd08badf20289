"""mauthserver's SQLite store: the contract both engines keep (tests/support/store_contract.py), and what only
SQLite has: durability settings, the file's marks, refusing a file it does not know, one mediator per file."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from mauthserver.core import Put
from mauthserver.store import APPLICATION_ID, Store, StoreError, open_store
from tests.support.store_contract import StoreContract, T, rule


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path) -> None:
        self.path = path

    def open(self, now: float = T) -> Store:
        return open_store(str(self.path), now=now)

    def raw(self, *statements: str) -> None:
        db = sqlite3.connect(self.path)
        for statement in statements:
            db.execute(statement)
        db.commit()
        db.close()

    def fingerprint(self) -> object:
        return self.path.read_bytes() if self.path.exists() else None


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return SqliteBackend(tmp_path / "m.db")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "m.db"


def test_new_database_is_durable_marked_and_private(db):
    s = Store.open(db, now=T)
    try:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        assert (s.kind, s.conninfo, s.describe()) == ("sqlite", None, str(db))
    finally:
        s.close()


def test_fencing_and_notify_do_nothing_on_sqlite(db):
    """One process per file (the flock): there is no other mauthserver to fence off or to tell."""
    s = open_store(str(db), now=T)
    try:
        s.fencing = True
        s.fence(None, None)
        s.notify("mauth", "hello")
        s.commit([Put(rule())], actor="t", action="add", detail={}, now=T)
        assert len(s.rules()) == 1
    finally:
        s.close()


def test_a_password_file_is_refused_for_a_sqlite_database(db):
    with pytest.raises(StoreError, match="--db-password-file is for a PostgreSQL --db URL"):
        open_store(str(db), now=T, password_file="/nonexistent")
    assert not db.exists()


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
