"""Crash recovery, the reason mauthserver exists (docs/design.md).

* kill -9 of mauthserver in the middle of 1,000 commands: after a restart
  every acknowledged command is in its state and on the router;
* a router restarted with empty maps (new state_id) re-converges by itself;
* a router restarted with its pinned maps (new epoch only) is checked, not
  rewritten; a router that is down while commands arrive gets them later;
* sessions, and the rules that expire with them, survive a mediator crash.

Bounded: every wait has a deadline; the commands go to the router
namespace's loopback only.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lab.netns import patience
from lab.topology import Lab, Route
from tests.integration.mauthserver_lab import (
    CommandClient,
    MauthserverProc,
    MusersdProc,
    announce,
    command_key,
    commands,
    expected,
    make_secrets,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

AUTH = "192.0.2.10"
GROUP = "239.1.1.1"
N = 20


@pytest.fixture
def fleet(pin_dir):
    with Lab(senders={"s1": [AUTH, "192.0.2.11", "192.0.2.12"]}, routes=[Route(GROUP, AUTH)]) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}).start()
        yield lab, musersd, server


def test_kill9_mauthserver_during_1000_commands(fleet):
    lab, musersd, server = fleet
    cmds = commands(1000)
    client = CommandClient([server], cmds)
    client.start()
    wait_until(lambda: len(client.acked) >= 400 or not client.is_alive(), patience(120),
               "400 commands acknowledged", interval=0.005)
    acked_before = len(client.acked)
    server.kill9()
    assert 400 <= acked_before < 1000, "the crash must land in the middle of the commands"
    wait_until(lambda: client.interrupted or not client.is_alive(), patience(30), "the client to find mauthserver down")
    server.start()
    client.join(timeout=180)
    assert not client.is_alive() and client.error is None, client.error
    assert client.interrupted >= 1
    assert client.acked == cmds  # every command was acknowledged exactly once, in order

    want = expected(cmds)
    rules = server.converged(timeout=120)
    assert {(r["source"], r["group"]): r["max_ttl"] for r in rules} == want
    assert all(r["routers"]["r1"]["state"] == "applied" for r in rules)
    assert musersd.rules() == want
    audit = server.call("audit", 10000)
    assert sum(1 for e in audit if e["action"] in ("add-sender", "del-sender")) >= len(cmds)


def test_router_restarted_empty_reconverges_by_itself(fleet, pin_dir):
    lab, musersd, server = fleet
    want = {}
    for i in range(40):
        src, grp = command_key(i)
        server.call("add_rule", src, grp, 8)
        want[(src, grp)] = 8
    server.call("add_rule", AUTH, GROUP, 8)
    want[(AUTH, GROUP)] = 8
    server.converged()
    assert musersd.rules() == want
    first_state = server.call("routers")[0]["state_id"]

    # 1. musersd restarts with its pinned maps: a new epoch, the same state_id, nothing to re-install.
    musersd.kill9()
    musersd.start()
    server.wait_for(lambda: server.call("routers"), lambda rs: rs[0]["counters"]["restarts_seen"] == 1)
    server.converged()
    assert server.call("routers")[0]["state_id"] == first_state
    assert server.call("routers")[0]["counters"]["state_losses"] == 0

    # 2. The router loses its tables (maps unpinned, daemon restarted): it comes back empty.
    musersd.kill9()
    shutil.rmtree(pin_dir)
    musersd.start()
    # Nobody asks: mauthserver notices the new state_id itself.
    wait_until(lambda: musersd.rules() == want, patience(60), "mauthserver to re-install the lost rules",
               interval=0.2)
    routers = server.call("routers")
    assert routers[0]["state_id"] != first_state
    assert routers[0]["counters"]["state_losses"] == 1
    assert "lost its rules" in server.log()
    rx = lab.receiver([GROUP])
    lab.sender(AUTH).send(GROUP, N, ttl=8)
    lab.sender("192.0.2.12").send(GROUP, N, ttl=8)
    rx.drain()
    assert (rx.got(AUTH, GROUP), rx.got("192.0.2.12", GROUP)) == (N, 0)


def test_commands_for_a_router_that_is_down_wait_for_it(fleet):
    lab, musersd, server = fleet
    musersd.stop()
    server.wait_for(lambda: server.call("routers"), lambda rs: rs[0]["state"] == "down", timeout=30)
    out = server.call("add_rule", AUTH, GROUP, 8)  # acknowledged: committed, fan-out pending
    assert out["result"] == "added" and out["rule"]["routers"]["r1"]["state"] == "pending"
    # The stimulus is time passing with the router down (the running daemon takes no clock): a
    # second of fan-out retries must leave the command pending, not lost and not marked applied.
    time.sleep(1.0)
    assert server.call("rules")[0]["routers"]["r1"]["state"] == "pending"
    musersd.start()
    server.converged(timeout=30)
    assert musersd.rules() == {(AUTH, GROUP): 8}


SDP = """v=0
o=- 42 1 IN IP4 198.51.100.2
s=Survives restarts
c=IN IP4 232.5.5.5/12
t=0 0
a=source-filter: incl IN IP4 232.5.5.5 192.0.2.11
m=video 5004 RTP/AVP 33
"""


def test_sessions_and_their_rules_survive_a_mediator_crash(fleet, tmp_path: Path):
    lab, musersd, server = fleet
    r1 = lab.receivers["r1"]
    (tmp_path / "s.sdp").write_text(SDP)
    announce(lab, r1.ns, tmp_path / "s.sdp", "--source", r1.addrs[0], "--count", "1")
    (session,) = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
    server.call("authorize", session["id"], expire_with_session=True)
    server.converged()
    server.kill9()
    server.start()
    (again,) = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
    assert (again["id"], again["name"], again["groups"]) == (session["id"], session["name"], session["groups"])
    assert again["first_heard"] == pytest.approx(session["first_heard"])
    rules = server.converged()
    assert [(r["source"], r["group"], r["session"]) for r in rules] == [("192.0.2.11", "232.5.5.5", session["id"])]
    # The deletion heard after the restart still takes the session's rules away.
    announce(lab, r1.ns, tmp_path / "s.sdp", "--source", r1.addrs[0], "--delete")
    server.wait_for(lambda: server.call("rules"), lambda rs: rs == [])
    server.converged()
    assert musersd.rules() == {}
