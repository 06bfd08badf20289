"""mauthctl's binding flags, rearm and bound listings toward mauthserver, without a socket.

`ApiClient._json` is replaced by a recorder that answers as the API does, so
these tests see exactly what mauthctl would send (the rule's "binding",
POST /rules/rearm) and how it shows the answers. The same commands toward a
router, over v2 on 127.0.0.1, are in tests/loopback/test_mauthctl_binding.py.
"""

from __future__ import annotations

import json

from mauthclient import api as mapi
from mauthclient.cli import _binding_text, _event_summary, _learned_text

# The autouse no_user_config fixture, the fake mauthserver `api` and the helpers of every mauthctl test.
from tests.support.mauthctl import fake_api, no_user_config, one_error, run, secret  # noqa: F401

SRC, GRP, MAC = "192.0.2.10", "239.1.1.1", "02:00:5e:10:00:01"



def test_add_sender_sends_the_binding_to_mauthserver(api):
    fake, calls, opts = api
    binding = {"iface": "r1=eth1,r2=ens4", "rpf": True, "mac": MAC, "learn": True}
    fake.answer = {"result": "added", "rule": {"source": SRC, "group": GRP, "max_ttl": 16, "binding": binding,
                                               "routers": {}}}
    r = run(*opts, "add-sender", SRC, GRP, "--max-ttl", "16", "--iface", "r2=ens4, r1=eth1", "--rpf",
            "--mac", MAC.upper(), "--learn")
    assert r.exit_code == 0, r.output
    assert calls == [("POST", "/rules", {"source": SRC, "group": GRP, "max_ttl": 16, "pps": 0, "bps": 0,
                                         "replace": False, "binding": binding})]
    assert r.stdout.strip() == (f"added: {SRC} -> {GRP} max-ttl 16 iface=r1=eth1,r2=ens4 rpf mac={MAC} learn"
                                " (committed; routers: none)")
    # Unbound: no "binding" at all, as before bindings.
    run(*opts, "add-sender", SRC, GRP, "--max-ttl", "16", "--replace")
    assert "binding" not in calls[-1][2] and calls[-1][2]["replace"] is True
    run(*opts, "add-sender", "192.0.2.0/24", GRP, "--max-ttl", "8", "--iface", "eth1")
    assert calls[-1][2]["binding"] == {"iface": "eth1"}


def test_bad_bindings_send_nothing_to_mauthserver(api):
    _, calls, opts = api
    add = ["add-sender", SRC, GRP, "--max-ttl", "16"]
    one_error(run(*opts, *add, "--mac", "zz:00:5e:10:00:01"), 2, "is not six hexadecimal bytes")
    one_error(run(*opts, *add, "--iface", "r1=eth1,r2"), 2, "'r2' is not ROUTER=INTERFACE")
    one_error(run(*opts, *add, "--iface", "r1=eth 1"), 2, "is not a Linux interface name")
    one_error(run(*opts, "add-sender", SRC, "239.0.0.0/8", "--max-ttl", "8", "--mac", MAC), 2,
              "cannot be bound to a MAC address")
    one_error(run(*opts, "add-sender", "192.0.2.0/24", GRP, "--max-ttl", "8", "--learn"), 2,
              "cannot be bound to a learned MAC address")
    assert calls == []


def test_rearm_through_mauthserver(api):
    fake, calls, opts = api
    fake.answer = {"result": "rearmed", "source": SRC, "group": GRP}
    r = run(*opts, "rearm", SRC, GRP)
    assert r.exit_code == 0 and r.stdout.strip() == f"rearmed: ({SRC}, {GRP}) (committed; routers follow)"
    assert calls == [("POST", "/rules/rearm", {"source": SRC, "group": GRP})]
    assert json.loads(run(*opts, "rearm", SRC, GRP, "--json").stdout) == fake.answer
    fake.error = mapi.ApiError(404, "not_found", f"no rule for ({SRC}, {GRP})")
    one_error(run(*opts, "rearm", SRC, GRP), 1, "no rule for")
    fake.error = mapi.ApiError(409, "conflict", f"the rule for ({SRC}, {GRP}) does not learn its sender")
    one_error(run(*opts, "rearm", SRC, GRP), 1, "does not learn")
    sent = len(calls)
    one_error(run(*opts, "rearm", SRC, "10.0.0.1"), 2, "not a multicast")
    assert len(calls) == sent


def test_server_listing_shows_bindings_only_when_some_rule_is_bound(api):
    fake, _, opts = api
    plain = {"source": SRC, "group": GRP, "max_ttl": 16, "state": "applied", "routers": {"r1": {"state": "applied"}}}
    fake.answer = [plain]
    header = run(*opts, "list").stdout.splitlines()[0].split()
    assert "BINDING" not in header and "LEARNED" not in header
    learner = {"source": "192.0.2.11", "group": GRP, "max_ttl": 8, "state": "applied",
               "binding": {"iface": "r1=eth1", "learn": True},
               "routers": {"r1": {"state": "applied", "learned": {"iface": "eth1", "mac": MAC}, "moved": 2},
                           "r2": {"state": "applied", "learned": None, "moved": 0}}}
    fake.answer = [plain, learner]
    lines = run(*opts, "list").stdout.splitlines()
    assert lines[0].split()[-2:] == ["BINDING", "LEARNED"]
    assert " ".join(lines[2].split()).endswith(f"iface=r1=eth1 learn r1:eth1 {MAC}, moved 2 r2:nothing yet")
    assert " ".join(lines[1].split()).endswith("- -")
    assert json.loads(run(*opts, "list", "--json").stdout) == [plain, learner]


def test_binding_cells():
    assert _binding_text(None) == _binding_text({}) == "-"
    assert _binding_text({"iface": "eth1", "rpf": True, "mac": MAC}) == f"iface=eth1 rpf mac={MAC}"
    assert _binding_text({"iface": "eth1", "colour": "red"}) == '{"colour":"red","iface":"eth1"}'  # a newer server
    rule = {"source": SRC, "group": GRP, "max_ttl": 16}
    assert _event_summary("rule.added", {"rule": rule, "actor": "alice"}) == f"{SRC} -> {GRP} max-ttl 16 by alice"
    assert _event_summary("rule.added", {"rule": {**rule, "binding": {"iface": "eth1", "learn": True}},
                                         "actor": "alice"}) == f"{SRC} -> {GRP} max-ttl 16 iface=eth1 learn by alice"
    assert _learned_text(None, 0) == "nothing yet"
    assert _learned_text(("eth1", bytes.fromhex("02005e100001")), 0) == f"eth1 {MAC}"
    assert _learned_text({"iface": "eth1", "mac": MAC}, 4) == f"eth1 {MAC}, moved 4"


def test_check_config_counts_bound_rules(tmp_path):
    conf = tmp_path / "mauth.conf"
    conf.write_text(f"{SRC} {GRP} 16 iface=eth1 rpf mac={MAC} learn\n192.0.2.0/24 {GRP} 8 rpf\n"
                    f"192.0.2.11 {GRP} 8\n")
    r = run("check-config", conf)
    assert r.exit_code == 0 and r.stdout.strip() == f"{conf}: 3 rules (2 bound), OK"
    assert json.loads(run("check-config", conf, "--json").stdout) == {"file": str(conf), "rules": 3, "bound": 2,
                                                                    "receivers": 0, "interfaces": 0}
    conf.write_text(f"192.0.2.0/24 {GRP} 8 mac={MAC}\n")
    one_error(run("check-config", conf), 2, "mauth.conf:1: the prefix rule")
    r = run("rearm", "--help")
    assert r.exit_code == 0 and "Examples:" in r.stdout and "mauthctl rearm" in r.stdout
    r = run("add-sender", "--help")
    assert all(flag in r.stdout for flag in ("--iface", "--rpf", "--mac", "--learn"))


def test_denied_pairs_a_binding_dropped_show_their_offender(api):
    fake, _, opts = api
    unauthorized = {"source": "192.0.2.99", "group": GRP, "reason": "unauthorized", "packets": 3, "bytes": 300,
                    "last_ttl": 8, "last_seen": None}
    fake.answer = {"routers": {"r1": {"ok": True, "denied": [unauthorized]}}}
    assert "OFFENDER" not in run(*opts, "denied").stdout.splitlines()[0]
    spoofed = {"source": SRC, "group": GRP, "reason": "wrong_mac", "packets": 5, "bytes": 500, "last_ttl": 8,
               "last_seen": None, "iface": "eth1", "mac": "02:00:5e:10:00:09"}
    fake.answer = {"routers": {"r1": {"ok": True, "denied": [unauthorized, spoofed]}}}
    lines = run(*opts, "denied").stdout.splitlines()
    assert lines[0].split()[-1] == "OFFENDER"
    assert lines[1].split()[-1] == "-" and " ".join(lines[2].split()).endswith("eth1 02:00:5e:10:00:09")
    event = {"router": "r1", **spoofed, "new_packets": 5, "first": True}
    assert _event_summary("denied", event) == (f"r1: {SRC} -> {GRP} wrong_mac from eth1 02:00:5e:10:00:09"
                                               " (+5 packets, 5 in all, last TTL 8)")
    moved = {"router": "r1", "source": SRC, "group": GRP, "reason": "wrong_iif", "packets": 7, "new_packets": 2}
    assert _event_summary("sender.moved", moved) == (f"r1: the sender of {SRC} -> {GRP} moved (wrong_iif, 7 packets"
                                                     " dropped); `mauthctl rearm` pins it afresh")
