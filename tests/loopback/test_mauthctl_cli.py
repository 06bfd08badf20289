"""mauthctl's commands against a router and a mauthserver on 127.0.0.1: output (human and --json), exit codes.

Direct mode talks the real router protocol to the real server core on a
memory backend (127.0.0.1 UDP, in a thread); server mode talks HTTP to the
real mediator and API (`LoopbackFleet`). What needs neither is in
tests/unit/test_mauthctl_cli.py; the behaviour against the real daemons in
the lab in tests/integration (test_dashboard_lab.py, test_mauthserver_e2e.py,
test_musersd.py).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest
from click.testing import CliRunner

from mauthclient import config as mconfig
from mauthclient.cli import main as mauthctl
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.keys import format_key_line
from mauthcore.protocol.model import DeniedEntry, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.rules import Rule, RuleKey
from tests.support.loopback_fleet import KEYS, TOKEN, LoopbackFleet
from tests.support.mauthctl import no_user_config, one_error, run, secret, served  # noqa: F401
from tests.support.sessions import ASM, SSM
from tests.support.waiting import wait_until as wait

# =============================================================================
# direct mode: one router
# =============================================================================


@pytest.fixture
def router(tmp_path):
    """A router on 127.0.0.1: the real protocol server core on a memory backend, served by a thread."""
    backend = MemoryBackend()
    with served(ServerCore(backend, KEYS, epoch=7, state_id=70), "127.0.0.1", tmp_path) as opts:
        yield backend, opts


def test_direct_mode_rule_commands(router):
    backend, opts = router
    r = run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "16")
    assert r.exit_code == 0 and r.stdout.strip() == "added: 192.0.2.10 -> 239.1.1.1 max-ttl 16"
    assert backend.rules[RuleKey.make("192.0.2.10", "239.1.1.1")].max_ttl == 16
    # Exists with another TTL: refused (1); --replace overwrites.
    one_error(run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "8"), 1, "EXISTS")
    r = run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "8", "--replace", "--json")
    assert json.loads(r.stdout) == {"result": "replaced", "source": "192.0.2.10", "group": "239.1.1.1",
                                    "max_ttl": 8}
    backend.traffic[RuleKey.make("192.0.2.10", "239.1.1.1")] = (5, 500, int(time.time() * 1000))
    r = run(*opts, "list")
    assert r.exit_code == 0
    header, line = r.stdout.splitlines()
    assert header.split()[:5] == ["SOURCE", "GROUP", "MAX-TTL", "PACKETS", "BYTES"]
    assert line.split()[:5] == ["192.0.2.10", "239.1.1.1", "8", "5", "500"]
    for args in (["--json", "list"], ["list", "--json"]):  # --json before or after the command
        data = json.loads(run(*opts, *args).stdout)
        assert [(e["source"], e["group"], e["max_ttl"], e["packets"], e["bytes"]) for e in data] == [
            ("192.0.2.10", "239.1.1.1", 8, 5, 500)]
    one_error(run(*opts, "del-sender", "192.0.2.99", "239.1.1.1"), 1, "NOT_FOUND")
    assert run(*opts, "del-sender", "192.0.2.10", "239.1.1.1").exit_code == 0
    assert backend.rules == {}
    # Bad input is refused before anything is sent.
    executed = backend.executions
    one_error(run(*opts, "add-sender", "192.0.2.10", "10.0.0.1", "--max-ttl", "3"), 2, "not a multicast")
    one_error(run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "300"), 2, "TTL")
    assert backend.executions == executed


def test_direct_mode_denied_stats_mode_flush(router):
    backend, opts = router
    backend.rules[RuleKey.make("192.0.2.10", "239.1.1.1")] = Rule.make("192.0.2.10", "239.1.1.1", 4)
    backend.denied_entries = [DeniedEntry(ipaddress.ip_address("192.0.2.66"), ipaddress.ip_address("239.9.9.9"),
                                          Reason.UNAUTHORIZED, 12, 1200, 5, int(time.time() * 1000))]
    backend.reason_counters[Reason.UNAUTHORIZED] = (12, 1200)
    data = json.loads(run(*opts, "denied", "--json").stdout)
    assert [(d["source"], d["group"], d["reason"], d["packets"], d["last_ttl"]) for d in data] == [
        ("192.0.2.66", "239.9.9.9", "unauthorized", 12, 5)]
    assert "192.0.2.66" in run(*opts, "denied").stdout
    st = json.loads(run(*opts, "--json", "stats").stdout)
    assert st["mode"] == "enforce" and st["rules"] == 1 and st["reasons"]["unauthorized"] == {"packets": 12,
                                                                                               "bytes": 1200}
    assert run(*opts, "mode").stdout.strip() == "enforce"
    assert run(*opts, "mode", "monitor").stdout.strip() == "monitor"
    assert backend.mode.name == "MONITOR"
    r = run(*opts, "flush", input="n\n")
    assert r.exit_code == 2 and r.stderr.splitlines()[-1] == "mauthctl: flush cancelled"
    assert backend.rules
    r = run(*opts, "flush", "--yes", "--json")
    assert json.loads(r.stdout) == {"removed": 1} and backend.rules == {}


def test_direct_mode_shows_reasons_of_a_newer_router(router):
    """A reason code this version does not know (a newer filter's) is shown with its code, not refused."""
    backend, opts = router
    newer = Reason(20)
    backend.denied_entries = [DeniedEntry(ipaddress.ip_address("192.0.2.66"), ipaddress.ip_address("239.9.9.9"),
                                          newer, 3, 300, 5, int(time.time() * 1000))]
    backend.reason_counters[newer] = (3, 300)
    data = json.loads(run(*opts, "denied", "--json").stdout)
    assert [(d["source"], d["reason"], d["packets"]) for d in data] == [("192.0.2.66", "unknown_20", 3)]
    r = run(*opts, "denied")
    assert r.exit_code == 0 and r.stdout.splitlines()[1].split()[:3] == ["192.0.2.66", "239.9.9.9", "unknown_20"]
    st = json.loads(run(*opts, "--json", "stats").stdout)
    assert st["reasons"]["unknown_20"] == {"packets": 3, "bytes": 300} and "passed" in st["reasons"]
    r = run(*opts, "stats")
    assert r.exit_code == 0 and ["unknown_20", "3", "300"] in [line.split() for line in r.stdout.splitlines()]


def test_direct_mode_errors_and_exit_codes(router, tmp_path):
    backend, opts = router
    one_error(run("list"), 2, "--router HOST:PORT")
    one_error(run("--router", "127.0.0.1:99999", "list"), 2, "port")
    one_error(run("--router", opts[1], "list"), 2, "--key-file")
    one_error(run("--router", opts[1], "--key-file", tmp_path / "missing", "list"), 2, "does not exist")
    open_key = secret(tmp_path / "open.key", format_key_line(1, bytes(range(32))), 0o644)
    one_error(run("--router", opts[1], "--key-file", open_key, "list"), 2, "chmod 600")
    wrong = secret(tmp_path / "wrong.key", format_key_line(1, bytes(32)))
    one_error(run("--router", opts[1], "--key-file", wrong, "--timeout", "0.05", "--tries", "2", "list"), 3, "")
    # Nobody there: unreachable.
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    one_error(run("--router", f"127.0.0.1:{port}", "--key-file", opts[3], "--timeout", "0.05", "--tries", "2",
                  "list"), 3, "")
    one_error(run(*opts, "sessions"), 2, "needs --server")
    one_error(run(*opts, "--server", "http://127.0.0.1:1", "list"), 2, "not both")


@pytest.fixture
def server(tmp_path):
    with LoopbackFleet(tmp_path, routers=("r1", "r2")) as fleet:
        fleet.announce(SSM)
        fleet.announce(ASM)
        token = secret(tmp_path / "api.token", TOKEN)
        yield fleet, ["--server", fleet.url, "--token-file", token]


def test_server_mode_rules_on_every_router(server):
    fleet, opts = server
    out = json.loads(run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "8", "--json").stdout)
    assert out["result"] == "added" and out["rule"]["max_ttl"] == 8
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {("192.0.2.10", "239.1.1.1"): 8})
    one_error(run(*opts, "add-sender", "192.0.2.10", "239.1.1.1", "--max-ttl", "9"), 1, "already exists")
    wait(lambda: all(r["routers"][n]["state"] == "applied" for r in fleet.call(fleet.mediator.rules_view)
                     for n in ("r1", "r2")))
    r = run(*opts, "list")
    assert r.exit_code == 0 and "r1:applied r2:applied" in r.stdout
    rules = json.loads(run(*opts, "list", "--json").stdout)
    assert rules[0]["source"] == "192.0.2.10" and set(rules[0]["routers"]) == {"r1", "r2"}
    stats = json.loads(run(*opts, "stats", "--json").stdout)
    assert stats["rules"] == 1 and stats["sessions"] == 2
    assert "2/2 routers up" in run(*opts, "stats").stdout
    routers = json.loads(run(*opts, "routers", "--json").stdout)
    assert [r["name"] for r in routers] == ["r1", "r2"]
    assert run(*opts, "routers").stdout.splitlines()[0].split()[:3] == ["NAME", "ADDRESS", "STATE"]
    assert json.loads(run(*opts, "mode", "monitor", "--json").stdout) == {"mode": "monitor"}
    wait(lambda: all(b.mode.name == "MONITOR" for b in fleet.backends.values()))
    assert run(*opts, "del-sender", "192.0.2.10", "239.1.1.1").exit_code == 0
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {})
    one_error(run(*opts, "del-sender", "192.0.2.10", "239.1.1.1"), 1, "no rule")
    run(*opts, "add-sender", "192.0.2.11", "239.1.1.2", "--max-ttl", "3")
    assert json.loads(run(*opts, "flush", "--yes", "--json").stdout) == {"removed": 1}
    audit = json.loads(run(*opts, "audit", "--limit", "3", "--json").stdout)
    assert audit[0]["action"] == "flush"


def test_server_mode_sessions_authorize_revoke(server):
    fleet, opts = server
    sessions = json.loads(run(*opts, "sessions", "--json").stdout)
    by_name = {s["name"]: s for s in sessions}
    assert set(by_name) == {"Declared feed", "Lobby camera"}
    declared, lobby = by_name["Declared feed"], by_name["Lobby camera"]
    assert declared["sources"] == ["192.0.2.10"] and declared["groups"] == [{"address": "232.1.1.1", "ttl": 16}]
    text = run(*opts, "sessions").stdout
    assert text.splitlines()[0].split()[:3] == ["ID", "NAME", "ORIGIN"] and "232.1.1.1/16" in text
    r = run(*opts, "authorize", declared["id"][:6])
    assert r.exit_code == 0 and "192.0.2.10 -> 232.1.1.1 max-ttl 16" in r.stdout
    wait(lambda: fleet.held("r1") == {("192.0.2.10", "232.1.1.1"): 16})
    # An any-source session: the sender must be named; the error says how.
    one_error(run(*opts, "authorize", lobby["id"]), 2, "retry with --sender ADDR")
    out = json.loads(run(*opts, "authorize", lobby["id"], "--sender", "192.0.2.55", "--expire-with-session",
                         "--json").stdout)
    assert [(x["source"], x["group"]) for x in out["rules"]] == [("192.0.2.55", "239.255.12.42")]
    one_error(run(*opts, "authorize", "0000000000000000"), 1, "no announced session")
    r = run(*opts, "revoke", declared["id"])
    assert r.exit_code == 0 and "1 rules removed" in r.stdout
    assert json.loads(run(*opts, "revoke", "192.0.2.55", "239.255.12.42", "--json").stdout)["result"] == "removed"
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {})
    one_error(run(*opts, "revoke", "a", "b", "c"), 2, "session id, or a source and a group")


def test_server_mode_denied_asks_every_router(server):
    fleet, opts = server
    fleet.set_denied("r2", [("192.0.2.66", "239.9.9.9", "unauthorized", 7, 700, 3)])
    data = json.loads(run(*opts, "denied", "--json").stdout)
    assert [(d["router"], d["source"], d["group"], d["reason"], d["packets"]) for d in data] == [
        ("r2", "192.0.2.66", "239.9.9.9", "unauthorized", 7)]
    r = run(*opts, "denied")
    assert r.exit_code == 0 and r.stdout.splitlines()[1].split()[:4] == ["r2", "192.0.2.66", "239.9.9.9",
                                                                          "unauthorized"]


def test_server_mode_shows_reasons_of_a_newer_router(server):
    """mauthserver reads a newer musersd's unknown reason code and passes it on with its code."""
    fleet, opts = server
    backend = fleet.backends["r2"]
    entry = DeniedEntry(ipaddress.ip_address("192.0.2.66"), ipaddress.ip_address("239.9.9.9"), Reason(20), 7, 700,
                        3, int(time.time() * 1000))
    fleet.call(setattr, backend, "denied_entries", [entry])
    fleet.call(backend.reason_counters.__setitem__, Reason(20), (7, 700))
    data = json.loads(run(*opts, "denied", "--json").stdout)
    assert [(d["router"], d["source"], d["reason"], d["packets"]) for d in data] == [
        ("r2", "192.0.2.66", "unknown_20", 7)]
    assert run(*opts, "denied").stdout.splitlines()[1].split()[:4] == ["r2", "192.0.2.66", "239.9.9.9", "unknown_20"]

    def probed() -> dict | None:  # the router's filter counters as mauthserver shows them (probe: COUNTERS)
        return {r["name"]: r for r in json.loads(run(*opts, "routers", "--json").stdout)}["r2"]["filter"]

    wait(lambda: (probed() or {}).get("unknown_20") == {"packets": 7, "bytes": 700})
    assert probed()["passed"] == {"packets": 0, "bytes": 0}


def test_server_mode_events_follow_the_stream(server):
    fleet, opts = server
    # The routers up first, so that their own router.changed events are not what the reader gets.
    wait(lambda: all(r["state"] == "up" for r in fleet.call(fleet.mediator.routers_view)))

    # Once the events command listens, the rule is added: the event reaches it.
    errors = fleet.once_subscribed(fleet.mediator.add_rule, "192.0.2.10", "239.1.1.1", 8, actor="test")
    r = run(*opts, "events", "--count", "1", "--json")
    assert r.exit_code == 0 and errors == []
    event = json.loads(r.stdout)
    assert event["event"] == "rule.added" and event["rule"]["source"] == "192.0.2.10"

    errors = fleet.once_subscribed(fleet.mediator.remove_rule, "192.0.2.10", "239.1.1.1", actor="test")
    r = run(*opts, "events", "--count", "1")
    assert r.exit_code == 0 and errors == []
    assert r.stdout.split()[1:5] == ["rule.removed", "192.0.2.10", "->", "239.1.1.1"]


def test_server_mode_errors(server, tmp_path):
    fleet, opts = server
    wrong = secret(tmp_path / "wrong.token", "wrong-token-wrong-token")
    one_error(run("--server", fleet.url, "--token-file", wrong, "sessions"), 2, "bearer token")
    one_error(run("--server", fleet.url, "--token-file", tmp_path / "missing", "sessions"), 2, "does not exist")
    one_error(run("--server", "ftp://x", "--token-file", opts[3], "sessions"), 2, "not http://HOST:PORT")
    one_error(run("--server", "http://127.0.0.1:1", "--token-file", opts[3], "routers"), 3, "cannot reach")
    one_error(run("--server", "http://127.0.0.1:1", "--token-file", opts[3], "dashboard"), 3, "cannot reach")
    one_error(run("--server", fleet.url, "--token-file", wrong, "dashboard"), 2, "bearer token")
    one_error(run(*opts, "--json", "dashboard"), 2, "interactive")
    one_error(run("dashboard"), 2, "needs --server")


def test_config_file_supplies_the_defaults_and_flags_override_it(server, tmp_path, monkeypatch):
    fleet, opts = server
    cfg = tmp_path / "xdg" / "mauth" / "mauthctl.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'server = "{fleet.url}"\ntoken_file = "../../api.token"\nhttp_timeout = 5\n')
    # The user's file is found without any flag; relative paths are relative to the file.
    data = json.loads(run("sessions", "--json").stdout)
    assert len(data) == 2
    shown = json.loads(run("config", "--json").stdout)
    assert shown["file"] == str(cfg)
    assert shown["settings"]["server"] == {"value": fleet.url, "from": "config file"}
    assert shown["settings"]["token_file"]["value"] == str(tmp_path / "api.token")
    assert shown["settings"]["http_timeout"] == {"value": 5.0, "from": "config file"}
    assert shown["settings"]["tries"] == {"value": 6, "from": "default"}
    # The environment and the command line win over the file.
    monkeypatch.setenv("MAUTH_SERVER", "http://127.0.0.1:1")
    assert json.loads(run("config", "--json").stdout)["settings"]["server"]["from"] == "environment"
    one_error(run("sessions"), 3, "127.0.0.1:1")
    assert run("--server", fleet.url, "sessions").exit_code == 0
    monkeypatch.delenv("MAUTH_SERVER")
    # A --router on the command line sets the configured server aside (direct mode).
    one_error(run("--router", "127.0.0.1:1", "list"), 2, "--key-file")
    # An explicit file must exist, and a bad one is one sentence naming it.
    one_error(run("--config", tmp_path / "none.toml", "sessions"), 2, "does not exist")
    bad = tmp_path / "bad.toml"
    for text, needle in [("server = 5\n", "'server' must be a str"), ("sever = 'x'\n", "unknown setting 'sever'"),
                         ("server = 'a'\nrouter = 'b'\n", "not both"), ("server = \n", "not valid TOML")]:
        bad.write_text(text)
        one_error(run("--config", bad, "sessions"), 2, needle)
        monkeypatch.setenv("MAUTHCTL_CONFIG", str(bad))
        one_error(run("sessions"), 2, needle)
        monkeypatch.delenv("MAUTHCTL_CONFIG")
    # The example is itself a valid file.
    example = tmp_path / "example.toml"
    example.write_text(run("config", "--example").stdout)
    assert mconfig.parse(example.read_text(), str(example))["server"] == "http://127.0.0.1:7580"


def test_completion_scripts_and_session_ids(server, tmp_path, monkeypatch):
    fleet, opts = server
    for shell, needle in [("bash", "_MAUTHCTL_COMPLETE=bash_complete"), ("zsh", "compdef"),
                          ("fish", "complete --no-files --command mauthctl")]:
        r = run("completion", shell)
        assert r.exit_code == 0 and needle in r.stdout, r.stdout
    assert run("completion", "tcsh").exit_code == 2
    # What the shell runs: command names, then session ids fetched from the server.
    runner = CliRunner()

    def complete(words: str) -> list[str]:
        env = {"_MAUTHCTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        r = runner.invoke(mauthctl, [], env=env, prog_name="mauthctl")
        return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line.strip()]

    assert "dashboard" in complete("mauthctl da")
    sid = json.loads(run(*opts, "sessions", "--json").stdout)[0]["id"]
    assert complete(f"mauthctl {' '.join(opts)} authorize {sid[:3]}") == [sid]
    assert complete("mauthctl --server http://127.0.0.1:1 authorize ") == []  # quietly nothing
