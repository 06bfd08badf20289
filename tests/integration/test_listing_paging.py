"""A real musersd holding more than a page of IPv4 and IPv6 rules lists every one of them, and stays up.

Strategy: the real daemon (XDP back end, the filter loaded through libbpf) in the lab's router namespace;
rules added one by one with the real `mauthctl` over protocol v2, then listed
with `mauthctl --json list`, which pages through LIST with the cursors musersd
hands out (an IPv6 position is a 35-byte cursor, docs/protocol.md "Listing
cursors"). No multicast is forwarded: only the tables and the protocol are
exercised. The second test puts mauthserver in front: it installs the rules,
verifies the router with paged LISTs every second, and lists them itself.
"""

from __future__ import annotations

import json

import pytest

from lab.daemons import Mauthserver, Musersd, make_secrets, mauthctl, write_key_file
from lab.netns import patience
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROUTER_IN = "192.0.2.1"


def test_thirty_ipv4_and_thirty_ipv6_rules_list_once_each_and_musersd_stays_up(lab, pin_dir):
    key = write_key_file(lab.workdir / "router.key")
    d = Musersd(lab, pin_dir, key_file=key).start()
    try:
        def ctl(*args):
            return mauthctl(lab, lab.senders["s1"].ns, "--router", f"{ROUTER_IN}:7575", "--key-file", str(key),
                            *args)

        wanted = {(f"10.20.0.{i + 1}", "239.20.0.1") for i in range(30)}
        wanted |= {(f"2001:db8:20::{i + 1:x}", "ff0e::db8:20") for i in range(30)}
        wanted |= {("10.21.0.0/24", "239.20.0.1"), ("2001:db8:21::/48", "ff0e::db8:20"),
                   ("2001:db8:20::1", "ff3e::/16")}
        for source, group in sorted(wanted):
            r = ctl("add-sender", source, group, "--max-ttl", "8")
            assert r.returncode == 0, r.stderr
        for _ in range(2):  # twice: the second listing is served by the same daemon
            r = ctl("--json", "list")
            assert r.returncode == 0, r.stderr
            listed = [(e["source"], e["group"]) for e in json.loads(r.stdout)]
            assert len(listed) == len(wanted) and set(listed) == wanted
        r = ctl("--json", "stats")
        assert r.returncode == 0 and json.loads(r.stdout)["rules"] == len(wanted)
        assert d.proc.poll() is None, d.log()
        assert "unexpected error" not in d.log()
    finally:
        if d.proc.poll() is None:
            d.stop()


def test_through_mauthserver_every_rule_is_applied_verified_and_listed_once(lab, pin_dir):
    """mauthserver installs more than a page of IPv4, IPv6 and prefix rules on a real musersd, verifies
    them with LIST page by page (every second here), and lists each once; musersd stays up throughout."""
    key, token = make_secrets(lab.workdir)
    d = Musersd(lab, pin_dir, key_file=key).start()
    server = Mauthserver(lab, key, token, routers={"r1": "127.0.0.1:7575"},
                         extra=["--verify-interval", "1"]).start()
    try:
        wanted = {(f"10.30.0.{i + 1}", "239.30.0.1") for i in range(25)}
        wanted |= {(f"2001:db8:30::{i + 1:x}", "ff0e::db8:30") for i in range(25)}
        wanted |= {("10.31.0.0/24", "239.30.0.1"), ("2001:db8:31::/48", "ff0e::db8:30")}
        for source, group in sorted(wanted):
            r = server.ctl("add-sender", source, group, "--max-ttl", "8")
            assert r.returncode == 0, r.stderr
        server.converged()
        mark = f"verified: it holds {len(wanted)} rules"  # mauthserver's log line after a paged LIST
        verified = server.log().count(mark)
        wait_until(lambda: server.log().count(mark) >= verified + 2, patience(10),
                   "two more verifications of the whole table", interval=0.2)
        r = server.ctl("--json", "list")
        assert r.returncode == 0, r.stderr
        rules = json.loads(r.stdout)
        assert sorted((e["source"], e["group"]) for e in rules) == sorted(wanted)
        assert {e["routers"]["r1"]["state"] for e in rules} == {"applied"}
        assert set(d.rules()) == wanted
        assert [(r["name"], r["state"], r["pending"]) for r in server.call("routers")] == [("r1", "up", 0)]
        assert d.proc.poll() is None and "unexpected error" not in d.log()
    finally:
        server.stop()
        if d.proc.poll() is None:
            d.stop()
