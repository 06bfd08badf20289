"""Which of several mauthservers sharing one PostgreSQL database leads: a lease row with a term.

Only the leader talks to routers, runs the reconcilers and writes; the others
are standbys (mauthserver/daemon.py). The election is one row of the table
`leader` (created with the schema, mauthserver/store.py):

    leader (id = 1, holder, term, api, expires, since)

* **Acquire** (a standby, every `lease / 3` seconds): one UPDATE that
  succeeds only if the lease has expired by the database's clock; it
  increments `term` and writes this instance's holder id and API URL.
* **Renew** (the leader, every `lease / 3` seconds): one UPDATE that
  succeeds only if the row still names this holder and term and has not
  expired; it pushes `expires` to `now() + lease`.
* **Release** (clean stop): `expires = now()`, so a standby takes over at
  its next attempt instead of after a whole lease.

Why a lease row rather than an advisory lock: a session-level advisory lock
is released when the *server* notices that the leader's connection is dead,
which after a network cut is whenever TCP gives up (minutes with default
keepalives), and the leader cannot know when that happens; so it cannot
stop before a successor starts. A lease ends at a time both sides can
compute. The leader keeps a **local deadline** on its monotonic clock: the
moment it *sent* the last successful renewal, plus the lease, minus a margin
for the clocks' rates. The database set `expires` from its `now()`, taken
after that sending, so the database's expiry always falls after the
leader's deadline: once the deadline passes the leader sends nothing more
to any router (`may_write()` is checked before every datagram of the
fan-out, mauthserver/fanout.py) and stops, and only later can a standby's
acquire succeed. That is the fencing, and it holds whatever the leader's
connection does: a renewal stuck on a cut network simply never moves the
deadline.

The **term** is a fencing token too: every write transaction of the leader
checks, in the database and in the same transaction, that the row still
names its holder and term and has not expired (`Store.fence`), so a leader
that was paused past its deadline (SIGSTOP, a long GC, a suspended VM)
cannot commit anything when it wakes up.

The election runs on a thread of its own with its own connection; a second
thread declares the lease lost at its deadline even while the first is stuck
in a query (a frozen network keeps TCP quiet, so no timeout fires).

Bounds (defaults, `--lease 3`): a dead leader's lease runs out at most 3 s
after its last renewal; a standby tries every 1 s, so it leads at most
about 4 s after the leader's last renewal, then re-reads the desired state
and reconciles every router. The threads here do only database work; the
daemon is told of changes through the callbacks, which it runs on its event
loop.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mauthserver.leader")

DEFAULT_LEASE = 3.0
MIN_LEASE = 1.0
MAX_LEASE = 60.0

_ACQUIRE = ("UPDATE leader SET holder = %(holder)s, term = term + 1, api = %(api)s, since = now(),"
            " expires = now() + make_interval(secs => %(lease)s)"
            " WHERE id = 1 AND expires < now() RETURNING term")
_RENEW = ("UPDATE leader SET expires = now() + make_interval(secs => %(lease)s)"
          " WHERE id = 1 AND holder = %(holder)s AND term = %(term)s AND expires > now() RETURNING term")
_RELEASE = "UPDATE leader SET expires = now() WHERE id = 1 AND holder = %(holder)s AND term = %(term)s"
_READ = ("SELECT holder, term, api, expires > now(), extract(epoch FROM since)::float8 FROM leader WHERE id = 1")


class Fenced(Exception):
    """This mauthserver's lease ran out: it must not send to any router again."""


@dataclass(frozen=True)
class LeaderInfo:
    """The leader row as last read: who holds (or last held) the lease, and whether it is still valid."""

    holder: str | None
    term: int
    api: str | None
    valid: bool
    since: float | None

    def to_dict(self) -> dict:
        return {"holder": self.holder, "term": self.term, "api": self.api, "valid": self.valid,
                "since": self.since}


def holder_id(name: str | None = None) -> str:
    """This process's holder id: the instance name (default the host name), the pid and a random tag,
    so a restarted instance is never taken for its previous life."""
    return f"{name or socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class Leadership:
    """The election loop of one instance, on a thread with its own database connection."""

    def __init__(self, conninfo: str, holder: str, api: str | None, *, lease: float = DEFAULT_LEASE,
                 on_elected: Callable[[int], object] = lambda term: None,
                 on_lost: Callable[[str], object] = lambda reason: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        if not MIN_LEASE <= lease <= MAX_LEASE:
            raise ValueError(f"the lease must be between {MIN_LEASE:g} and {MAX_LEASE:g} seconds")
        self.conninfo = conninfo
        self.holder = holder
        self.api = api
        self.lease = lease
        self.interval = lease / 3
        self.margin = max(0.25, lease / 10)
        self.on_elected, self.on_lost = on_elected, on_lost
        self.clock, self.wall = clock, wall
        self.term = 0
        self.leading = False
        self.lost = False
        self.deadline = 0.0  # monotonic: no datagram to a router at or after it
        self.current: LeaderInfo | None = None
        self.elected_at: float | None = None  # Unix time this instance last became leader
        self.counters = {"elections": 0, "renewals": 0, "renewal_failures": 0, "losses": 0, "db_errors": 0}
        self._stop = threading.Event()
        self._losing = threading.Lock()
        self._tried = threading.Event()  # set after the first attempt, whatever it found
        self._thread: threading.Thread | None = None

    # -- what the daemon asks ----------------------------------------------------

    def may_write(self) -> bool:
        """True while this instance leads and its lease is certainly still valid."""
        return self.leading and not self.lost and self.clock() < self.deadline

    def check(self) -> None:
        """Raise Fenced unless `may_write()`."""
        if not self.may_write():
            raise Fenced(f"this mauthserver's lease (term {self.term}) ran out; it sends nothing more to routers")

    def leader_api(self) -> str | None:
        """The API URL of the valid leader, as last read (None: no valid lease known)."""
        if self.may_write():
            return self.api
        cur = self.current
        return cur.api if cur is not None and cur.valid and cur.holder != self.holder else None

    # -- the thread ----------------------------------------------------------------

    def start(self, wait: float | None = None) -> None:
        """Start the threads; with `wait`, return after the first attempt (at most `wait` seconds), so that
        a standby knows whom to forward to before it serves."""
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="lease-deadline", daemon=True).start()
        if wait is not None:
            self._tried.wait(wait)

    def _watch(self) -> None:
        """Declare the lease lost at its deadline, even while the election thread is stuck in a query
        (a frozen network or server: the kernel keeps acknowledging, so no timeout fires)."""
        while not self._stop.is_set() and not self.lost:
            if self.leading and self.clock() >= self.deadline:
                self._lose(f"the lease of term {self.term} was not renewed before its deadline")
                return
            wait = self.interval if not self.leading else max(0.01, self.deadline - self.clock())
            self._stop.wait(min(wait, self.interval))

    def stop(self, release: bool = True) -> None:
        """Stop the thread; a leader releases its lease so that a standby takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease + 5)
        if release and self.leading and not self.lost:
            self.leading = False
            try:
                with self._connect() as conn:
                    conn.execute(_RELEASE, {"holder": self.holder, "term": self.term})
                log.info("leadership: released the lease of term %d", self.term)
            except Exception as exc:  # the lease then runs out by itself
                log.warning("leadership: could not release the lease of term %d (%s); it expires within %g s",
                            self.term, _reason(exc), self.lease)
        self.leading = False

    def _connect(self):
        import psycopg

        timeout = max(1, int(self.lease))
        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=timeout,
                               application_name="mauthserver-leadership", keepalives=1, keepalives_idle=1,
                               keepalives_interval=1, keepalives_count=max(1, int(self.lease)),
                               tcp_user_timeout=int(self.lease * 1000))

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set() and not self.lost:
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                if self.leading:
                    self._renew(conn)
                else:
                    self._acquire(conn)
            except Exception as exc:  # psycopg.Error and OSError: the database is unreachable
                self.counters["db_errors"] += 1
                if self.leading:
                    self.counters["renewal_failures"] += 1
                log.warning("leadership: database error (%s)%s", _reason(exc),
                            f"; the lease of term {self.term} holds for {max(0.0, self.deadline - self.clock()):.1f}"
                            " s more" if self.leading else "")
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
            self._tried.set()
            if self.leading and self.clock() >= self.deadline:
                self._lose(f"the lease of term {self.term} was not renewed in time")
                break
            wait = self.interval
            if self.leading:
                wait = min(wait, max(0.0, self.deadline - self.clock()))
            self._stop.wait(wait)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _acquire(self, conn) -> None:
        sent = self.clock()
        row = conn.execute(_ACQUIRE, {"holder": self.holder, "api": self.api, "lease": self.lease}).fetchone()
        if row is None:
            holder, term, api, valid, since = conn.execute(_READ).fetchone()
            info = LeaderInfo(holder, int(term), api, bool(valid), since)
            if info != self.current:
                log.info("leadership: standby; %s", f"leader is {holder} (term {term}, API {api})" if valid
                         else f"the lease of {holder} (term {term}) ran out; trying again")
            self.current = info
            return
        self.term = int(row[0])
        self.deadline = sent + self.lease - self.margin
        self.leading = True
        self.elected_at = self.wall()
        self.counters["elections"] += 1
        self.current = LeaderInfo(self.holder, self.term, self.api, True, self.elected_at)
        log.info("leadership: this mauthserver leads, term %d", self.term)
        self.on_elected(self.term)

    def _renew(self, conn) -> None:
        sent = self.clock()
        row = conn.execute(_RENEW, {"holder": self.holder, "term": self.term, "lease": self.lease}).fetchone()
        if row is None:
            self._lose(f"the lease of term {self.term} is no longer ours")
            return
        self.deadline = max(self.deadline, sent + self.lease - self.margin)
        self.counters["renewals"] += 1

    def _lose(self, reason: str) -> None:
        with self._losing:
            if self.lost:
                return
            self.lost = True
        self.counters["losses"] += 1
        log.error("leadership lost: %s", reason)
        self.on_lost(reason)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
