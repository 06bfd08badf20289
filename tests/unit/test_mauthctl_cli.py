"""mauthctl's commands with click's CliRunner: parsing, output (human and --json) and exit codes.

The commands that need no router and no server: configuration, completion,
secrets files, checks. Direct and server mode, over sockets on 127.0.0.1, are
in tests/loopback/test_mauthctl_cli.py; against the real daemons in the lab,
tests/integration (test_dashboard_lab.py, test_mauthserver_e2e.py,
test_musersd.py).
"""

from __future__ import annotations

import json
import os
import stat

from mauthcore.protocol.keys import load_keys

# The autouse no_user_config fixture and the helpers of every mauthctl test.
from tests.support.mauthctl import no_user_config, one_error, run, secret  # noqa: F401


def test_event_lines_name_what_happened():
    from mauthclient.cli import _event_summary

    assert _event_summary("denied", {"router": "r1", "source": "192.0.2.12", "group": "239.1.1.1",
                                     "reason": "unauthorized", "new_packets": 5, "packets": 20, "last_ttl": 4}) == (
        "r1: 192.0.2.12 -> 239.1.1.1 unauthorized (+5 packets, 20 in all, last TTL 4)")
    assert _event_summary("router.changed", {"name": "r1", "state": "up", "pending": 0}) == "r1 up pending 0"


# =============================================================================
# no server or router: configuration, completion, secrets files, checks
# =============================================================================


def test_keygen_writes_private_files_and_never_overwrites(tmp_path):
    key = tmp_path / "router.key"
    r = run("keygen", "key", key, "--json")
    assert json.loads(r.stdout) == {"file": str(key), "kind": "key", "key_id": 1}
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ring = load_keys(key)
    assert ring.key_ids == (1,) and len(ring.current.secret) == 32
    before = key.read_bytes()
    one_error(run("keygen", "key", key), 2, "refusing to overwrite")
    assert key.read_bytes() == before
    r = run("keygen", "key", key, "--rotate")
    assert r.exit_code == 0 and "new current key id 2" in r.stdout
    ring2 = load_keys(key)
    assert ring2.key_ids == (2, 1) and ring2.get(1) == ring.current
    one_error(run("keygen", "key", key, "--rotate", "--key-id", "1"), 2, "already in")
    token = tmp_path / "api.token"
    assert run("keygen", "token", token).exit_code == 0
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600 and len(token.read_text().strip()) >= 32
    one_error(run("keygen", "token", token), 2, "refusing to overwrite")
    one_error(run("keygen", "token", tmp_path / "t2", "--rotate"), 2, "for key files")
    one_error(run("keygen", "key", tmp_path / "no" / "dir" / "k"), 2, "cannot create")


def test_check_config_announce_and_help(tmp_path):
    good = tmp_path / "mauth.conf"
    good.write_text("192.0.2.10 239.1.1.1 16\n")
    r = run("check-config", good, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rules"] == 1
    good.write_text("192.0.2.10 239.1.1.1 16\nreceiver 10.1.0.0/24 239.1.0.0/16 iface=eth1\n"
                    "receiver 10.1.0.7 232.1.1.1 source=192.0.2.10\ninterface eth1 closed limit=20\n")
    r = run("check-config", good)
    assert r.exit_code == 0 and r.stdout.strip() == f"{good}: 1 rules, 2 receiver rules, 1 interface policies, OK"
    assert json.loads(run("check-config", good, "--json").stdout) == {
        "file": str(good), "rules": 1, "bound": 0, "receivers": 2, "interfaces": 1}
    good.write_text("receiver 10.1.0.7 232.1.1.1 source=192.0.2.10\nreceiver 10.1.0.7 232.1.1.1 source=192.0.2.10\n")
    one_error(run("check-config", good), 2, "mauth.conf:2: the receiver rule 10.1.0.7 may join 232.1.1.1 from"
                                            " 192.0.2.10 is already on line 1")
    bad = tmp_path / "bad.conf"
    bad.write_text("192.0.2.10 10.0.0.1 16\n")
    one_error(run("check-config", bad), 2, "bad.conf:1: group 10.0.0.1 is not a multicast address")
    one_error(run("announce", tmp_path / "missing.sdp"), 2, "cannot read")
    r = run("--help")
    assert r.exit_code == 0 and "Examples:" in r.stdout and "Exit status:" in r.stdout
    for command in ("add-sender", "del-sender", "list", "denied", "stats", "mode", "flush", "check-config",
                    "sessions", "authorize", "revoke", "routers", "audit", "events", "announce", "dashboard",
                    "config", "completion", "keygen"):
        r = run(command, "--help")
        assert r.exit_code == 0 and "Examples:" in r.stdout and f"mauthctl {command}" in r.stdout, command
    assert run("no-such-command").exit_code == 2
