"""The election of mauthserver/leader.py on a real PostgreSQL server (tests/support/postgres.py).

Two `Leadership` loops on one database, as two mauthservers would run them:
one leads; the other takes over when the first releases its lease, dies
without releasing it, or is cut from the database (its connection frozen by
tests/support/frozen_proxy.py); the old leader's local deadline always
passes before the new leader is elected, and the store refuses writes of a
stale term.
"""

from __future__ import annotations

import threading
import time

import pytest

from mauthserver.leader import Leadership
from mauthserver.store import NotLeader, StoreError, open_store
from tests.support.frozen_proxy import FrozenProxy, listening
from tests.support.postgres import running
from tests.support.waiting import wait_until

LEASE = 1.5


@pytest.fixture(scope="module")
def server():
    with running() as pg:
        yield pg


@pytest.fixture
def db(server):
    name = server.new_database()
    store = open_store(server.url(name), now=time.time())  # creates the schema, with the leader row
    try:
        yield name, store
    finally:
        store.close()
        server.drop_database(name)


class Watched(Leadership):
    """A Leadership that records when it was elected and lost (monotonic)."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.elected: list[tuple[int, float]] = []
        self.lost_at: list[float] = []
        super().__init__(conninfo, name, f"http://{name}:7580", lease=LEASE,
                         on_elected=lambda term: self.elected.append((term, time.monotonic())),
                         on_lost=lambda why: self.lost_at.append(time.monotonic()))


def _pair(store, server, name):
    a = Watched(store.conninfo, "a")
    a.start()
    wait_until(lambda: a.elected, 10, "a elected")
    b = Watched(store.conninfo, "b")
    b.start()
    wait_until(lambda: b.current is not None, 10, "b to read the leader row")
    return a, b


def test_one_leads_and_the_other_knows_whom(db, server):
    name, store = db
    a, b = _pair(store, server, name)
    try:
        time.sleep(LEASE * 2)  # several renewals: the lease is kept, b stays a standby
        assert a.may_write() and not b.may_write()
        assert a.counters["renewals"] >= 3
        assert b.leader_api() == "http://a:7580" and b.current.term == 1
    finally:
        a.stop()
        b.stop()


def test_release_hands_over_at_once(db, server):
    name, store = db
    a, b = _pair(store, server, name)
    try:
        a.stop(release=True)
        released = time.monotonic()
        wait_until(lambda: b.elected, 10, "b elected")
        assert b.elected[0][0] == 2
        assert b.elected[0][1] - released <= b.interval + 0.5  # its next attempt, not a whole lease
    finally:
        b.stop()


def test_a_dead_leader_is_replaced_after_its_lease_and_never_overlaps(db, server):
    name, store = db
    a, b = _pair(store, server, name)
    try:
        a._stop.set()  # the thread stops renewing, as a killed process would; nothing is released
        a._thread.join()
        deadline = a.deadline
        wait_until(lambda: b.elected, 10, "b elected")
        elected = b.elected[0][1]
        assert elected >= deadline, "the new leader was elected before the old one's deadline"
        assert elected - deadline <= a.margin + b.interval + 0.5
        assert not a.may_write()
    finally:
        b.stop()


def test_a_leader_cut_from_the_database_stops_before_the_next_one_starts(db, server):
    name, store = db
    proxy = FrozenProxy(listening(), str(server.dir / ".s.PGSQL.5432"))
    proxy.start()
    a = Watched(f"host=127.0.0.1 port={proxy.port} dbname={name} user=postgres", "a")
    a.start()
    try:
        wait_until(lambda: a.elected, 10, "a elected")
        b = Watched(store.conninfo, "b")
        b.start()
        wait_until(lambda: b.current is not None, 10, "b to read the leader row")
        proxy.freeze()
        wait_until(lambda: b.elected, 15, "b elected")
        assert not a.may_write()
        assert b.elected[0][1] >= a.deadline
        wait_until(lambda: a.lost_at, 15, "a to notice it lost")
        b.stop()
    finally:
        proxy.stop()
        a.stop(release=False)


def test_the_store_refuses_a_stale_term(db, server):
    name, store = db
    a, b = _pair(store, server, name)
    try:
        store.fencing = True
        store.fence(a.holder, a.term)
        with store.transaction(time.time()) as tx:
            tx.set_meta("probe", "1")  # the current term commits
        a._stop.set()
        a._thread.join()
        wait_until(lambda: b.elected, 10, "b elected")
        with pytest.raises(NotLeader):
            with store.transaction(time.time()) as tx:
                tx.set_meta("probe", "2")
        assert store.meta("probe") == "1"
        store.fence(b.holder, b.term)
        with store.transaction(time.time()) as tx:
            tx.set_meta("probe", "3")
        assert store.meta("probe") == "3"
    finally:
        store.fencing = False
        b.stop()


def test_a_leader_frozen_inside_a_write_transaction_does_not_hold_the_lease_row_past_its_lease(db, server):
    """The fencing check's share lock on the leader row is held to COMMIT: a leader stopped in between
    would keep every standby waiting for as long as the server believes its session alive, unless the
    server ends a session that idles inside a transaction longer than the lease (Store.fence)."""
    name, store = db
    a, b = _pair(store, server, name)
    try:
        store.fencing = True
        store.fence(a.holder, a.term, lease=LEASE)
        open_tx = store.transaction(time.time())
        tx = open_tx.__enter__()  # the check has locked the leader row FOR SHARE
        tx.set_meta("probe", "1")
        a._stop.set()  # and the leader freezes: no renewal, no COMMIT
        a._thread.join()
        wait_until(lambda: b.elected, 10, "b elected while a's transaction is left open")
        assert b.elected[0][1] - a.deadline <= LEASE + a.margin + b.interval + 0.5
        with pytest.raises(StoreError):  # the server ended a's session: nothing of it commits
            open_tx.__exit__(None, None, None)
        assert store.meta("probe") is None
    finally:
        store.fencing = False
        b.stop()


def test_only_one_of_many_contenders_leads(db, server):
    name, store = db
    many = [Watched(store.conninfo, f"c{i}") for i in range(5)]
    barrier = threading.Barrier(len(many))
    for c in many:
        threading.Thread(target=lambda c=c: (barrier.wait(), c.start()), daemon=True).start()
    try:
        wait_until(lambda: any(c.elected for c in many), 10, "someone elected")
        time.sleep(LEASE)
        assert sum(1 for c in many if c.may_write()) == 1
        assert [t for c in many for t, _ in c.elected] == [1]
    finally:
        for c in many:
            c.stop()
