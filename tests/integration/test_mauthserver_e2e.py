"""mauthserver end to end: mauthctl --server commands become real forwarding decisions.

The lab: sender host s1 -> router (smcrouted, musersd guarding in0, mauthserver)
-> receiver r1. Every assertion about traffic is about what r1 actually got.
"""

from __future__ import annotations

import json

import pytest

from lab.topology import Lab, Route
from tests.integration.mauthserver_lab import MauthserverProc, MusersdProc, announce, make_secrets

pytestmark = pytest.mark.integration

AUTH = "192.0.2.10"
AUTH2 = "192.0.2.11"
ROGUE = "192.0.2.12"
GROUP = "239.1.1.1"
GROUP2 = "239.1.1.2"
SSM_GROUPS = ["232.1.1.1", "232.1.1.2"]
N = 30


@pytest.fixture
def fleet(pin_dir):
    sources = [AUTH, AUTH2, ROGUE]
    routes = [Route(g, s) for s in sources for g in [GROUP, GROUP2, *SSM_GROUPS]]
    with Lab(senders={"s1": sources}, routes=routes) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"},
                                 extra=["--sap-timeout", "30"]).start()
        yield lab, musersd, server


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_add_and_del_sender_through_the_server(fleet):
    lab, musersd, server = fleet
    rx = lab.receiver([GROUP])
    auth, rogue = lab.sender(AUTH), lab.sender(ROGUE)
    auth.send(GROUP, N, ttl=4)
    assert rx.drain()[(AUTH, GROUP)] == 0  # nothing authorized yet

    out = _json(server.ctl("--json", "add-sender", AUTH, GROUP, "--max-ttl", "8"))
    assert out["result"] == "added"
    rules = server.converged()
    assert [(r["source"], r["group"], r["max_ttl"], r["routers"]["r1"]["state"]) for r in rules] == [
        (AUTH, GROUP, 8, "applied")]
    assert musersd.rules() == {(AUTH, GROUP): 8}

    auth.send(GROUP, N, ttl=4)
    auth.send(GROUP, N, ttl=9)  # above the max TTL: dropped
    rogue.send(GROUP, N, ttl=4)
    rx.drain()
    assert (rx.got(AUTH, GROUP), rx.got(ROGUE, GROUP)) == (N, 0)

    listed = _json(server.ctl("--json", "list"))
    assert listed[0]["source"] == AUTH and listed[0]["group"] == GROUP and listed[0]["max_ttl"] == 8
    assert listed[0]["routers"]["r1"]["state"] == "applied"

    assert server.ctl("del-sender", AUTH, GROUP).returncode == 0
    server.converged()
    assert musersd.rules() == {}
    rx.reset()
    auth.send(GROUP, N, ttl=4)
    assert rx.drain()[(AUTH, GROUP)] == 0

    # Refusals keep their exit codes: exists with another TTL -> 1, nothing to delete -> 1, bad input -> 2.
    assert server.ctl("add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
    assert server.ctl("add-sender", AUTH, GROUP, "--max-ttl", "9").returncode == 1
    assert server.ctl("del-sender", AUTH2, GROUP).returncode == 1
    assert server.ctl("add-sender", AUTH, "10.1.1.1", "--max-ttl", "9").returncode == 2
    server.converged()  # the add above went out: r1 is up again, and mauthctl must say so
    routers = _json(server.ctl("--json", "routers"))
    assert routers[0]["name"] == "r1" and routers[0]["state"] == "up"


SSM_SDP = """v=0
o=alice 3900000001 3900000001 IN IP4 192.0.2.200
s=Lab SSM feed
i=two groups, one declared sender
c=IN IP4 232.1.1.1/16/2
t=0 0
a=source-filter: incl IN IP4 * 192.0.2.10
m=video 5004 RTP/AVP 33
"""

ASM_SDP = """v=0
o=- 3900000002 1 IN IP4 198.51.100.2
s=Lab any-source
c=IN IP4 239.1.1.2/8
t=0 0
m=audio 5004 RTP/AVP 0
"""


def test_authorize_a_session_then_revoke_it(fleet, tmp_path):
    lab, musersd, server = fleet
    r1 = lab.receivers["r1"]
    (tmp_path / "ssm.sdp").write_text(SSM_SDP)
    (tmp_path / "asm.sdp").write_text(ASM_SDP)
    # Announced from the receiver's network (not guarded: SAP from there needs no rule).
    announce(lab, r1.ns, tmp_path / "ssm.sdp", "--source", r1.addrs[0], "--count", "1")
    announce(lab, r1.ns, tmp_path / "asm.sdp", "--source", r1.addrs[0], "--count", "1")
    sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 2)
    by_name = {s["name"]: s for s in sessions}
    ssm, asm = by_name["Lab SSM feed"], by_name["Lab any-source"]
    assert ssm["origin"] == "192.0.2.200" and ssm["announcer"] == r1.addrs[0]
    assert ssm["groups"] == [{"address": "232.1.1.1", "ttl": 16}, {"address": "232.1.1.2", "ttl": 16}]
    assert ssm["sources"] == [AUTH]
    assert asm["sources"] == [] and asm["groups"] == [{"address": GROUP2, "ttl": 8}]
    listed = _json(server.ctl("--json", "sessions"))
    assert {s["id"] for s in listed} == {ssm["id"], asm["id"]}

    rx = lab.receiver(SSM_GROUPS + [GROUP2])
    auth = lab.sender(AUTH)
    out = _json(server.ctl("--json", "authorize", ssm["id"][:6], "--expire-with-session"))
    assert sorted((r["source"], r["group"], r["max_ttl"]) for r in out["rules"]) == [
        (AUTH, "232.1.1.1", 16), (AUTH, "232.1.1.2", 16)]
    server.converged()
    assert musersd.rules() == {(AUTH, "232.1.1.1"): 16, (AUTH, "232.1.1.2"): 16}
    for g in SSM_GROUPS:
        auth.send(g, N, ttl=16)
    lab.sender(ROGUE).send(SSM_GROUPS[0], N, ttl=4)
    rx.drain()
    assert [rx.got(AUTH, g) for g in SSM_GROUPS] == [N, N]
    assert rx.got(ROGUE, SSM_GROUPS[0]) == 0

    # Any-source: the sender must be named; origin/announcer are offered, not assumed.
    refused = server.ctl("authorize", asm["id"])
    assert refused.returncode == 2 and "198.51.100.2" in refused.stderr
    out = _json(server.ctl("--json", "authorize", asm["id"], "--sender", AUTH2, "--max-ttl", "4"))
    assert [(r["source"], r["group"], r["max_ttl"]) for r in out["rules"]] == [(AUTH2, GROUP2, 4)]
    server.converged()
    lab.sender(AUTH2).send(GROUP2, N, ttl=4)
    assert rx.drain()[(AUTH2, GROUP2)] == N

    # Revoke: the session's rules go, the traffic stops.
    assert server.ctl("revoke", ssm["id"]).returncode == 0
    server.converged()
    assert musersd.rules() == {(AUTH2, GROUP2): 4}
    rx.reset()
    for g in SSM_GROUPS:
        auth.send(g, N, ttl=16)
    rx.drain()
    assert [rx.got(AUTH, g) for g in SSM_GROUPS] == [0, 0]

    # A rule that expires with its session goes when the session is deleted.
    out = _json(server.ctl("--json", "authorize", ssm["id"], "--expire-with-session"))
    server.converged()
    assert len(musersd.rules()) == 3
    announce(lab, r1.ns, tmp_path / "ssm.sdp", "--source", r1.addrs[0], "--delete")
    server.wait_for(lambda: server.call("sessions"), lambda s: [x["name"] for x in s] == ["Lab any-source"])
    server.wait_for(lambda: server.call("rules"), lambda rs: len(rs) == 1)
    server.converged()
    assert musersd.rules() == {(AUTH2, GROUP2): 4}  # not tied to expiry: stays
    audit = server.call("audit", 5)
    assert any(e["action"] == "session-ended" and e["detail"]["reason"] == "deleted" for e in audit)


def test_fan_out_to_two_routers_with_one_down(pin_dir, tmp_path):
    """Two musersd (one per guarded interface, each a "router" of its own) behind one mauthserver."""
    s2_src = "192.0.2.70"
    routes = [Route(GROUP, AUTH), Route(GROUP, s2_src)]
    with Lab(senders={"s1": [AUTH], "s2": [s2_src]}, routes=routes) as lab:
        key, token = make_secrets(lab.workdir)
        pin_dir.mkdir()
        ra = MusersdProc(lab, pin_dir / "a", key, port=7575, ifaces=["in0"]).start()
        rb = MusersdProc(lab, pin_dir / "b", key, port=7577, ifaces=["in1"], name="musersd-b").start()
        server = MauthserverProc(lab, key, token, routers={"a": "127.0.0.1:7575", "b": "127.0.0.1:7577"},
                                 extra=["--no-sap"]).start()
        for src in (AUTH, s2_src):
            assert server.ctl("add-sender", src, GROUP, "--max-ttl", "8").returncode == 0
        rules = server.converged()
        assert all(set(r["routers"]) == {"a", "b"} and r["state"] == "applied" for r in rules)
        want = {(AUTH, GROUP): 8, (s2_src, GROUP): 8}
        assert ra.rules() == want and rb.rules() == want
        rx = lab.receiver([GROUP])
        lab.sender(AUTH).send(GROUP, N, ttl=8)
        lab.sender(s2_src).send(GROUP, N, ttl=8)
        rx.drain()
        assert (rx.got(AUTH, GROUP), rx.got(s2_src, GROUP)) == (N, N)

        rb.stop()  # router b goes away; a keeps getting commands
        server.wait_for(lambda: server.call("routers"), lambda rs: {r["name"]: r["state"] for r in rs}["b"] == "down")
        assert server.ctl("del-sender", s2_src, GROUP).returncode == 0
        assert server.ctl("add-sender", AUTH, GROUP2, "--max-ttl", "3").returncode == 0
        server.wait_for(lambda: server.call("rules"), lambda rs: all(
            r["routers"]["a"]["state"] == "applied" and r["routers"]["b"]["state"] == "pending" for r in rs
            if r["group"] == GROUP2))
        assert ra.rules() == {(AUTH, GROUP): 8, (AUTH, GROUP2): 3}
        listed = json.loads(server.ctl("--json", "list").stdout)
        assert {(r["group"], r["state"]) for r in listed} == {(GROUP, "applied"), (GROUP2, "pending")}
        rb.start()  # back with its pinned maps: b catches up, including the removal
        server.converged()
        assert rb.rules() == {(AUTH, GROUP): 8, (AUTH, GROUP2): 3}
        rx.reset()
        lab.sender(s2_src).send(GROUP, N, ttl=8)
        assert rx.drain()[(s2_src, GROUP)] == 0
