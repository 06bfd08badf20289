"""Two mauthservers on one PostgreSQL database: one leads, the other stands by and takes over.

The lab: a real PostgreSQL server (Debian's, tests/support/postgres.py, on a
Unix socket in a temporary directory), two mauthservers in the router
namespace (APIs on 127.0.0.1:7580 and :7581; both given the same router
protocol port, which only the leader binds), and two real musersd routers
there, each guarding one sender LAN with the XDP filter. Everything is
stopped and removed when a test ends, also when it fails.

* kill -9 of the leader in the middle of 1,000 commands sent through either
  instance: the standby leads within the stated bound, every acknowledged
  command is on both routers exactly as the sequence says (a command applied
  twice, say an old add after its removal, would show), and a router
  restarted empty during the outage is filled again;
* a dashboard's event stream on the standby sees the leader's changes;
* the leader cut from the database (its connection frozen mid-stream)
  sends its last datagram to a router before the new leader sends its first
  one, and exits.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from lab.netns import inside, patience
from lab.topology import Lab
from tests.integration.mauthserver_lab import (
    CommandClient,
    MauthserverProc,
    MusersdProc,
    command_key,
    commands,
    expected,
    make_secrets,
)
from tests.support.frozen_proxy import FrozenProxy, listening
from tests.support.postgres import PostgresServer, running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

LEASE = 2.0
BOUND = LEASE * 4 / 3  # a standby leads at most this long after the leader's last renewal (mauthserver/leader.py)
PORTS = {"r1": 7575, "r2": 7577}


@pytest.fixture(scope="module")
def postgres():
    with running() as server:
        yield server


class Pair:
    def __init__(self, lab: Lab, pg: PostgresServer, url: str, key: Path, token: Path) -> None:
        self.lab, self.pg, self.url = lab, pg, url
        self.key, self.token = key, token
        routers = {name: f"127.0.0.1:{port}" for name, port in PORTS.items()}
        self.servers = [
            MauthserverProc(lab, key, token, routers=routers, db=url, api_port=7580 + i, name=f"mauthserver-{n}",
                            extra=["--instance", n, "--lease", f"{LEASE:g}", "--no-sap"])
            for i, n in enumerate("ab")]

    def leader(self) -> MauthserverProc:
        for s in self.servers:
            if s.proc is not None and s.proc.poll() is None and "leading (term" in s.log(since_start=True):
                return s
        raise AssertionError("no mauthserver leads")

    def other(self, server: MauthserverProc) -> MauthserverProc:
        return next(s for s in self.servers if s is not server)


def _pins(pin_dir: Path, router: str) -> Path:
    """Router `router`'s own pin directory on the test's bpffs (removed with it by the `pin_dir` fixture)."""
    return pin_dir.parent / f"{pin_dir.name}-{router}"


def _routers(lab: Lab, pin_dir: Path, key: Path) -> dict[str, MusersdProc]:
    """Routers r1 and r2 in the router namespace, each guarding one sender LAN, started."""
    routers = {}
    for (name, port), iface in zip(PORTS.items(), lab.internal_ifaces):
        routers[name] = MusersdProc(lab, _pins(pin_dir, name), key, port=port, ifaces=[iface], name=f"musersd-{name}")
        routers[name].start()
    return routers


@pytest.fixture
def pair(postgres, pin_dir):
    with Lab(senders={"s1": ["192.0.2.10", "192.0.2.11"], "s2": ["192.0.2.70"]}) as lab:
        key, token = make_secrets(lab.workdir)
        routers = _routers(lab, pin_dir, key)
        db = postgres.new_database()
        pair = Pair(lab, postgres, postgres.url(db), key, token)
        a, b = pair.servers
        a.start()
        a.wait_log("leading (term")
        b.start()
        try:
            yield lab, pair, routers
        finally:
            postgres.drop_database(db)
            for name in PORTS:
                subprocess_rm(_pins(pin_dir, name))


def test_kill9_leader_during_1000_commands_standby_takes_over(pair):
    lab, p, routers = pair
    a, b = p.servers
    assert "standby until elected" in b.log(since_start=True)
    cmds = commands(1000)
    client = CommandClient(p.servers, cmds, timeout=240)
    client.start()
    wait_until(lambda: len(client.acked) >= 400 or not client.is_alive(), patience(120),
               "400 commands acknowledged", interval=0.005)
    mark = len(b.log())
    a.kill9()
    killed = time.monotonic()
    acked_at_kill = len(client.acked)
    # While there is no leader, router r1 restarts with empty maps.
    routers["r1"].stop()
    subprocess_rm(routers["r1"].pin_dir)
    routers["r1"].start()
    b.wait_log("leading (term 2)", after=mark, timeout=30)
    took = time.monotonic() - killed
    assert took <= patience(BOUND + 2.5), f"the standby took {took:.2f} s to lead"
    assert 400 <= acked_at_kill < 1000, "the kill must land in the middle of the commands"
    client.join(timeout=patience(240))
    assert not client.is_alive() and client.error is None, client.error
    assert client.interrupted >= 1
    assert client.acked == cmds  # every command acknowledged once, in order
    want = expected(cmds)
    rules = b.converged(timeout=120)
    assert {(r["source"], r["group"]): r["max_ttl"] for r in rules} == want
    assert all(r["routers"][n]["state"] == "applied" for r in rules for n in PORTS)
    for name, musersd in routers.items():
        assert musersd.rules() == want, f"router {name} differs from the acknowledged commands"
    # The old leader comes back as a standby and forwards to the new one.
    a.start()
    assert "standby until elected" in a.log(since_start=True)
    with inside(lab.router.ns):
        out = a.api().add_rule("192.0.2.70", "239.9.9.9", 9)
    assert out["result"] == "added"
    wait_until(lambda: routers["r2"].rules().get(("192.0.2.70", "239.9.9.9")) == 9, patience(30),
               "the rule added through the restarted standby on router r2")


def subprocess_rm(path: Path) -> None:
    import subprocess

    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_standby_event_stream_follows_the_leader(pair):
    lab, p, _ = pair
    a, b = p.servers
    seen: list[tuple[str, dict]] = []
    stop = threading.Event()

    def listen() -> None:
        with inside(lab.router.ns):
            for _id, kind, data in b.api().events(timeout=patience(30)):
                seen.append((kind, data))
                if stop.is_set():
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    wait_until(lambda: seen, patience(10), "the standby's hello")
    a.call("add_rule", "192.0.2.10", "239.5.5.5", 7)
    wait_until(lambda: any(k == "rule.added" and d["rule"]["group"] == "239.5.5.5" for k, d in seen), patience(10),
               "rule.added relayed to the standby's stream")
    # The standby's own views agree with the event (read from the database the leader wrote).
    wait_until(lambda: any(r["group"] == "239.5.5.5" for r in b.call("rules")), patience(10),
               "the rule in the standby's GET /rules")
    stop.set()
    a.call("add_rule", "192.0.2.10", "239.5.5.6", 7)  # wakes the listener so that it returns
    t.join(timeout=patience(10))


class UdpSniffer(threading.Thread):
    """Datagrams to the routers' ports on the router namespace's loopback: (time, source port, dest port)."""

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True)
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self.sock.bind(("lo", 0))
        self.seen: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            frame, addr = self.sock.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING or len(frame) < 14 + 28 or frame[14] >> 4 != 4 or frame[23] != 17:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", frame[14 + ihl:14 + ihl + 4])
            if dport in PORTS.values():
                self.seen.append((time.monotonic(), sport, dport))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.sock.close()


def _udp_ports(lab: Lab, pid: int) -> set[int]:
    """The local UDP ports of process `pid`'s sockets (read in the router namespace)."""
    import subprocess

    out = subprocess.run(["ip", "netns", "exec", lab.router.ns, "ss", "-uanpH"], capture_output=True, text=True,
                         check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]
            ports.add(int(local.rsplit(":", 1)[1]))
    return ports


def test_leader_cut_from_the_database_stops_before_the_new_leader_starts(postgres, pin_dir):
    with Lab(senders={"s1": ["192.0.2.10"], "s2": ["192.0.2.70"]}) as lab:
        key, token = make_secrets(lab.workdir)
        routers = _routers(lab, pin_dir, key)
        db = postgres.new_database()
        with inside(lab.router.ns):
            listener = listening()
        proxy = FrozenProxy(listener, str(postgres.dir / ".s.PGSQL.5432"))
        proxy.start()
        sniffer = UdpSniffer(lab.router.ns)
        try:
            p = Pair(lab, postgres, postgres.url(db), key, token)
            a, b = p.servers
            a.db = f"postgresql://postgres@127.0.0.1:{proxy.port}/{db}"  # the leader reaches it through the proxy
            a.start()
            a.wait_log("leading (term 1)")
            b.start()
            # Keep the leader busy with the routers: a few hundred rules to install.
            for i in range(300):
                a.call("add_rule", *command_key(i), 5)
            a_ports = _udp_ports(lab, a.proc.pid)
            assert a_ports, "the leader has sockets to its routers"
            sniffer.start()
            mark = len(b.log())
            proxy.freeze()
            cut = time.monotonic()
            b.wait_log("leading (term 2)", after=mark, timeout=30)
            elected = time.monotonic()
            assert a.proc.wait(timeout=patience(30)) == 1
            assert re.search(r"leadership lost .*exiting", a.log(since_start=True)), a.log(since_start=True)[-2000:]
            b.converged(timeout=120)
            sniffer.stop()
            from_a = [t for t, sport, _ in sniffer.seen if sport in a_ports]
            from_b = [t for t, sport, _ in sniffer.seen if sport not in a_ports]
            assert from_b, "the new leader talked to the routers"
            assert not from_a or max(from_a) < min(from_b), (
                f"the old leader sent {sum(1 for t in from_a if t >= min(from_b))} datagrams after the new one"
                " started")
            # The lease renewed last before the cut (at most lease/3 earlier) had to run out first.
            assert elected - cut >= LEASE * 2 / 3 - 0.1, "the new leader led before the old lease ran out"
            for name, musersd in routers.items():
                assert len(musersd.rules()) == 300, name
        finally:  # the lab stops the daemons it spawned
            for name in PORTS:
                subprocess_rm(_pins(pin_dir, name))
            if sniffer.is_alive():
                sniffer.stop()
            else:
                sniffer.sock.close()
            proxy.stop()
            postgres.drop_database(db)


SDP = """v=0\r
o=- 4242 {version} IN IP4 192.0.2.200\r
s=Follow me\r
t=0 0\r
m=video 5004 RTP/AVP 96\r
c=IN IP4 239.7.7.1/16\r
{more}"""
MORE = "m=audio 5006 RTP/AVP 97\r\nc=IN IP4 239.7.7.2/24\r\n"


def test_a_session_reannounced_after_a_fail_over_extends_its_rules_on_every_router(postgres, pin_dir):
    """Real SAP to both instances; authorize through the standby; the leader dies; a new version of the
    announcement with a second group, heard by the new leader, extends the rules on both routers."""
    from sap.sap import announcement, encode
    from tests.integration.test_mauthserver_sap import send_sap

    with Lab(senders={"s1": ["192.0.2.10", "192.0.2.20"], "s2": ["192.0.2.70"]}) as lab:
        key, token = make_secrets(lab.workdir)
        routers = _routers(lab, pin_dir, key)
        db = postgres.new_database()
        try:
            p = Pair(lab, postgres, postgres.url(db), key, token)
            for s in p.servers:
                s.extra.remove("--no-sap")
            a, b = p.servers
            a.start()
            a.wait_log("leading (term 1)")
            b.start()
            s1 = lab.senders["s1"]

            def announce_version(version: int, more: str = "") -> None:
                sdp = SDP.format(version=version, more=more).encode()
                send_sap(s1.ns, "192.0.2.20", encode(announcement("192.0.2.20", sdp)))

            announce_version(1)
            [session] = b.wait_for(lambda: b.call("sessions"), lambda s: len(s) == 1)
            out = b.call("authorize", session["id"], senders=["192.0.2.10"])  # forwarded to the leader
            assert [(r["group"], r["max_ttl"]) for r in out["rules"]] == [("239.7.7.1", 16)]
            # The leader dies: the standby leads, with the session and its authorization from the database.
            mark = len(b.log())
            a.kill9()
            b.wait_log("leading (term 2)", after=mark, timeout=30)
            announce_version(2, MORE)
            want = {("192.0.2.10", "239.7.7.1"): 16, ("192.0.2.10", "239.7.7.2"): 24}
            b.wait_for(lambda: b.call("rules"), lambda rs: {(r["source"], r["group"]) for r in rs} == set(want))
            b.converged(timeout=60)
            for name, musersd in routers.items():
                assert musersd.rules() == want, name
            audit = b.call("audit", 50)
            assert any(e["action"] == "session-followed" for e in audit)
        finally:
            for name in PORTS:
                subprocess_rm(_pins(pin_dir, name))
            postgres.drop_database(db)
