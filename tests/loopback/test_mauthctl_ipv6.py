"""mauthctl with IPv6: rules and prefixes direct to a router and through mauthserver, sessions, errors.

Direct mode speaks protocol v2 to the real server core on a memory backend,
here listening on ::1, and the test reads the requests off the wire to check
their encoding (family 6, 16-byte addresses, prefix lengths out of 128).
Server mode goes through the real mediator, store and API, which fan out to
two routers over v2 (`LoopbackFleet`); IPv6 sessions arrive as SAP
announcements. The kernel side of the same rules is in tests/integration.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3

import pytest

from mauthcore.protocol import v2
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.server import ServerCore
from mauthcore.rules import Rule, RuleKey

# The fixtures (server, and the autouse no_user_config) and helpers of the mauthctl tests, used by name.
from tests.loopback.test_mauthctl_cli import server  # noqa: F401
from tests.support.loopback_fleet import KEYS
from tests.support.mauthctl import no_user_config, one_error, run, secret, served  # noqa: F401
from tests.support.waiting import wait_until as wait

SUBNET = "2001:db8:0:1::/64"


TRUSTED = "2001:db8::10"


def rule_record(family: int, src_plen: int, grp_plen: int, ttl: int, source: str, group: str,
                pps: int = 0, bps: int = 0) -> bytes:
    """A rule as docs/protocol.md lays it out, written field by field."""
    return (bytes([family, src_plen, grp_plen, ttl]) + pps.to_bytes(4, "big") + bps.to_bytes(8, "big")
            + ipaddress.ip_address(source).packed + ipaddress.ip_address(group).packed)


def key_record(src_plen: int, grp_plen: int, source: str, group: str) -> bytes:
    return bytes([6, src_plen, grp_plen, 0]) + ipaddress.ip_address(source).packed + ipaddress.ip_address(group).packed


def bodies(datagrams: list[bytes], command: int) -> list[bytes]:
    """The bodies of the requests with this command code (authenticated: the tag is checked)."""
    out = []
    for d in datagrams:
        envelope = v2.open_request(d, KEYS)
        if envelope.header.command == command:
            out.append(envelope.body)
    return out


class RecordingCore(ServerCore):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.datagrams: list[bytes] = []

    def receive(self, data, peer, now):
        self.datagrams.append(data)
        return super().receive(data, peer, now)


@pytest.fixture
def router6(tmp_path):
    """A router listening on ::1 (mauthctl --router [::1]:PORT)."""
    backend = MemoryBackend()
    core = RecordingCore(backend, KEYS, epoch=7, state_id=70)
    with served(core, "::1", tmp_path) as opts:
        yield backend, core, opts


def test_direct_mode_ipv6_rules_and_prefixes_on_the_wire(router6):
    backend, core, opts = router6
    r = run(*opts, "add-sender", "2001:DB8:0:1:0::/64", "FF0E::DB8:1", "--max-ttl", "8")
    assert r.exit_code == 0 and r.stdout.strip() == "added: 2001:db8:0:1::/64 -> ff0e::db8:1 max-ttl 8"
    r = run(*opts, "add-sender", TRUSTED, "ff15::/16", "--max-ttl", "16", "--pps", "2k", "--json")
    assert json.loads(r.stdout) == {"result": "added", "source": TRUSTED, "group": "ff15::/16", "max_ttl": 16,
                                    "pps": 2000, "bps": 0}
    assert set(backend.rules) == {RuleKey.make(SUBNET, "ff0e::db8:1"), RuleKey.make(TRUSTED, "ff15::/16")}
    assert bodies(core.datagrams, v2.Command.ADD) == [
        rule_record(6, 64, 128, 8, "2001:db8:0:1::", "ff0e::db8:1"),
        rule_record(6, 128, 16, 16, TRUSTED, "ff15::", pps=2000)]

    listed = {(e["source"], e["group"]): e["max_ttl"] for e in json.loads(run(*opts, "list", "--json").stdout)}
    assert listed == {(SUBNET, "ff0e::db8:1"): 8, (TRUSTED, "ff15::/16"): 16}
    table = run(*opts, "list").stdout.splitlines()
    assert any(line.split()[:3] == [SUBNET, "ff0e::db8:1", "8"] for line in table)

    assert run(*opts, "del-sender", SUBNET, "ff0e::db8:1").exit_code == 0
    assert run(*opts, "del-sender", TRUSTED, "ff15::/16").exit_code == 0
    assert backend.rules == {}
    assert bodies(core.datagrams, v2.Command.REMOVE) == [key_record(64, 128, "2001:db8:0:1::", "ff0e::db8:1"),
                                                         key_record(128, 16, TRUSTED, "ff15::")]
    one_error(run(*opts, "del-sender", TRUSTED, "ff15::/16"), 1, "NOT_FOUND")


@pytest.mark.parametrize("args, needle", [
    (("2001:db8::10", "ff02::1"), "group ff02::1 is a link-scope group (scope 2 or smaller), which the filter"
                                  " always passes"),
    (("2001:db8::10", "ff12::/16"), "holds only link-scope groups"),
    (("fe80::10", "ff0e::1"), "source fe80::10 is link-local (fe80::/10)"),
    (("::1", "ff0e::1"), "source ::1 cannot be the address of a sender"),
    (("::ffff:192.0.2.10", "ff0e::1"), "write the IPv4 address 192.0.2.10 instead"),
    (("2001:db8::10/64", "ff0e::1"), "did you mean 2001:db8::/64?"),
    (("2001:db8::/64", "ff0e::/16"), "a source prefix and a group prefix"),
    (("2001:db8::10", "239.1.1.1"), "of different address families"),
    (("2001:db8::zz", "ff0e::1"), "source '2001:db8::zz' is not an IP address"),
])
def test_bad_ipv6_input_is_one_sentence_and_exit_2_and_sends_nothing(router6, args, needle):
    backend, core, opts = router6
    one_error(run(*opts, "add-sender", *args, "--max-ttl", "8"), 2, needle)
    one_error(run(*opts, "del-sender", *args), 2, needle)
    assert core.datagrams == [] and backend.executions == 0


def test_v1_carries_no_ipv6(router6):
    backend, core, opts = router6
    v1_opts = [opts[0], opts[1], "--v1", "--timeout", "0.05", "--tries", "3"]
    one_error(run(*v1_opts, "add-sender", TRUSTED, "ff0e::1", "--max-ttl", "8"), 2,
              "v1 carries only IPv4 addresses, not source 2001:db8::10")
    assert core.datagrams == []


SSM6 = b"""v=0\r
o=operator 3900000001 1 IN IP6 2001:db8:10::20\r
s=Campus radio (IPv6 SSM)\r
t=0 0\r
m=audio 5004 RTP/AVP 96\r
c=IN IP6 FF3E::8000:1\r
a=source-filter: incl IN IP6 FF3E::8000:1 2001:DB8:10::20\r
m=video 5006 RTP/AVP 97\r
c=IN IP6 ff3e::8000:2\r
a=source-filter: incl IN IP6 ff3e::8000:2 2001:db8:10::21 2001:db8:10::22\r
"""


ASM6 = b"""v=0\r
o=- 79 1 IN IP6 2001:db8:10::30\r
s=IPv6 lobby\r
c=IN IP6 ff15::db8:7\r
t=0 0\r
m=video 5004 RTP/AVP 33\r
"""


def sessions_by_name(opts) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(run(*opts, "sessions", "--json").stdout)}


def test_server_mode_authorizes_an_ipv6_session_with_the_default_hop_limit(server):  # noqa: F811
    fleet, opts = server
    fleet.announce(SSM6, announcer="2001:db8:10::20")
    fleet.announce(ASM6, announcer="2001:db8:10::30")
    by_name = sessions_by_name(opts)
    radio, lobby = by_name["Campus radio (IPv6 SSM)"], by_name["IPv6 lobby"]
    assert radio["groups"] == [{"address": "ff3e::8000:1", "ttl": None}, {"address": "ff3e::8000:2", "ttl": None}]
    assert radio["sources"] == ["2001:db8:10::20", "2001:db8:10::21", "2001:db8:10::22"]
    assert radio["origin"] == radio["announcer"] == "2001:db8:10::20"

    r = run(*opts, "authorize", radio["id"])
    assert r.exit_code == 0, r.output
    assert "2001:db8:10::20 -> ff3e::8000:1 max-ttl 255" in r.stdout  # no TTL in an IPv6 c= line
    want = {("2001:db8:10::20", "ff3e::8000:1"): 255, ("2001:db8:10::21", "ff3e::8000:2"): 255,
            ("2001:db8:10::22", "ff3e::8000:2"): 255}
    wait(lambda: fleet.held("r1") == fleet.held("r2") == want)
    for name in ("r1", "r2"):  # what went over the wire to each router
        assert sorted(bodies(fleet.requests(name), v2.Command.REPLACE)) == sorted(
            rule_record(6, 128, 128, 255, s, g) for s, g in want)

    # --max-ttl caps the hop limit; replacing the session's rules needs --replace
    one_error(run(*opts, "authorize", radio["id"], "--max-ttl", "16"), 1, "use replace")
    assert run(*opts, "authorize", radio["id"], "--max-ttl", "16", "--replace").exit_code == 0
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {k: 16 for k in want})

    # any-source: the sender is named, never assumed; the suggestion is the IPv6 origin
    one_error(run(*opts, "authorize", lobby["id"]), 2, "suggestions: 2001:db8:10::30")
    one_error(run(*opts, "authorize", lobby["id"], "--sender", "192.0.2.55"), 2,
              "no sender of its address family (IPv6) was given")
    out = json.loads(run(*opts, "authorize", lobby["id"], "--sender", "2001:DB8:10::30", "--json").stdout)
    assert [(x["source"], x["group"], x["max_ttl"]) for x in out["rules"]] == [
        ("2001:db8:10::30", "ff15::db8:7", 255)]
    wait(lambda: fleet.held("r2").get(("2001:db8:10::30", "ff15::db8:7")) == 255)
    assert run(*opts, "revoke", radio["id"]).exit_code == 0
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {("2001:db8:10::30", "ff15::db8:7"): 255})


def test_server_mode_ipv6_prefixes_are_stored_listed_and_fanned_out_in_canonical_text(server):  # noqa: F811
    fleet, opts = server
    out = json.loads(run(*opts, "add-sender", "2001:DB8:0:1:0:0::/64", "ff0e:0::db8:1", "--max-ttl", "8",
                         "--json").stdout)
    assert out["result"] == "added" and (out["rule"]["source"], out["rule"]["group"]) == (SUBNET, "ff0e::db8:1")
    assert run(*opts, "add-sender", TRUSTED, "ff15::/16", "--max-ttl", "4", "--bps", "2M").exit_code == 0
    subnet, scope = Rule.make(SUBNET, "ff0e::db8:1", 8), Rule.make(TRUSTED, "ff15::/16", 4, bps="2M")
    wait(lambda: all(fleet.call(lambda b=b: dict(b.rules)) == {subnet.key: subnet, scope.key: scope}
                     for b in fleet.backends.values()))
    assert rule_record(6, 64, 128, 8, "2001:db8:0:1::", "ff0e::db8:1") in bodies(fleet.requests("r2"),
                                                                                 v2.Command.REPLACE)
    rows = {(r["source"], r["group"]): r for r in json.loads(run(*opts, "list", "--json").stdout)}
    assert set(rows) == {(SUBNET, "ff0e::db8:1"), (TRUSTED, "ff15::/16")} and rows[(TRUSTED, "ff15::/16")]["bps"] == 2e6
    with sqlite3.connect(fleet.workdir / "mauthserver.db") as db:
        assert sorted(db.execute("SELECT source, grp, max_ttl FROM rules")) == [
            (SUBNET, "ff0e::db8:1", 8), (TRUSTED, "ff15::/16", 4)]
    one_error(run(*opts, "add-sender", SUBNET, "ff0e::db8:1", "--max-ttl", "9"), 1, "already exists")
    one_error(run(*opts, "add-sender", "fe80::1", "ff0e::db8:1", "--max-ttl", "9"), 2, "link-local")
    assert run(*opts, "del-sender", "2001:db8:0:1:0::/64", "FF0E::DB8:1").exit_code == 0
    wait(lambda: fleet.held("r1") == fleet.held("r2") == {(TRUSTED, "ff15::/16"): 4})
    assert key_record(64, 128, "2001:db8:0:1::", "ff0e::db8:1") in bodies(fleet.requests("r1"), v2.Command.REMOVE)
    one_error(run(*opts, "del-sender", SUBNET, "ff0e::db8:1"), 1, "no rule")
    audit = json.loads(run(*opts, "audit", "--limit", "1", "--json").stdout)
    assert audit[0]["action"] == "del-sender" and audit[0]["detail"] == {"source": SUBNET, "group": "ff0e::db8:1"}


def test_server_mode_denied_pairs_and_events_carry_ipv6_in_canonical_text(server):  # noqa: F811
    fleet, opts = server
    fleet.set_denied("r1", [("2001:db8:0:2:0::66", "FF0E::DB8:9", "unauthorized", 7, 700, 3)])
    data = json.loads(run(*opts, "denied", "--json").stdout)
    assert [(d["router"], d["source"], d["group"], d["last_ttl"]) for d in data] == [
        ("r1", "2001:db8:0:2::66", "ff0e::db8:9", 3)]

    errors = fleet.once_subscribed(fleet.mediator.add_rule, "2001:DB8:0:2::66", "ff0e::db8:9", 8, actor="test")
    event = json.loads(run(*opts, "events", "--count", "1", "--json").stdout)
    assert errors == [] and event["event"] == "rule.added"
    assert (event["rule"]["source"], event["rule"]["group"]) == ("2001:db8:0:2::66", "ff0e::db8:9")
