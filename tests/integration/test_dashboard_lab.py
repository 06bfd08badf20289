"""The dashboard against the real system: musersd guarding the lab router, mauthserver, real SAP, real multicast.

A session is announced with SAP from a host on the receiving side (r1);
its declared sender on s1 sends real multicast, which the XDP filter drops.
The dashboard (Textual's pilot, in the test process, talking to mauthserver
inside the router namespace) shows the session and the denied pair; one key
authorizes the session, and then the rule is in musersd's table, the
receiver gets the sender's packets and the denied pair leaves the pane.
A second test runs `mauthctl dashboard` for real in a detached tmux 80x24
inside the router namespace and reads the screen with capture-pane.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab.daemons import BIN
from lab.netns import inside, patience
from lab.topology import Lab, Route
from mauthclient.dashboard import Dashboard
from tests.integration.mauthserver_lab import MauthserverProc, MusersdProc, announce, make_secrets
from tests.support import waiting
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SENDER = "192.0.2.10"
ROGUE = "192.0.2.12"
GROUP = "239.1.1.1"
NAME = "Lab camera feed"
SDP = f"""v=0\r
o=- 4242 1 IN IP4 {SENDER}\r
s={NAME}\r
c=IN IP4 {GROUP}/16\r
t=0 0\r
a=source-filter: incl IN IP4 {GROUP} {SENDER}\r
m=video 5004 RTP/AVP 33\r
"""


@pytest.fixture
def system(pin_dir, tmp_path):
    routes = [Route(GROUP, s) for s in (SENDER, ROGUE)]
    with Lab(senders={"s1": [SENDER, ROGUE]}, routes=routes) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"},
                                 extra=["--sap-timeout", "120"]).start()
        server.converged()
        sdp = tmp_path / "camera.sdp"
        sdp.write_text(SDP)
        r1 = lab.receivers["r1"]
        announce(lab, r1.ns, sdp, "--source", r1.addrs[0], "--count", "1")
        sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
        yield lab, musersd, server, sessions[0]


async def until(pilot, predicate, timeout: float = 20.0, what: str | None = None) -> None:
    """Let the app run (pilot.pause between polls) until `predicate()` holds."""
    await waiting.until(predicate, patience(timeout), what, interval=0.1, pause=pilot.pause)


def rows(app: Dashboard, pane: str) -> dict[str, list[str]]:
    table = app.table(pane)
    return {rk.value: [str(c) for c in table.get_row(rk)] for rk in table.rows}


@pytest.mark.asyncio
async def test_authorize_from_the_dashboard_lets_the_traffic_through(system):
    lab, musersd, server, session = system
    rx = lab.receiver([GROUP])
    sender, rogue = lab.sender(SENDER), lab.sender(ROGUE)
    sender.send(GROUP, 20, ttl=4)
    rogue.send(GROUP, 20, ttl=4)
    assert rx.drain()[(SENDER, GROUP)] == 0  # nothing authorized: the filter drops it

    token = server.token_file.read_text().strip()
    with inside(lab.router.ns):  # the dashboard's sockets to mauthserver are made in the router namespace
        app = Dashboard(server.url, token, user="pilot", traffic_interval=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: session["id"] in rows(app, "sessions"), what="the announced session")
            row = rows(app, "sessions")[session["id"]]
            assert row[0] == NAME and row[2] == SENDER and row[5] == "no"
            # Both senders are being dropped: the Denied pane says who, and why.
            await pilot.press("3")
            await until(pilot, lambda: {f"{SENDER}|{GROUP}|unauthorized", f"{ROGUE}|{GROUP}|unauthorized"}
                        <= set(rows(app, "denied")), what="the denied pairs")

            await pilot.press("1")
            app.table("sessions").move_cursor(row=app.table("sessions").get_row_index(session["id"]))
            await pilot.press("a")
            await until(pilot, lambda: rows(app, "sessions")[session["id"]][5] == "yes", what="authorized")
            # The rule is in the router's own table, read with the router protocol.
            assert musersd.rules() == {(SENDER, GROUP): 16}
            await pilot.press("2")
            assert rows(app, "senders")[f"{SENDER}|{GROUP}"][:4] == [SENDER, GROUP, "16", "r1✓"]

            # Real multicast from the session's sender now reaches the receiver; the rogue's still does not.
            rx.reset()
            for _ in range(3):
                sender.send(GROUP, 20, ttl=4)
                rogue.send(GROUP, 20, ttl=4)
                await pilot.pause(0.6)
            rx.drain()
            assert rx.got(SENDER, GROUP) == 60 and rx.got(ROGUE, GROUP) == 0
            # The sender left the Denied pane (the router forgot it when the rule came); the rogue stays.
            await until(pilot, lambda: int(rows(app, "senders")[f"{SENDER}|{GROUP}"][6]) >= 60,
                        what="the rule's packet count")
            await pilot.press("3")
            denied = rows(app, "denied")
            assert f"{SENDER}|{GROUP}|unauthorized" not in denied
            assert f"{ROGUE}|{GROUP}|unauthorized" in denied
            await pilot.press("q")


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                          check=True).stdout


def _wait_screen(session: str, *needles: str, absent: tuple[str, ...] = (), timeout: float = 30.0) -> str:
    """The screen once it shows every needle and none of `absent`."""
    screen = [""]

    def shows() -> bool:
        screen[0] = _screen(session)
        return all(n in screen[0] for n in needles) and not any(a in screen[0] for a in absent)

    try:
        wait_until(shows, timeout, f"the dashboard to show {needles}" + (f" and not {absent}" if absent else ""),
                   interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; screen:\n{screen[0]}") from None
    return screen[0]


def test_the_dashboard_in_a_real_terminal(system):
    lab, musersd, server, session = system
    tmux = f"mauth-dash-{lab.tag}"
    cmd = (f"ip netns exec {lab.router.ns} {BIN / 'mauthctl'} --server {server.url}"
           f" --token-file {server.token_file} dashboard --interval 1; echo DASHBOARD-EXIT=$?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux, "-x", "80", "-y", "24", cmd], check=True)
    try:
        screen = _wait_screen(tmux, "● live", NAME, "1/1 routers up")
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "1 sessions │ 0 rules" in lines[0]
        assert "1 Sessions" in screen and "2 Senders" in screen and "3 Denied" in screen and "4 Routers" in screen
        assert SENDER in screen and f"{GROUP}/16" in screen
        subprocess.run(["tmux", "send-keys", "-t", tmux, "4"], check=True)
        screen = _wait_screen(tmux, "enforce", "127.0.0.1:7575")
        router_row = next(line for line in screen.splitlines() if line.strip().startswith("r1"))
        assert "up" in router_row and "enforce" in router_row
        subprocess.run(["tmux", "send-keys", "-t", tmux, "1"], check=True)
        _wait_screen(tmux, f"{GROUP}/16", absent=("127.0.0.1:7575",))  # the Sessions pane, not the Routers pane
        subprocess.run(["tmux", "send-keys", "-t", tmux, "a"], check=True)
        _wait_screen(tmux, "1 rules")
        assert server.converged()[0]["source"] == SENDER
        subprocess.run(["tmux", "send-keys", "-t", tmux, "q"], check=True)
        _wait_screen(tmux, "DASHBOARD-EXIT=0")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", tmux], capture_output=True)


def test_mauthctl_from_keygen_to_traffic_with_a_config_file(pin_dir, tmp_path):
    """An operator's day with the real daemons: keygen, a config file, then no flags at all."""
    routes = [Route(GROUP, s) for s in (SENDER, ROGUE)]
    with Lab(senders={"s1": [SENDER, ROGUE]}, routes=routes) as lab:
        key, token = lab.workdir / "router.key", lab.workdir / "api.token"
        for kind, path in (("key", key), ("token", token)):
            out = subprocess.run([str(BIN / "mauthctl"), "keygen", kind, str(path)], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}).start()
        server.converged()
        config = tmp_path / "mauthctl.toml"
        config.write_text(f'server = "{server.url}"\ntoken_file = "{token}"\nkey_file = "{key}"\n')

        def ctl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["ip", "netns", "exec", lab.router.ns, str(BIN / "mauthctl"), *args],
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "MAUTHCTL_CONFIG": str(config)})

        def ctl_json(*args: str):
            out = ctl(*args, "--json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        assert ctl_json("config")["settings"]["server"] == {"value": server.url, "from": "config file"}
        sdp = tmp_path / "camera.sdp"
        sdp.write_text(SDP)
        r1 = lab.receivers["r1"]
        announce(lab, r1.ns, sdp, "--source", r1.addrs[0], "--count", "1")
        session = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)[0]
        assert [s["name"] for s in ctl_json("sessions")] == [NAME]

        rx = lab.receiver([GROUP])
        lab.sender(SENDER).send(GROUP, 10, ttl=4)
        assert rx.drain()[(SENDER, GROUP)] == 0
        denied = server.wait_for(lambda: ctl_json("denied"), lambda d: any(x["source"] == SENDER for x in d))
        assert {(d["router"], d["source"], d["group"], d["reason"]) for d in denied} == {
            ("r1", SENDER, GROUP, "unauthorized")}

        out = ctl("authorize", session["id"][:6])
        assert out.returncode == 0 and f"{SENDER} -> {GROUP} max-ttl 16" in out.stdout, out.stderr
        server.converged()
        rules = ctl_json("list")
        assert [(r["source"], r["group"], r["max_ttl"], r["routers"]["r1"]["state"]) for r in rules] == [
            (SENDER, GROUP, 16, "applied")]
        lab.sender(SENDER).send(GROUP, 10, ttl=4)
        assert rx.drain()[(SENDER, GROUP)] == 10
        # The router forgot the pair when the rule came (the server may answer from a read up to 1 s old).
        server.wait_for(lambda: ctl_json("denied"), lambda d: d == [], timeout=10)
        # Direct mode: --router sets the configured server aside; the key file comes from the config.
        direct = ctl_json("--router", "127.0.0.1:7575", "list")
        assert [(r["source"], r["group"], r["max_ttl"], r["packets"]) for r in direct] == [(SENDER, GROUP, 16, 10)]
        assert ctl_json("routers")[0]["state"] == "up"
        out = ctl("revoke", session["id"])
        assert out.returncode == 0 and "1 rules removed" in out.stdout
        server.converged()
        assert musersd.rules() == {}
        # Errors stay one sentence with their exit codes.
        out = ctl("authorize", "ffffffffffffffff")
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "no announced session" in out.stderr
        out = ctl("--server", "http://127.0.0.1:1", "sessions")
        assert out.returncode == 3 and "cannot reach mauthserver" in out.stderr
