"""mauthserver's PostgreSQL store, against a real server (tests/support/postgres.py).

The store's contract (tests/support/store_contract.py) runs here on
PostgreSQL, as tests/unit/test_mauthserver_store.py runs it on SQLite; then
what only PostgreSQL has: passwords kept off the command line, connection
errors, several mauthservers on one database (and their first start at the
same moment), the leader row and fencing, notifications, and a client that
dies in the middle of a transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psycopg
import pytest
from psycopg import conninfo as pq_conninfo

from mauthserver.core import Put
from mauthserver.store import NotLeader, SessionRow, Store, StoreError, open_store
from tests.support.postgres import PostgresServer
from tests.support.store_contract import StoreContract, T, rule


class PgBackend:
    kind = "postgresql"

    def __init__(self, server: PostgresServer, dbname: str) -> None:
        self.server, self.dbname = server, dbname

    @property
    def url(self) -> str:
        return self.server.url(self.dbname)

    def open(self, now: float = T) -> Store:
        return open_store(self.url, now=now)

    def raw(self, *statements: str) -> None:
        with self.server.admin(self.dbname) as conn, conn.transaction():
            for statement in statements:
                conn.execute(statement)

    def fingerprint(self) -> object:
        with self.server.admin(self.dbname) as conn:
            columns = conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns"
                                   " WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()
            tables = {t for t, _, _ in columns}
            meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall() if "meta" in tables else None
            audit = conn.execute("SELECT count(*) FROM audit").fetchone() if "audit" in tables else None
        return columns, meta, audit


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def backend(self, postgres, pg_db):
        return PgBackend(postgres, pg_db)


@pytest.fixture
def url(postgres, pg_db):
    return postgres.url(pg_db)


@pytest.fixture
def store(url):
    s = open_store(url, now=T)
    yield s
    s.close()


def admin_query(postgres, dbname, sql, params=()):
    with postgres.admin(dbname) as conn:
        return conn.execute(sql, params).fetchall()


# -- the schema and the connection ----------------------------------------------------------------------


def test_new_database_has_postgresql_types_and_the_leader_row(store, postgres, pg_db):
    assert (store.kind, store.path) == ("postgresql", None)
    types = dict(((t, c), d) for t, c, d in admin_query(
        postgres, pg_db, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                         " WHERE table_schema = 'public'"))
    assert types["sessions", "packet"] == "bytea"
    assert types["rules", "created"] == "double precision"
    assert types["rules", "bps"] == "bigint"
    assert types["leader", "expires"] == "timestamp with time zone"
    assert admin_query(postgres, pg_db, "SELECT id, holder, term, api, expires = '-infinity', since FROM leader") \
        == [(1, None, 0, None, True, None)]
    assert admin_query(postgres, pg_db, "SELECT is_identity FROM information_schema.columns"
                                        " WHERE table_name = 'audit' AND column_name = 'id'") == [("YES",)]
    # the session this store uses: named, durable commits
    assert store.db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    assert store.db.execute("SELECT current_setting('application_name')").fetchone()[0] == "mauthserver"


def test_connection_settings_notice_a_dead_server_in_seconds(store, pg_db):
    params = pq_conninfo.conninfo_to_dict(store.conninfo)
    assert {k: params[k] for k in ("connect_timeout", "application_name", "keepalives", "tcp_user_timeout")} == {
        "connect_timeout": "5", "application_name": "mauthserver", "keepalives": "1", "tcp_user_timeout": "10000"}
    assert store.describe().startswith("postgresql://postgres@/" + pg_db + "?host=/")


@pytest.mark.parametrize("form", ["postgresql://mauth:s3cret-pw@/{db}?host={host}",
                                  "postgres:///{db}?host={host}&user=mauth&password=s3cret-pw"])
def test_a_url_with_a_password_is_refused(postgres, pg_db, form):
    url = form.format(db=pg_db, host=postgres.dir)
    with pytest.raises(StoreError) as info:
        open_store(url, now=T)
    assert str(info.value) == ("the --db URL holds a password, which would show in the process list; put the"
                               " password in --db-password-file or PGPASSFILE")
    assert admin_query(postgres, pg_db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.fixture
def role(postgres, pg_db):
    """A role that must give a password (scram-sha-256), owning the test's database; (user, password)."""
    user, password = f"mauth_{pg_db[2:10]}", "pw-" + os.urandom(8).hex()
    with postgres.admin() as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        conn.execute(f"ALTER DATABASE {pg_db} OWNER TO {user}")
    return user, password


def _secret_file(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_password_comes_from_the_password_file(postgres, pg_db, role, tmp_path):
    user, password = role
    url = postgres.url(pg_db, user=user)
    with pytest.raises(StoreError, match="no password supplied") as info:
        open_store(url, now=T)
    assert str(info.value).startswith(f"cannot connect to PostgreSQL at {postgres.dir}/{pg_db}: ")
    wrong = _secret_file(tmp_path / "wrong", "not-it\n")
    with pytest.raises(StoreError, match="password authentication failed") as info:
        open_store(url, now=T, password_file=wrong)
    assert "not-it" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreError, match="accessible by group or others"):
        open_store(url, now=T, password_file=_secret_file(tmp_path / "open", password, 0o644))
    s = open_store(url, now=T, password_file=_secret_file(tmp_path / "pw", f"{password}\nsecond line\n"))
    try:
        assert s.meta("schema_version") is not None
        assert password not in s.describe() and s.describe().startswith(f"postgresql://{user}@/")
        assert pq_conninfo.conninfo_to_dict(s.conninfo)["password"] == password  # for the leader's connection
        with psycopg.connect(s.conninfo) as other:  # which it can open as is
            assert other.execute("SELECT current_user").fetchone() == (user,)
    finally:
        s.close()


def test_the_password_comes_from_pgpassfile(postgres, pg_db, role, tmp_path, monkeypatch):
    user, password = role
    monkeypatch.setenv("PGPASSFILE", _secret_file(tmp_path / "pgpass", f"*:*:*:{user}:{password}\n"))
    s = open_store(postgres.url(pg_db, user=user), now=T)
    try:
        assert [e["action"] for e in s.audit_log()] == ["create-db"]
        assert pq_conninfo.conninfo_to_dict(s.conninfo)["password"] == password  # resolved by libpq
    finally:
        s.close()


def test_an_unreachable_server_is_one_sentence(postgres, tmp_path):
    with pytest.raises(StoreError) as info:
        open_store(f"postgresql:///mauth?host={tmp_path}", now=T)
    assert str(info.value).startswith(f"cannot connect to PostgreSQL at {tmp_path}/mauth: ")
    assert "No such file or directory" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreError) as info:
        open_store("postgresql://127.0.0.1:1/mauth", now=T)
    assert str(info.value).startswith("cannot connect to PostgreSQL at 127.0.0.1:1/mauth: ")
    assert "refused" in str(info.value)


def test_a_missing_database_and_a_bad_url(postgres):
    with pytest.raises(StoreError, match=r'cannot connect to PostgreSQL at .*/nope: .*database "nope" does not'):
        open_store(postgres.url("nope"), now=T)
    with pytest.raises(StoreError) as info:
        open_store("postgresql://%zz-pw@host/db", now=T)
    assert "not a valid PostgreSQL URL" in str(info.value) and "zz-pw" not in str(info.value)


# -- several mauthservers on one database ---------------------------------------------------------------


def test_two_stores_on_one_database_at_once(url):
    a, b = open_store(url, now=T), open_store(url, now=T + 1)
    try:
        assert a.fleet_state_id == b.fleet_state_id
        a.commit([Put(rule())], actor="a", action="add", detail={}, now=T)
        b.commit([Put(rule(grp="239.1.1.2"))], actor="b", action="add", detail={}, now=T)
        assert sorted(str(r.key.group) for r in a.rules()) == ["239.1.1.1", "239.1.1.2"]
        assert [e["actor"] for e in b.audit_log()] == ["b", "a", "mauthserver"]
    finally:
        a.close()
        b.close()


def test_concurrent_first_starts_create_the_schema_once(url):
    n = 6
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def start(i):
        barrier.wait()
        try:
            results[i] = open_store(url, now=T + i)
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stores = [r for r in results if isinstance(r, Store)]
    try:
        assert len(stores) == n, results
        assert [e["action"] for e in stores[0].audit_log()] == ["create-db"]
        assert len({s.fleet_state_id for s in stores}) == 1
    finally:
        for s in stores:
            s.close()


# -- fencing and notifications -------------------------------------------------------------------------


def _lease(backend_url_admin, holder, term, expires="now() + interval '1 minute'"):
    backend_url_admin(f"UPDATE leader SET holder = '{holder}', term = {term}, expires = {expires}, since = now()")


def test_fencing_lets_only_the_current_lease_write(store, postgres, pg_db):
    backend = PgBackend(postgres, pg_db)
    _lease(backend.raw, "a", 3)
    store.commit([Put(rule())], actor="t", action="add", detail={}, now=T)  # fencing off: no check
    store.fencing = True
    before = backend.fingerprint(), store.rules()

    store.fence(None, None)
    with pytest.raises(NotLeader, match=r"^this mauthserver is not the leader \(it holds no term\)$"):
        store.commit([Put(rule(grp="239.1.1.2"))], actor="t", action="add", detail={}, now=T)
    store.fence("a", 2)  # a stale term
    with pytest.raises(NotLeader, match=r"^this mauthserver is not the leader \(term 2 lost\)$"):
        store.commit([Put(rule(grp="239.1.1.2"))], actor="t", action="add", detail={}, now=T)
    store.fence("b", 3)  # another holder
    with pytest.raises(NotLeader, match=r"term 3 lost"):
        store.sync_routers([("r1", "192.0.2.1", 7575)], now=T)
    assert (backend.fingerprint(), store.rules()) == before and store.routers() == {}

    store.fence("a", 3)  # the current lease: commits
    store.commit([Put(rule(grp="239.1.1.2"))], actor="t", action="add", detail={}, now=T)
    assert len(store.rules()) == 2

    _lease(backend.raw, "a", 3, expires="now() - interval '1 second'")  # expired
    with pytest.raises(NotLeader, match=r"term 3 lost"):
        store.commit([Put(rule(grp="239.1.1.3"))], actor="t", action="add", detail={}, now=T)
    assert len(store.rules()) == 2 and store.commits == 2


def test_the_lease_cannot_change_hands_during_a_fenced_write(store, postgres, pg_db):
    backend = PgBackend(postgres, pg_db)
    _lease(backend.raw, "a", 3)
    store.fencing = True
    store.fence("a", 3)
    with store.transaction(T) as tx:
        tx.apply([Put(rule())])
        with postgres.admin(pg_db) as other:
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("UPDATE leader SET holder = 'b', term = 4 WHERE id = 1")
    with postgres.admin(pg_db) as other:  # once committed, a new leader may take over
        other.execute("UPDATE leader SET holder = 'b', term = 4 WHERE id = 1")
    with pytest.raises(NotLeader):
        store.commit([], actor="t", action="x", detail={}, now=T)


def test_notify_reaches_a_listener_on_another_connection(store, postgres, pg_db):
    with postgres.admin(pg_db) as listener:
        listener.execute("LISTEN mauth_events")
        store.notify("mauth_events", '{"kind": "rules"}')
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=1)]
    assert got == [("mauth_events", '{"kind": "rules"}')]


def test_packets_round_trip_as_bytea(store, postgres, pg_db):
    packet = b"\x20\x00\x00\x00" + bytes(range(256)) + b"\x00" * 3
    with store.transaction(T) as tx:
        tx.save_session(SessionRow("s1", "n", "192.0.2.1", "192.0.2.1", packet, T, T, T + 1))
    assert store.sessions()[0].packet == packet
    assert admin_query(postgres, pg_db, "SELECT packet FROM sessions") == [(packet,)]


# -- losing the connection ---------------------------------------------------------------------------------

_CHILD = """
import sys
from mauthserver.core import Put
from mauthserver.store import open_store
from tests.support.store_contract import rule, T
s = open_store(sys.argv[1], now=T)
with s.transaction(T) as tx:
    tx.apply([Put(rule())])
    tx.audit("child", "add", {})
    print("in transaction", flush=True)
    sys.stdin.read()  # until killed
"""


def test_a_client_killed_mid_transaction_commits_nothing(url, postgres, pg_db):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "in transaction\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stdin is not None:
            child.stdin.close()
        if child.stdout is not None:
            child.stdout.close()
    s = open_store(url, now=T)
    try:
        assert s.rules() == [] and [e["action"] for e in s.audit_log()] == ["create-db"]
        s.commit([Put(rule())], actor="t", action="add", detail={}, now=T)  # the dead one's row lock went with it
        assert len(s.rules()) == 1
    finally:
        s.close()


def test_a_connection_lost_mid_transaction_commits_nothing_and_the_next_one_reconnects(store, postgres, pg_db):
    with pytest.raises(StoreError, match=r"^lost the connection to PostgreSQL at postgresql://"):
        with store.transaction(T) as tx:
            tx.apply([Put(rule())])
            admin_query(postgres, pg_db, "SELECT pg_terminate_backend(%s)", (store.db.conn.info.backend_pid,))
            tx.audit("t", "add", {})
    assert store.commits == 0
    assert store.rules() == [] and [e["action"] for e in store.audit_log()] == ["create-db"]  # a new connection
    store.commit([Put(rule())], actor="t", action="add", detail={}, now=T)
    assert len(store.rules()) == 1 and store.commits == 1


# -- the daemon and its command line ---------------------------------------------------------------------


def test_the_daemon_runs_on_a_postgresql_url(url, monkeypatch):
    import asyncio

    from mauthserver.config import Options
    from mauthserver.daemon import Daemon

    seen = {}

    async def stop_at_once(self):
        seen["kind"], seen["rules"] = self.store.kind, self.store.rules()
        self.fatal()

    monkeypatch.setattr(Daemon, "_housekeeping", stop_at_once)
    daemon = Daemon(Options(db=url, api=("127.0.0.1", 0), sap=False, listen=None), "t" * 20, None)
    asyncio.run(asyncio.wait_for(daemon.run(), 20))
    assert seen == {"kind": "postgresql", "rules": []}
    assert daemon.store is not None and daemon.store.db.conn.closed  # closed on the way out


def test_the_command_line_refuses_a_password_in_the_url(postgres, pg_db, tmp_path):
    token = _secret_file(tmp_path / "token", "t" * 20 + "\n")
    url = f"postgresql://postgres:hunter2-pw@/{pg_db}?host={postgres.dir}"
    done = subprocess.run([sys.executable, "-m", "mauthserver.cli", "--db", url, "--token-file", token, "--no-sap",
                           "--listen", "off", "--api", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("mauthserver: the --db URL holds a password, which would show in the process list; put the"
                           " password in --db-password-file or PGPASSFILE\n")
    done = subprocess.run([sys.executable, "-m", "mauthserver.cli", "--db", str(tmp_path / "m.db"),
                           "--db-password-file", token, "--token-file", token], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--db-password-file is for a PostgreSQL --db URL" in done.stderr
