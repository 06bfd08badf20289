"""mauthserver's state: SQLite (one file, one writer) or PostgreSQL (mauthserver/pgstore.py).

Strategy: everything the mediator must not forget lives here, and a client
command is acknowledged only after the transaction holding it has committed.

`open_store(db, now=...)` picks the engine: a path is a SQLite file (all that
follows), a `postgresql://` or `postgres://` URL a PostgreSQL database
(mauthserver/pgstore.py says what differs there). The two share everything
but connecting, creating and upgrading the schema, and beginning a
transaction: the SQL of every method below is written once, in the dialect
both engines speak (`?` placeholders, which the PostgreSQL engine turns into
psycopg's `%s`; `INSERT ... ON CONFLICT ... DO UPDATE SET x = excluded.x`;
`RETURNING id`), and runs through an `Engine` (`Store.db`, `Tx.db`). The
schema below is SQLite's; pgstore derives PostgreSQL's from it statement by
statement, so that a table or an upgrade step is written in one place.

* WAL journal with `synchronous=FULL`: each commit is fsynced before
  `COMMIT` returns, so an acknowledged command survives `kill -9` and a power
  cut. (NORMAL would lose the last commits on power loss.) Commits cost well
  under a millisecond on the machines seen so far.
* Every mutation runs in one `BEGIN IMMEDIATE` transaction together with its
  audit row (who, what, when): there is no state change without its audit
  row, and no audit row without its change.
* The file is marked as ours (`PRAGMA application_id`) and carries a schema
  version (table `meta`). A file that is not SQLite, fails `quick_check`,
  belongs to another application, or has a schema this version does not
  know is refused with one sentence: the daemon never "repairs" or
  overwrites a database it does not understand.
* One mediator per database: an exclusive `flock` on `<db>.lock` (released
  by the kernel when the process dies, even by `kill -9`).

Tables:

    meta      key/value: schema version, the fleet's state_id, the desired filter mode
    routers   the routers managed (mirrors the command line) and what we last
              heard from each: epoch, state_id, mode, rule count, last contact, last error
    rules     the desired sender rules, with the session they came from
    applied   per router, the rules it was last seen or told to hold
    sessions  announced sessions: the last SAP packet that made or changed each
              one, so the directory can be rebuilt after a restart, and when it was heard
    authorizations  per session, what `authorize` was asked (senders as a JSON list,
              max TTL override, expire-with-session, follow), written with its rules,
              so that they follow the session's later announcements across restarts;
              removed by revoke and when the session ends
    audit     append-only log: at, actor, action, detail (JSON); its oldest rows are deleted
              by the retention bounds (`Store.prune_audit`), and by nothing else

Addresses are stored as text in canonical form (a prefix rule's prefix as
"192.0.2.0/24"); rate limits as integers, 0 = none; times are Unix seconds.

Schema 2 added the rate limits (pps, bps) to `rules` and `applied`; schema 3
the table `authorizations`; schema 4 the sender binding (`binding`) to `rules`
(as written, "r1=eth1,r2=ens4" included) and `applied` (as the router holds
it, resolved for that router): the JSON of `Binding.as_json()` with sorted
keys, '' for an unbound rule, so that every rule made before it is unbound.
An older database is upgraded in place, in one transaction, on open.
Sessions authorized before the upgrade to schema 3 have no row in
`authorizations`, so their rules stay as they were made (they do not follow
the session) until the session is authorized again.

The statements are plain SQL (types TEXT, INTEGER, REAL, BLOB; `?`
placeholders; upserts with `ON CONFLICT ... DO UPDATE`), valid in SQLite and
PostgreSQL alike.

Leader fencing (`Store.fence`, `Store.fencing`) and notifications
(`Store.notify`) exist for several mauthservers sharing one PostgreSQL
database; on SQLite, which the flock keeps to one process, they do nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mauthcore.protocol.model import Mode
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import UNBOUND, Binding, Rule, RuleError, RuleKey

from .core import Authorization, Change, Delete, DesiredPolicy, DesiredReceiver, DesiredRule, Held, Put

SCHEMA_VERSION = 5
APPLICATION_ID = 0x6D415554  # "mAUT"
_SQLITE_MAGIC = b"SQLite format 3\x00"

_AUTHORIZATIONS = """CREATE TABLE authorizations (
    session_id          TEXT PRIMARY KEY,
    senders             TEXT NOT NULL,
    max_ttl             INTEGER,
    expire_with_session INTEGER NOT NULL,
    follow              INTEGER NOT NULL,
    actor               TEXT NOT NULL,
    created             REAL NOT NULL,
    updated             REAL NOT NULL
)"""

# Schema 5: receiver rules (the rule's JSON fields, '' for no source or interface) and interface policies
# (router '' = every router that has the interface; a router's own row wins over it).
_RECEIVERS = """CREATE TABLE receivers (
    receiver TEXT NOT NULL,
    grp      TEXT NOT NULL,
    source   TEXT NOT NULL DEFAULT '',
    iface    TEXT NOT NULL DEFAULT '',
    created  REAL NOT NULL,
    actor    TEXT NOT NULL,
    PRIMARY KEY (receiver, grp, source, iface)
)"""
_RECEIVER_POLICIES = """CREATE TABLE receiver_policies (
    router      TEXT NOT NULL,
    iface       TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('open', 'closed', 'monitor')),
    group_limit INTEGER NOT NULL CHECK (group_limit BETWEEN 0 AND 65535),
    updated     REAL NOT NULL,
    actor       TEXT NOT NULL,
    PRIMARY KEY (router, iface)
)"""

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE routers (
    name         TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    port         INTEGER NOT NULL,
    added        REAL NOT NULL,
    epoch        TEXT,
    state_id     TEXT,
    mode         TEXT,
    rule_count   INTEGER,
    last_contact REAL,
    last_error   TEXT
);
CREATE TABLE rules (
    source              TEXT NOT NULL,
    grp                 TEXT NOT NULL,
    max_ttl             INTEGER NOT NULL CHECK (max_ttl BETWEEN 1 AND 255),
    pps                 INTEGER NOT NULL DEFAULT 0,
    bps                 INTEGER NOT NULL DEFAULT 0,
    binding             TEXT NOT NULL DEFAULT '',
    session_id          TEXT,
    expire_with_session INTEGER NOT NULL DEFAULT 0,
    created             REAL NOT NULL,
    updated             REAL NOT NULL,
    actor               TEXT NOT NULL,
    PRIMARY KEY (source, grp)
);
CREATE INDEX rules_by_session ON rules (session_id) WHERE session_id IS NOT NULL;
CREATE TABLE applied (
    router  TEXT NOT NULL REFERENCES routers (name) ON DELETE CASCADE,
    source  TEXT NOT NULL,
    grp     TEXT NOT NULL,
    max_ttl INTEGER NOT NULL,
    pps     INTEGER NOT NULL DEFAULT 0,
    bps     INTEGER NOT NULL DEFAULT 0,
    binding TEXT NOT NULL DEFAULT '',
    at      REAL NOT NULL,
    PRIMARY KEY (router, source, grp)
);
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    announcer   TEXT NOT NULL,
    packet      BLOB NOT NULL,
    first_heard REAL NOT NULL,
    last_heard  REAL NOT NULL,
    expires     REAL NOT NULL
);
""" + _AUTHORIZATIONS + """;
""" + _RECEIVERS + """;
""" + _RECEIVER_POLICIES + """;
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

# Schema n -> n+1, run in one transaction by Store._check_and_init.
_UPGRADES = {
    1: ("ALTER TABLE rules ADD COLUMN pps INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE rules ADD COLUMN bps INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE applied ADD COLUMN pps INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE applied ADD COLUMN bps INTEGER NOT NULL DEFAULT 0"),
    2: (_AUTHORIZATIONS,),
    3: ("ALTER TABLE rules ADD COLUMN binding TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE applied ADD COLUMN binding TEXT NOT NULL DEFAULT ''"),
    4: (_RECEIVERS, _RECEIVER_POLICIES),
}


class StoreError(Exception):
    """The database cannot be used; the message says why in one sentence."""


class NotLeader(StoreError):
    """A write refused by fencing: another mauthserver holds the lease (see `Store.fence`)."""


def is_postgresql_url(db: str | os.PathLike[str]) -> bool:
    """Whether --db names a PostgreSQL database (a libpq URL) rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def open_store(db: str, *, now: float, password_file: str | None = None) -> Store:
    """Open the database `db` names: a libpq URL is PostgreSQL (psycopg, imported only then), anything
    else the path of a SQLite file (`Store.open`). Raise StoreError, changing nothing, if it cannot be used."""
    if is_postgresql_url(db):
        from .pgstore import open_postgresql  # psycopg loads only for a PostgreSQL URL

        return open_postgresql(db, now=now, password_file=password_file)
    if password_file is not None:
        raise StoreError("--db-password-file is for a PostgreSQL --db URL; a SQLite database has no password")
    return Store.open(db, now=now)


class Rows(Protocol):
    """What `Engine.execute` returns: sqlite3's or psycopg's cursor."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Engine:
    """What differs between the engines, behind the one interface the shared SQL uses.

    `execute`/`executemany` take SQL with `?` placeholders; `writing()` is one
    write transaction (committed when the block ends without error, rolled
    back otherwise); `holds_lease` is the fencing check, run first in every
    write transaction while fencing is on.
    """

    kind = ""
    conninfo: str | None = None
    fences = False  # whether `Store.fencing` means anything here (PostgreSQL: several processes share it)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    @contextmanager
    def writing(self) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover - makes this a generator

    def holds_lease(self, holder: str, term: int) -> bool:
        raise NotImplementedError

    def limit_idle_transactions(self, seconds: float | None) -> None:
        """End this session if it sits idle inside a transaction longer than `seconds` (None: never);
        only where another process waits on the locks a transaction holds (PostgreSQL)."""
        return None

    def notify(self, channel: str, payload: str) -> None:
        return None

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteEngine(Engine):
    """One SQLite connection in autocommit mode; a write transaction is `BEGIN IMMEDIATE` ... `COMMIT`."""

    kind = "sqlite"

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self.conn.close()


def check_version(where: str, value: object) -> int:
    """The schema version stored in `meta` (either engine), or StoreError if this mauthserver cannot use it."""
    version = int(str(value)) if value is not None and str(value).isdigit() else None
    if version is None:
        raise StoreError(f"database {where} has no schema version; refusing to start")
    if version > SCHEMA_VERSION:
        raise StoreError(f"database {where} has schema {version}, written by a newer mauthserver"
                         f" (this one knows schema {SCHEMA_VERSION}); refusing to start")
    if version < SCHEMA_VERSION and any(v not in _UPGRADES for v in range(version, SCHEMA_VERSION)):
        raise StoreError(f"database {where} has schema {version}, which this mauthserver cannot"
                         " upgrade; refusing to start")
    return version


def seed(db: Engine, now: float) -> None:
    """The rows of a new database (either engine), inside the transaction that created its tables."""
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    db.execute("INSERT INTO meta (key, value) VALUES ('fleet_state_id', ?)", (f"{secrets.randbits(63) or 1:016x}",))
    db.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (repr(now),))
    db.execute("INSERT INTO audit (at, actor, action, detail) VALUES (?, 'mauthserver', 'create-db', ?)",
               (now, json.dumps({"schema_version": SCHEMA_VERSION})))


def record_upgrade(db: Engine, version: int, now: float) -> None:
    """After the upgrade steps (either engine): the new version and its audit row, in the same transaction."""
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    db.execute("INSERT INTO audit (at, actor, action, detail) VALUES (?, 'mauthserver', 'upgrade-db', ?)",
               (now, json.dumps({"from": version, "to": SCHEMA_VERSION})))


@dataclass(frozen=True)
class RouterRow:
    name: str
    host: str
    port: int
    epoch: int | None
    state_id: int | None
    mode: str | None
    rule_count: int | None
    last_contact: float | None
    last_error: str | None


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str
    origin: str
    announcer: str
    packet: bytes
    first_heard: float
    last_heard: float
    expires: float


TABLES = ("meta", "routers", "rules", "applied", "sessions", "authorizations", "receivers", "receiver_policies",
          "audit")  # every table a database of this schema has (SQLite's check; pgstore derives its own)

PRUNE_BATCH = 10_000  # audit rows deleted per transaction at most (Store.prune_audit)


@dataclass(frozen=True)
class PruneResult:
    """What one `Store.prune_audit` pass did."""

    removed: int  # audit rows deleted
    by: str | None  # the bound that asked for the most: "age" or "rows" (None: nothing removed)
    more: bool  # the batch bound cut the pass short: more rows are due
    rows: int  # audit rows left, the pass's own `audit-pruned` row included


def _like_escape(text: str) -> str:
    """`text` as a literal inside a LIKE pattern with ESCAPE '\\' (the same in SQLite and PostgreSQL)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:016x}"


def _unhex(text: str | None) -> int | None:
    return None if text is None else int(text, 16)


def binding_text(binding: Binding) -> str:
    """A binding as the columns `binding` hold it: '' when unbound, else its JSON with sorted keys (one text
    per binding, so that equal bindings are equal text)."""
    return "" if binding.empty else json.dumps(binding.as_json(), sort_keys=True, separators=(",", ":"))


def receiver_columns(rule: ReceiverRule) -> tuple[str, str, str, str]:
    """A receiver rule as the columns of `receivers` hold it: its JSON's canonical texts, '' for no source or
    interface (so that the primary key covers every field: NULLs would never conflict)."""
    fields = rule.as_json()
    return str(fields["receiver"]), str(fields["group"]), str(fields.get("source", "")), str(fields.get("iface", ""))


class Tx:
    """The operations allowed inside one transaction (see `Store.transaction`)."""

    def __init__(self, db: Engine, now: float) -> None:
        self.db = db
        self.now = now

    def audit(self, actor: str, action: str, detail: Mapping[str, Any]) -> int:
        # fetchall(): SQLite finishes the statement before COMMIT; RETURNING: PostgreSQL has no lastrowid
        ((audit_id,),) = self.db.execute(
            "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?) RETURNING id",
            (self.now, actor, action, json.dumps(detail, sort_keys=True))).fetchall()
        return int(audit_id)

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if isinstance(change, Put):
                r = change.rule
                self.db.execute(
                    "INSERT INTO rules (source, grp, max_ttl, pps, bps, binding, session_id, expire_with_session,"
                    " created, updated, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, grp)"
                    " DO UPDATE SET max_ttl = excluded.max_ttl, pps = excluded.pps, bps = excluded.bps,"
                    " binding = excluded.binding, session_id = excluded.session_id,"
                    " expire_with_session = excluded.expire_with_session, updated = excluded.updated,"
                    " actor = excluded.actor",
                    (str(r.rule.source), str(r.rule.group), r.rule.max_ttl, r.rule.pps, r.rule.bps,
                     binding_text(r.rule.binding), r.session_id, int(r.expire_with_session), r.created, r.updated,
                     r.actor))
            elif isinstance(change, Delete):
                self.db.execute("DELETE FROM rules WHERE source = ? AND grp = ?",
                                (str(change.key.source), str(change.key.group)))
            else:  # pragma: no cover - a bug
                raise TypeError(f"not a change: {change!r}")

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
                            " value = excluded.value", (key, value))

    def save_session(self, row: SessionRow) -> None:
        self.db.execute(
            "INSERT INTO sessions (id, name, origin, announcer, packet, first_heard, last_heard, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " origin = excluded.origin, announcer = excluded.announcer, packet = excluded.packet,"
            " last_heard = excluded.last_heard, expires = excluded.expires",
            (row.id, row.name, row.origin, row.announcer, row.packet, row.first_heard, row.last_heard,
             row.expires))

    def delete_session(self, session_id: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def save_authorization(self, auth: Authorization) -> None:
        self.db.execute(
            "INSERT INTO authorizations (session_id, senders, max_ttl, expire_with_session, follow, actor, created,"
            " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
            " senders = excluded.senders, max_ttl = excluded.max_ttl,"
            " expire_with_session = excluded.expire_with_session, follow = excluded.follow,"
            " actor = excluded.actor, updated = excluded.updated",
            (auth.session_id, json.dumps(list(auth.senders)), auth.max_ttl, int(auth.expire_with_session),
             int(auth.follow), auth.actor, auth.created, auth.updated))

    def delete_authorization(self, session_id: str) -> None:
        self.db.execute("DELETE FROM authorizations WHERE session_id = ?", (session_id,))

    def put_receiver(self, desired: DesiredReceiver) -> None:
        """Store a receiver rule (a rule is its own key: storing it again keeps its first row)."""
        r = desired.rule
        self.db.execute(
            "INSERT INTO receivers (receiver, grp, source, iface, created, actor) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (receiver, grp, source, iface) DO NOTHING", (*receiver_columns(r), desired.created,
                                                                        desired.actor))

    def delete_receiver(self, rule: ReceiverRule) -> None:
        self.db.execute("DELETE FROM receivers WHERE receiver = ? AND grp = ? AND source = ? AND iface = ?",
                        receiver_columns(rule))

    def put_receiver_policy(self, desired: DesiredPolicy) -> None:
        """Store the policy of an interface on one router (router '' = every router that has the interface)."""
        p = desired.policy
        self.db.execute(
            "INSERT INTO receiver_policies (router, iface, mode, group_limit, updated, actor) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (router, iface) DO UPDATE SET mode = excluded.mode, group_limit = excluded.group_limit,"
            " updated = excluded.updated, actor = excluded.actor",
            (desired.router, p.iface, str(p.mode), p.limit, desired.updated, desired.actor))


class Store:
    """The mediator's database, SQLite or PostgreSQL (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str] | None, db: Engine, lock_fd: int = -1) -> None:
        self.path = None if path is None else Path(path)  # SQLite's file; None on PostgreSQL
        self.db = db
        self._lock_fd = lock_fd
        self.commits = 0
        self.fencing = False  # on: every write transaction first checks the lease (see `fence`)
        self._holder: str | None = None
        self._term: int | None = None

    @property
    def kind(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.db.kind

    @property
    def conninfo(self) -> str | None:
        """PostgreSQL: libpq's connection string, password included, for other connections of this process
        (never to be shown; `describe()` is for that). SQLite: None."""
        return self.db.conninfo

    def describe(self) -> str:
        """Where the database is, for messages: the file, or the URL without password."""
        return self.db.describe()

    def fence(self, holder: str | None, term: int | None, *, lease: float | None = None) -> None:
        """The lease this process believes it holds (leader row `holder`, `term`); None: none.

        While `fencing` is on, every write transaction on PostgreSQL first locks the leader row
        `FOR SHARE` where it still names this holder and term with an unexpired lease: a new leader
        cannot take the lease over while one of our writes is under way, and a write after the
        lease was lost raises NotLeader and rolls back. SQLite (one process per file) ignores it.

        That lock must not outlive the lease: a leader frozen inside a write transaction (its
        network cut, its process stopped) would hold it, and every standby's election would wait
        behind it, for as long as the server believes the session alive. So a `lease` has the
        server end this session once it is idle inside a transaction for that long: a standby then
        leads within the bound the lease sets (docs/operations.md, "Running a pair of mediators").
        """
        self._holder, self._term = holder, term
        self.db.limit_idle_transactions(lease if holder is not None else None)

    # -- opening ------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, now: float) -> Store:
        """Open (or create) the database at `path`; raise StoreError if it cannot be used."""
        path = Path(path)
        if not path.parent.is_dir():
            raise StoreError(f"the directory of database {path} does not exist")
        lock_fd = cls._lock(path)
        try:
            db = SqliteEngine(path, cls._connect(path))
            try:
                cls._check_and_init(path, db, now)
            except BaseException:
                db.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, db, lock_fd)

    @staticmethod
    def _lock(path: Path) -> int:
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"database {path} is in use by another mauthserver (lock {lock_path} is held)") from None
        return fd

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create database {path}: {exc.strerror}") from None
        except OSError as exc:
            raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
        else:
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"database {path} is not a regular file")
            if st.st_size:
                try:
                    with open(path, "rb") as f:
                        head = f.read(len(_SQLITE_MAGIC))
                except OSError as exc:
                    raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
                if head != _SQLITE_MAGIC:
                    raise StoreError(f"{path} is not a SQLite database; refusing to start (move it away or give"
                                     " another --db)")
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        return db

    @staticmethod
    def _check_and_init(path: Path, db: SqliteEngine, now: float) -> None:
        try:
            check = db.execute("PRAGMA quick_check(1)").fetchall()
            if check != [("ok",)]:
                first = " ".join(str(check[0][0]).replace("*", "").split())[:160] if check else "no answer"
                raise StoreError(f"database {path} is corrupt ({first}); restore it from a backup or move it away")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            if not tables:
                if app_id not in (0, APPLICATION_ID):
                    raise StoreError(f"database {path} belongs to another application (application_id {app_id:#x})")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                seed(db, now)
                db.execute("COMMIT")
            else:
                if app_id != APPLICATION_ID or "meta" not in tables:
                    raise StoreError(f"database {path} is not a mauthserver database; refusing to start")
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = check_version(str(path), row[0] if row else None)
                if version < SCHEMA_VERSION:
                    db.execute("BEGIN IMMEDIATE")
                    for v in range(version, SCHEMA_VERSION):
                        for statement in _UPGRADES[v]:
                            db.execute(statement)
                    record_upgrade(db, version, now)
                    db.execute("COMMIT")
                    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = set(TABLES) - tables
                if missing:
                    raise StoreError(f"database {path} lacks table(s) {', '.join(sorted(missing))};"
                                     " refusing to start")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"database {path} cannot use a write-ahead log (journal mode {mode})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database {path} cannot be used: {exc}") from None

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # -- writing --------------------------------------------------------------

    @contextmanager
    def transaction(self, now: float) -> Iterator[Tx]:
        """One durable transaction: committed (and fsynced) when the block ends without error.

        With `fencing` on, it first checks this process still holds the lease (see `fence`); if not,
        NotLeader, and nothing is written."""
        with self.db.writing():
            if self.fencing and self.db.fences:
                self._check_lease()
            yield Tx(self.db, now)
        self.commits += 1

    def _check_lease(self) -> None:
        if self._holder is None or self._term is None:
            raise NotLeader("this mauthserver is not the leader (it holds no term)")
        if not self.db.holds_lease(self._holder, self._term):
            raise NotLeader(f"this mauthserver is not the leader (term {self._term} lost)")

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL: `pg_notify(channel, payload)`, committed at once (in a transaction of its own unless
        one is open). SQLite: nothing (no other process shares the file)."""
        self.db.notify(channel, payload)

    def commit(self, changes: list[Change], *, actor: str, action: str, detail: Mapping[str, Any],
               now: float) -> int:
        """Apply `changes` to the desired rules with their audit row; return the audit id."""
        with self.transaction(now) as tx:
            tx.apply(changes)
            return tx.audit(actor, action, detail)

    # -- meta -----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def fleet_state_id(self) -> int:
        return int(self.meta("fleet_state_id") or "1", 16)

    def desired_mode(self) -> Mode | None:
        value = self.meta("mode")
        return None if value is None else Mode[value.upper()]

    # -- routers --------------------------------------------------------------

    def sync_routers(self, routers: Iterable[tuple[str, str, int]], *, now: float) -> dict[str, list[str]]:
        """Make the routers table match the configuration; report what changed (and audit it)."""
        want = {name: (host, port) for name, host, port in routers}
        have = {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT name, host, port FROM routers")}
        added = sorted(n for n in want if n not in have)
        removed = sorted(n for n in have if n not in want)
        moved = sorted(n for n in want if n in have and have[n] != want[n])
        if not (added or removed or moved):
            return {"added": [], "removed": [], "moved": []}
        with self.transaction(now) as tx:
            for name in removed:
                tx.db.execute("DELETE FROM routers WHERE name = ?", (name,))
            for name in moved:  # another address: what we knew about the old one is void
                tx.db.execute("DELETE FROM applied WHERE router = ?", (name,))
                tx.db.execute("UPDATE routers SET host = ?, port = ?, epoch = NULL, state_id = NULL, mode = NULL,"
                              " rule_count = NULL, last_contact = NULL, last_error = NULL WHERE name = ?",
                              (*want[name], name))
            for name in added:
                tx.db.execute("INSERT INTO routers (name, host, port, added) VALUES (?, ?, ?, ?)",
                              (name, *want[name], now))
            tx.audit("mauthserver", "configure-routers",
                     {"added": {n: f"{want[n][0]}:{want[n][1]}" for n in added}, "removed": removed,
                      "moved": {n: f"{want[n][0]}:{want[n][1]}" for n in moved}})
        return {"added": added, "removed": removed, "moved": moved}

    def routers(self) -> dict[str, RouterRow]:
        out = {}
        for r in self.db.execute("SELECT name, host, port, epoch, state_id, mode, rule_count, last_contact,"
                                 " last_error FROM routers ORDER BY name"):
            out[r[0]] = RouterRow(r[0], r[1], r[2], _unhex(r[3]), _unhex(r[4]), r[5], r[6], r[7], r[8])
        return out

    def save_router(self, name: str, *, epoch: int | None, state_id: int | None, mode: str | None,
                    rule_count: int | None, last_contact: float | None, last_error: str | None,
                    applied_put: Mapping[RuleKey, Held] = {}, applied_del: Iterable[RuleKey] = (),
                    applied_all: Mapping[RuleKey, Held] | None = None, now: float) -> None:
        """Record what we know about router `name`, and its applied rules, in one transaction."""
        with self.transaction(now) as tx:
            tx.db.execute("UPDATE routers SET epoch = ?, state_id = ?, mode = ?, rule_count = ?, last_contact = ?,"
                          " last_error = ? WHERE name = ?",
                          (_hex(epoch), _hex(state_id), mode, rule_count, last_contact, last_error, name))
            if applied_all is not None:
                tx.db.execute("DELETE FROM applied WHERE router = ?", (name,))
                applied_put = applied_all
            tx.db.executemany(
                "INSERT INTO applied (router, source, grp, max_ttl, pps, bps, binding, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (router, source, grp) DO UPDATE SET"
                " max_ttl = excluded.max_ttl, pps = excluded.pps, bps = excluded.bps, binding = excluded.binding,"
                " at = excluded.at",
                [(name, str(k.source), str(k.group), ttl, pps, bps, binding_text(binding), now)
                 for k, (ttl, pps, bps, binding) in applied_put.items()])
            tx.db.executemany("DELETE FROM applied WHERE router = ? AND source = ? AND grp = ?",
                              [(name, str(k.source), str(k.group)) for k in applied_del])

    def applied(self) -> dict[str, dict[RuleKey, Held]]:
        """Per router, key -> (max TTL, pps, bps, binding) of the rules it was last seen or told to hold."""
        out: dict[str, dict[RuleKey, Held]] = {}
        for router, source, grp, ttl, pps, bps, binding in self.db.execute(
                "SELECT router, source, grp, max_ttl, pps, bps, binding FROM applied"):
            key = self._key(source, grp)
            out.setdefault(router, {})[key] = (ttl, pps, bps, self._binding(binding, key))
        return out

    # -- rules ------------------------------------------------------------------

    def _key(self, source: str, grp: str) -> RuleKey:
        try:
            return RuleKey.make(source, grp)
        except RuleError as exc:
            raise StoreError(f"database {self.describe()} holds an invalid rule ({exc}); refusing to start") from None

    def _binding(self, text: str, key: RuleKey) -> Binding:
        if not text:
            return UNBOUND
        try:
            binding = Binding.from_json(json.loads(text))
            binding.check_for(key)
        except (ValueError, RuleError) as exc:  # json's errors are ValueErrors too
            raise StoreError(f"database {self.describe()} holds an invalid binding of the rule {key} ({exc});"
                             " refusing to start") from None
        return binding

    def rules(self) -> list[DesiredRule]:
        out = []
        for source, grp, ttl, pps, bps, binding, session_id, expire, created, updated, actor in self.db.execute(
                "SELECT source, grp, max_ttl, pps, bps, binding, session_id, expire_with_session, created, updated,"
                " actor FROM rules"):
            key = self._key(source, grp)
            rule = Rule(key, int(ttl), int(pps), int(bps), self._binding(binding, key))
            out.append(DesiredRule(rule, session_id, bool(expire), created, updated, actor))
        return out

    # -- sessions ------------------------------------------------------------------

    def sessions(self) -> list[SessionRow]:
        return [SessionRow(*r) for r in self.db.execute(
            "SELECT id, name, origin, announcer, packet, first_heard, last_heard, expires FROM sessions"
            " ORDER BY last_heard, id")]

    def touch_sessions(self, heard: Iterable[tuple[str, float, float]], *, now: float) -> None:
        """Record when sessions were last heard (id, last_heard, expires), in one transaction."""
        rows = [(last, expires, sid) for sid, last, expires in heard]
        if rows:
            with self.transaction(now) as tx:
                tx.db.executemany("UPDATE sessions SET last_heard = ?, expires = ? WHERE id = ?", rows)

    # -- authorizations -------------------------------------------------------------

    def authorizations(self) -> list[Authorization]:
        """What each session was authorized with (see core.Authorization)."""
        out = []
        for sid, senders, max_ttl, expire, follow, actor, created, updated in self.db.execute(
                "SELECT session_id, senders, max_ttl, expire_with_session, follow, actor, created, updated"
                " FROM authorizations ORDER BY session_id"):
            try:
                given = json.loads(senders)
                if not isinstance(given, list) or not all(isinstance(a, str) for a in given):
                    raise ValueError("not a list of addresses")
            except ValueError as exc:
                raise StoreError(f"database {self.path} holds an invalid authorization of session {sid} ({exc});"
                                 " refusing to start") from None
            out.append(Authorization(sid, tuple(given), None if max_ttl is None else int(max_ttl), bool(expire),
                                     bool(follow), actor, created, updated))
        return out

    # -- receivers ------------------------------------------------------------------

    def receivers(self) -> list[DesiredReceiver]:
        """The desired receiver rules, in rule order."""
        out = []
        for receiver, grp, source, iface, created, actor in self.db.execute(
                "SELECT receiver, grp, source, iface, created, actor FROM receivers"):
            try:
                rule = ReceiverRule.make(receiver, grp, source or None, iface or None)
            except RuleError as exc:
                raise StoreError(f"database {self.describe()} holds an invalid receiver rule ({exc}); refusing to"
                                 " start") from None
            out.append(DesiredReceiver(rule, created, actor))
        return sorted(out, key=lambda d: d.rule)

    def receiver_policies(self) -> list[DesiredPolicy]:
        """The desired interface policies, by router ('' first) and interface."""
        out = []
        for router, iface, mode, limit, updated, actor in self.db.execute(
                "SELECT router, iface, mode, group_limit, updated, actor FROM receiver_policies"
                " ORDER BY router, iface"):
            try:
                policy = IfacePolicy.make(iface, mode, int(limit))
            except RuleError as exc:
                raise StoreError(f"database {self.describe()} holds an invalid interface policy ({exc}); refusing"
                                 " to start") from None
            out.append(DesiredPolicy(router, policy, updated, actor))
        return out

    # -- audit -------------------------------------------------------------------

    def audit_log(self, *, limit: int = 100, before: int | None = None, actor: str | None = None,
                  actions: Iterable[str] = (), since: float | None = None, until: float | None = None,
                  session: str | None = None) -> list[dict[str, Any]]:
        """Audit rows, newest first, that pass every filter given.

        Strategy: one plain SQL statement with `?` placeholders, which SQLite and PostgreSQL both run
        the same way: rows are walked backwards on the primary key (`ORDER BY id DESC`, the id order is
        the time order) and the walk stops after `limit` matches, so no index beyond the key is needed.

        * `before`: only ids below it (the paging cursor: the last id of the previous page).
        * `actor`: a case-insensitive substring of the actor ("alice" finds "alice (api 127.0.0.1)").
        * `actions`: the action is exactly one of these.
        * `since` (inclusive) / `until` (exclusive): Unix seconds.
        * `session`: the detail mentions this session id as a JSON string value, matched with `LIKE` on
          the stored JSON text (no engine-specific JSON functions); ids are lower-case hex, so the text
          and the id are compared in lower case, which both engines do alike.
        """
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if actor is not None:
            where.append("lower(actor) LIKE ? ESCAPE '\\'")
            args.append(f"%{_like_escape(actor.lower())}%")
        actions = list(actions)
        if actions:
            where.append(f"action IN ({', '.join('?' * len(actions))})")
            args.extend(actions)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        if session is not None:
            where.append("lower(detail) LIKE ? ESCAPE '\\'")
            args.append(f"%{_like_escape(json.dumps(session.lower()))}%")
        query = "SELECT id, at, actor, action, detail FROM audit"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        rows = self.db.execute(query, (*args, limit)).fetchall()
        return [{"id": i, "at": at, "actor": who, "action": action, "detail": json.loads(detail)}
                for i, at, who, action, detail in rows]

    def prune_audit(self, *, now: float, max_age: float | None, max_rows: int | None,
                    batch: int = PRUNE_BATCH) -> PruneResult:
        """Delete the oldest audit rows beyond the retention bounds, at most `batch` of them, in one transaction.

        Strategy: the audit log is append-only and its id order is its time order, so whatever either
        bound expires is always a prefix of the table by id. One pass reads the `batch` oldest rows on
        the primary key (no scan of the table, no index on `at`) and counts the table, then deletes the
        longest prefix either bound asks for:

        * `max_age` (seconds): rows older than `now - max_age`, from the oldest up to the first row that
          is not (a row written while the clock was set back waits for the rows before it);
        * `max_rows`: enough of the oldest rows that the table, with the `audit-pruned` row this pass
          writes, holds at most `max_rows`.

        None (or 0) leaves a bound off. Only audit rows are deleted, only with `id <=` the last id of that
        prefix, read in this same transaction. A pass that deletes something writes one `audit-pruned` row
        (actor mauthserver) in the same transaction: how many rows it removed, the oldest id and time kept
        (null when it removed every earlier row) and which bound asked for the most ("age" or "rows").
        `more` says the batch bound cut the pass short: the caller runs another pass soon, so a large
        backlog is worked off in short transactions that never hold the event loop long.
        """
        with self.transaction(now) as tx:
            count = int(tx.db.execute("SELECT count(*) FROM audit").fetchone()[0])
            oldest = tx.db.execute("SELECT id, at FROM audit ORDER BY id LIMIT ?", (batch,)).fetchall()
            by_age = 0
            if max_age:
                cutoff = now - max_age
                while by_age < len(oldest) and oldest[by_age][1] < cutoff:
                    by_age += 1
            by_rows = count - max_rows + 1 if max_rows and count > max_rows else 0
            wanted = max(by_age, by_rows)
            removed = min(wanted, len(oldest))
            if not removed:
                return PruneResult(0, None, False, count)
            more = by_rows > removed or by_age == len(oldest) == batch
            tx.db.execute("DELETE FROM audit WHERE id <= ?", (oldest[removed - 1][0],))
            kept = tx.db.execute("SELECT id, at FROM audit ORDER BY id LIMIT 1").fetchone()
            by = "age" if by_age >= by_rows else "rows"
            tx.audit("mauthserver", "audit-pruned",
                     {"removed": removed, "by": by, "oldest_kept_id": kept[0] if kept else None,
                      "oldest_kept_at": kept[1] if kept else None})
            return PruneResult(removed, by, more, count - removed + 1)

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("rules", "applied", "sessions", "authorizations", "receivers", "receiver_policies", "audit",
                      "routers"):
            out[table] = self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return out
