"""The audit log's filters and retention: `Store.audit_log` and `Store.prune_audit` on a real SQLite file,
the API's parameter checks (`audit_filters`) and the retention options. mauthctl's side is
tests/unit/test_mauthctl_audit.py; the daemon's pruning tests/loopback/test_mauthserver_audit.py, and the
filters through HTTP and mauthctl tests/loopback/test_mauthctl_audit.py.
"""

from __future__ import annotations

import datetime

import pytest
from click.testing import CliRunner
from multidict import MultiDict

from mauthcore.rules import Rule
from mauthserver import core
from mauthserver.api import audit_filters
from mauthserver.cli import main as mauthserver
from mauthserver.config import ConfigError, Options, parse_audit_max_age, parse_audit_max_rows
from mauthserver.core import DesiredRule, Put
from mauthserver.store import SessionRow, Store

DAY = 86400.0
T0 = 1_700_000_000.0  # the database's creation
SID = "3fa2c1d09b7e4f55"


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "m.db", now=T0)
    yield s
    s.close()


def add(store: Store, at: float, actor: str = "alice (api 127.0.0.1)", action: str = "add-sender",
        detail: dict | None = None) -> int:
    with store.transaction(at) as tx:
        return tx.audit(actor, action, detail if detail is not None else {"n": at})


def ids(rows) -> list[int]:
    return [r["id"] for r in rows]


def everything_but_audit(store: Store) -> dict:
    """Every other table's rows: what pruning must never touch."""
    return {t: store.db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("meta", "routers", "rules", "applied", "sessions")}


# =============================================================================
# filters
# =============================================================================


@pytest.fixture
def log(store):
    """create-db (id 1) and seven rows an hour apart: who, what, which session."""
    rows = [
        ("alice (api 127.0.0.1)", "add-sender", {"source": "192.0.2.10", "group": "239.1.1.1"}),
        ("bob (api 10.0.0.2)", "authorize", {"session": SID, "name": "Lobby", "rules": []}),
        ("udp-v2 192.0.2.5:4711", "del-sender", {"source": "192.0.2.10", "group": "239.1.1.1"}),
        ("mauthserver", "session-ended", {"session": SID, "reason": "deleted", "rules": []}),
        ("ALICE (api ::1)", "revoke", {"session": SID + "0", "rules": []}),  # a longer id: not SID
        ("a_b% (api 127.0.0.1)", "mode", {"mode": "monitor"}),
        ("bob (api 10.0.0.2)", "flush", {"removed": 0, "name": SID.upper()}),
    ]
    for i, (actor, action, detail) in enumerate(rows):
        add(store, T0 + 3600 * (i + 1), actor, action, detail)
    return store


def test_no_filter_is_every_row_newest_first_and_before_pages(log):
    assert ids(log.audit_log()) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert ids(log.audit_log(limit=3)) == [8, 7, 6]
    assert ids(log.audit_log(limit=3, before=6)) == [5, 4, 3]
    assert ids(log.audit_log(limit=3, before=3)) == [2, 1]
    assert log.audit_log(before=1) == []


def test_actor_is_a_case_insensitive_substring_with_like_wildcards_literal(log):
    assert ids(log.audit_log(actor="alice")) == [6, 2]
    assert ids(log.audit_log(actor="10.0.0.2")) == [8, 3]
    assert ids(log.audit_log(actor="udp-v2")) == [4]
    assert ids(log.audit_log(actor="a_b%")) == [7]
    assert log.audit_log(actor="a%b") == [] and log.audit_log(actor="_lice") == []


def test_actions_are_exact_and_any_of_several(log):
    assert ids(log.audit_log(actions=["add-sender"])) == [2]
    assert ids(log.audit_log(actions=["add-sender", "del-sender", "create-db"])) == [4, 2, 1]
    assert log.audit_log(actions=["add"]) == []


def test_since_is_inclusive_until_exclusive(log):
    assert ids(log.audit_log(since=T0 + 3 * 3600)) == [8, 7, 6, 5, 4]
    assert ids(log.audit_log(until=T0 + 3 * 3600)) == [3, 2, 1]
    assert ids(log.audit_log(since=T0 + 2 * 3600, until=T0 + 4 * 3600)) == [4, 3]


def test_session_matches_the_whole_id_as_a_json_value(log):
    assert ids(log.audit_log(session=SID)) == [8, 5, 3]  # the flush's name is SID in upper case: ids are hex
    assert ids(log.audit_log(session=SID.upper())) == [8, 5, 3]
    assert log.audit_log(session=SID[:8]) == []
    assert ids(log.audit_log(session=SID + "0")) == [6]


def test_filters_combine(log):
    assert ids(log.audit_log(session=SID, actor="bob", actions=["authorize", "revoke"])) == [3]
    assert ids(log.audit_log(actor="bob", since=T0 + 5 * 3600, limit=1)) == [8]
    assert log.audit_log(actor="bob", before=3) == []


# =============================================================================
# retention
# =============================================================================


def fill(store: Store, n: int, start: float, step: float = 60.0) -> None:
    with store.transaction(start) as tx:
        tx.db.executemany("INSERT INTO audit (at, actor, action, detail) VALUES (?, 'x', 'add-sender', '{}')",
                          [(start + i * step,) for i in range(n)])


def with_other_state(store: Store) -> None:
    """A rule, a router, its applied rule, a session and a meta key, all far older than any bound."""
    rule = DesiredRule(Rule.make("192.0.2.10", "239.1.1.1", 8), created=T0, updated=T0, actor="test")
    store.commit([Put(rule)], actor="test", action="add-sender", detail={}, now=T0)
    store.sync_routers([("r1", "192.0.2.1", 7575)], now=T0)
    store.save_router("r1", epoch=1, state_id=2, mode="enforce", rule_count=1, last_contact=T0, last_error=None,
                      applied_put={rule.rule.key: core.held(rule.rule)}, now=T0)
    with store.transaction(T0) as tx:
        tx.save_session(SessionRow(SID, "Lobby", "o", "198.51.100.2", b"packet", T0, T0, T0 + 3600))
        tx.set_meta("mode", "enforce")


def test_age_bound_removes_the_old_rows_and_records_itself(store):
    with_other_state(store)
    fill(store, 10, T0 + 1)  # ids 4-13 (create-db, add-sender, configure-routers first)
    before = everything_but_audit(store)
    now = T0 + 30 * DAY
    result = store.prune_audit(now=now, max_age=30 * DAY - 301, max_rows=None)  # up to 5 minutes after T0
    assert (result.removed, result.by, result.more) == (3 + 5, "age", False)
    rows = store.audit_log(limit=100)
    assert ids(rows) == [14, 13, 12, 11, 10, 9]
    pruned = rows[0]
    assert (pruned["at"], pruned["actor"], pruned["action"]) == (now, "mauthserver", "audit-pruned")
    assert pruned["detail"] == {"removed": 8, "by": "age", "oldest_kept_id": 9, "oldest_kept_at": T0 + 1 + 5 * 60}
    assert result.rows == 6 == store.counts()["audit"]
    assert everything_but_audit(store) == before
    # A second pass has nothing to do and writes nothing.
    assert store.prune_audit(now=now, max_age=30 * DAY - 301, max_rows=None).removed == 0
    assert store.counts()["audit"] == 6


def test_rows_bound_keeps_at_most_n_rows_counting_its_own(store):
    with_other_state(store)
    fill(store, 20, T0 + 1)  # 23 rows in all
    before = everything_but_audit(store)
    result = store.prune_audit(now=T0 + 2 * DAY, max_age=None, max_rows=10)
    assert (result.removed, result.by, result.rows) == (14, "rows", 10)
    assert store.counts()["audit"] == 10
    assert store.audit_log(limit=1)[0]["detail"] == {"removed": 14, "by": "rows", "oldest_kept_id": 15,
                                                     "oldest_kept_at": T0 + 1 + 11 * 60}
    assert store.prune_audit(now=T0 + 2 * DAY, max_age=None, max_rows=10).removed == 0  # at the bound: stays
    add(store, T0 + 2 * DAY)
    assert store.prune_audit(now=T0 + 2 * DAY, max_age=None, max_rows=10).removed == 2
    assert store.counts()["audit"] == 10
    assert everything_but_audit(store) == before


def test_both_bounds_the_one_asking_more_wins(store):
    fill(store, 20, T0 + 1)  # ids 2-21, a minute apart
    # Age asks for create-db and 5 rows (ids 1-6); rows (at most 15, its own record included) for 7.
    result = store.prune_audit(now=T0 + DAY, max_age=DAY - 4 * 60 - 30, max_rows=15)
    assert (result.removed, result.by) == (7, "rows")
    # Age now asks for ids 8-17 (older than 15.5 minutes after T0); rows for 1.
    result = store.prune_audit(now=T0 + DAY, max_age=DAY - 15 * 60 - 30, max_rows=15)
    assert (result.removed, result.by) == (10, "age")
    assert store.audit_log(limit=1)[0]["detail"]["oldest_kept_id"] == 18


def test_age_stops_at_the_first_row_that_is_not_old_enough(store):
    fill(store, 3, T0 + DAY)  # ids 2-4: recent
    add(store, T0 + 1)  # id 5 written with the clock set back: waits for the rows before it
    assert store.prune_audit(now=T0 + 1.5 * DAY, max_age=DAY, max_rows=None).removed == 1  # create-db only
    assert 5 in ids(store.audit_log())


def test_batch_bound_splits_a_backlog_into_passes(store):
    fill(store, 25, T0 + 1)  # 26 rows
    passes = []
    while True:
        result = store.prune_audit(now=T0 + 10 * DAY, max_age=DAY, max_rows=None, batch=10)
        if not result.removed:
            break
        passes.append((result.removed, result.more))
    # 26 old rows in passes of 10; each pass's own audit-pruned row is written "now", so it stays.
    assert passes == [(10, True), (10, True), (6, False)]
    assert [r["action"] for r in store.audit_log()] == ["audit-pruned"] * 3
    rows = store.audit_log()
    assert [r["detail"]["removed"] for r in rows] == [6, 10, 10]
    assert rows[0]["detail"]["oldest_kept_id"] == rows[2]["id"]


def test_rows_bound_backlog_with_a_batch(store):
    fill(store, 30, T0 + 1)  # 31 rows: 27 to go (room for the record), 10 a pass, each pass adding its record
    first = store.prune_audit(now=T0, max_age=None, max_rows=5, batch=10)
    assert (first.removed, first.more, first.rows) == (10, True, 22)
    second = store.prune_audit(now=T0, max_age=None, max_rows=5, batch=10)
    third = store.prune_audit(now=T0, max_age=None, max_rows=5, batch=10)
    assert (second.removed, second.more, third.removed, third.more, third.rows) == (10, True, 9, False, 5)


def test_unbounded_removes_nothing(store):
    fill(store, 50, T0 - 1000 * DAY)
    for max_age, max_rows in ((None, None), (0, 0)):
        assert store.prune_audit(now=T0, max_age=max_age, max_rows=max_rows).removed == 0
    assert store.counts()["audit"] == 51


def test_removing_every_earlier_row_keeps_nothing_but_the_record(store):
    result = store.prune_audit(now=T0 + 10 * DAY, max_age=DAY, max_rows=None)
    assert result.removed == 1 and result.rows == 1
    assert store.audit_log()[0]["detail"] == {"removed": 1, "by": "age", "oldest_kept_id": None,
                                              "oldest_kept_at": None}


# =============================================================================
# the API's parameters
# =============================================================================


def q(**kw) -> MultiDict:
    out: MultiDict = MultiDict()
    for k, v in kw.items():
        for item in v if isinstance(v, list) else [v]:
            out.add(k, item)
    return out


def test_api_parameters_become_store_arguments():
    assert audit_filters(q()) == {"limit": 100, "actions": []}
    got = audit_filters(q(limit="5", before="99", actor="alice", action=["add-sender,del-sender", "flush"],
                          since="1700000000", until="2023-11-15T00:00:00Z", session=SID))
    assert got == {"limit": 5, "before": 99, "actor": "alice", "actions": ["add-sender", "del-sender", "flush"],
                   "since": 1_700_000_000.0, "until": 1_700_006_400.0, "session": SID}
    naive = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC).timestamp()
    assert audit_filters(q(since="2026-12-07"))["since"] == naive  # no offset: UTC
    assert audit_filters(q(since="2026-12-07T01:00+01:00"))["since"] == naive


@pytest.mark.parametrize(("params", "needle"), [
    ({"limit": "0"}, "limit must be 1-10000"),
    ({"limit": "10001"}, "limit must be 1-10000"),
    ({"limit": "ten"}, "'ten' is not a positive integer"),
    ({"before": "-1"}, "before '-1' is not a positive integer"),
    ({"limit": ["1", "2"]}, "'limit' is given more than once"),
    ({"colour": "red"}, "unknown parameter 'colour'"),
    ({"action": "add sender"}, "'add sender' is not an action name"),
    ({"action": "add-sender,"}, "'' is not an action name"),
    ({"actor": ""}, "actor must be 1-200 characters"),
    ({"session": "a b"}, "'a b' is not a session id"),
    ({"since": "yesterday"}, "since 'yesterday' is neither Unix seconds nor an ISO 8601 time"),
    ({"until": "nan"}, "until 'nan' is not a time"),
    ({"since": "200", "until": "100"}, "since must be earlier than until"),
])
def test_bad_api_parameters_are_one_sentence(params, needle):
    with pytest.raises(core.Invalid) as info:
        audit_filters(q(**params))
    assert needle in info.value.message and info.value.status == 400
    assert info.value.message.count(". ") == 0


# =============================================================================
# the retention options
# =============================================================================


def test_retention_options_and_their_defaults():
    assert (Options().audit_max_age, Options().audit_max_rows) == (400, 1_000_000)
    assert parse_audit_max_age("0") == 0 and parse_audit_max_age(" 30 ") == 30
    assert parse_audit_max_rows("0") == 0 and parse_audit_max_rows("1_000") == 1000
    for parse, bad, needle in [(parse_audit_max_age, "-1", "negative"), (parse_audit_max_age, "1.5", "whole"),
                               (parse_audit_max_age, "36501", "more than 36500"),
                               (parse_audit_max_rows, "99", "below 100"), (parse_audit_max_rows, "lots", "whole")]:
        with pytest.raises(ConfigError, match=needle):
            parse(bad)


@pytest.mark.parametrize(("option", "value"), [("--audit-max-age", "-5"), ("--audit-max-rows", "10"),
                                               ("--audit-max-age", "a year")])
def test_mauthserver_refuses_a_bad_retention_with_one_sentence_and_2(tmp_path, option, value):
    result = CliRunner().invoke(mauthserver, ["--db", str(tmp_path / "m.db"), "--no-sap", option, value])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mauthserver: {option} {value!r}"), result.stderr
    assert not (tmp_path / "m.db").exists()


def test_mauthserver_help_states_the_retention_defaults():
    text = CliRunner().invoke(mauthserver, ["--help"]).stdout
    assert "--audit-max-age DAYS" in text and "[default: 400]" in text
    assert "--audit-max-rows N" in text and "[default: 1000000]" in text
