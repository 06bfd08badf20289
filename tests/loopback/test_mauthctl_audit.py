"""The audit log through the HTTP API and `mauthctl audit` against a running mauthserver on 127.0.0.1
(`LoopbackFleet`): filters, paging, --json as the API answers, errors. The store's filters and retention
on their own are tests/unit/test_mauthserver_audit.py; the daemon's pruning, tests/loopback/
test_mauthserver_audit.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.support.loopback_fleet import TOKEN, LoopbackFleet
from tests.support.mauthctl import no_user_config, one_error, run, secret  # noqa: F401
from tests.support.sessions import ASM, SSM


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fleet whose audit log holds, after create-db and configure-routers: alice adds and removes a rule,
    bob authorizes the declared session and revokes it."""
    with LoopbackFleet(tmp_path, routers=("r1",)) as fleet:
        fleet.announce(SSM)
        fleet.announce(ASM)
        opts = ["--server", fleet.url, "--token-file", secret(tmp_path / "api.token", TOKEN)]
        sid = next(s["id"] for s in json.loads(run(*opts, "sessions", "--json").stdout)
                   if s["name"] == "Declared feed")
        monkeypatch.setenv("USER", "alice")
        assert run(*opts, "add-sender", "192.0.2.20", "239.1.1.1", "--max-ttl", "8").exit_code == 0
        monkeypatch.setenv("USER", "bob")
        assert run(*opts, "authorize", sid).exit_code == 0
        assert run(*opts, "revoke", sid).exit_code == 0
        monkeypatch.setenv("USER", "alice")
        assert run(*opts, "del-sender", "192.0.2.20", "239.1.1.1").exit_code == 0
        yield fleet, opts, sid


def api_get(fleet: LoopbackFleet, query: list[tuple[str, str]]) -> tuple[int, object]:
    req = urllib.request.Request(f"{fleet.url}/api/v1/audit?{urllib.parse.urlencode(query)}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def audit_json(opts, *args) -> list[dict]:
    r = run(*opts, "audit", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


ALL = ["del-sender", "revoke", "authorize", "add-sender", "configure-routers", "create-db"]


def test_http_filters(server):
    fleet, _, sid = server
    status, rows = api_get(fleet, [])
    assert status == 200 and [r["action"] for r in rows] == ALL
    assert rows == fleet.call(fleet.mediator.store.audit_log)
    _, rows = api_get(fleet, [("actor", "ALICE")])
    assert [r["action"] for r in rows] == ["del-sender", "add-sender"]
    assert all(r["actor"].startswith("alice (api 127.0.0.1") for r in rows)
    _, rows = api_get(fleet, [("action", "revoke,authorize"), ("action", "create-db")])
    assert [r["action"] for r in rows] == ["revoke", "authorize", "create-db"]
    _, rows = api_get(fleet, [("session", sid)])
    assert [r["action"] for r in rows] == ["revoke", "authorize"] and rows[0]["detail"]["session"] == sid
    first = rows[-1]["at"]
    _, rows = api_get(fleet, [("since", repr(first)), ("action", "authorize,revoke,add-sender")])
    assert [r["action"] for r in rows] == ["revoke", "authorize"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
    assert api_get(fleet, [("since", iso)]) == (200, [])
    assert api_get(fleet, [("until", "2000-01-01")]) == (200, [])
    _, page = api_get(fleet, [("limit", "2"), ("before", str(rows[0]["id"]))])
    assert [r["action"] for r in page] == ["authorize", "add-sender"]


def test_http_bad_parameters_are_400_with_one_sentence_and_change_nothing(server):
    fleet, _, _ = server
    before = fleet.call(fleet.mediator.store.audit_log)
    for query, needle in [([("since", "soon")], "since 'soon' is neither Unix seconds nor an ISO 8601 time"),
                          ([("limit", "0")], "limit must be 1-10000"),
                          ([("order", "asc")], "unknown parameter 'order'"),
                          ([("action", "add sender")], "is not an action name")]:
        status, body = api_get(fleet, query)
        assert status == 400 and body["code"] == "invalid" and needle in body["error"], body
    assert fleet.call(fleet.mediator.store.audit_log) == before


def test_mauthctl_audit_json_is_the_api_answer_and_filters(server):
    fleet, opts, sid = server
    assert audit_json(opts) == fleet.call(fleet.mediator.store.audit_log, limit=50)
    assert [r["action"] for r in audit_json(opts, "--actor", "bob")] == ["revoke", "authorize"]
    assert [r["action"] for r in audit_json(opts, "--action", "add-sender", "--action", "del-sender")] == \
        ["del-sender", "add-sender"]
    assert [r["action"] for r in audit_json(opts, "--session", sid)] == ["revoke", "authorize"]
    assert [r["action"] for r in audit_json(opts, "--since", "1h")] == ALL
    assert audit_json(opts, "--until", "2000-01-01") == []
    assert audit_json(opts, "--since", "2000-01-01T10:00", "--until", "1h") == []
    assert [r["action"] for r in audit_json(opts, "--since", "2000-01-01", "--actor", "alice", "--limit", "1")] \
        == ["del-sender"]


def test_mauthctl_audit_table_and_paging(server):
    fleet, opts, _ = server
    r = run(*opts, "audit", "--limit", "2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "WHEN", "ACTOR", "ACTION", "DETAIL"]
    newest = fleet.call(fleet.mediator.store.audit_log, limit=2)
    assert lines[1].split()[:6] == [str(newest[0]["id"]), *time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(newest[0]["at"])).split(), "alice", "(api", "127.0.0.1)"][:6]
    assert "del-sender" in lines[1] and "group=239.1.1.1 source=192.0.2.20" in lines[1]
    assert lines[-1] == f"-- 2 entries shown; for older ones add --before {newest[1]['id']}"
    nxt = run(*opts, "audit", "--limit", "2", "--before", newest[1]["id"]).stdout.splitlines()
    assert [line.split()[3] for line in nxt[1:3]] == ["bob", "alice"] and "authorize" in nxt[1]
    # Fewer than the limit: no paging line.
    tail = run(*opts, "audit", "--limit", "10", "--before", newest[1]["id"]).stdout.splitlines()
    assert len(tail) == 1 + 4 and not tail[-1].startswith("--")
    assert run(*opts, "audit", "--action", "flush").stdout == "no audit entries match\n"


def test_mauthctl_audit_errors_are_one_sentence_and_exit_2(server):
    _, opts, _ = server
    one_error(run(*opts, "audit", "--since", "yesterday"), 2, "--since 'yesterday' is not a time")
    one_error(run(*opts, "audit", "--until", "3 days"), 2, "--until '3 days' is not a time")
    one_error(run(*opts, "audit", "--action", "add sender"), 2, "'add sender' is not an action name")
    one_error(run(*opts, "audit", "--since", "1h", "--until", "2h"), 2, "since must be earlier than until")
    one_error(run(*opts, "audit", "--session", "a/b"), 2, "is not a session id")
