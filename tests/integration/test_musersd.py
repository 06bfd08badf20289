"""musersd, the real daemon, in the namespace lab with real forwarded multicast.

Clients are the real `mauthctl` run in a namespace, raw v1 datagrams built
from docs/protocol.md's Version 1 alone, and the protocol library through a lossy,
duplicating relay. Crashes are real signals to the real process.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess

import pytest

from lab.daemons import Musersd, mauthctl, write_key_file
from lab.netns import LabError, inside, patience
from lab.relay import LossyRelay
from mauthcore.protocol.keys import load_keys
from mauthcore.protocol.udp import RouterClient
from mauthcore.rules import Rule
from musersd.dataplane import xdp_status
from tests.integration.conftest import AUTH, AUTH2, GROUP, GROUP2, ROGUE
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

N = 40
ROUTER_IN = "192.0.2.1"  # the router's address on the senders' link


@pytest.fixture
def key(lab):
    return write_key_file(lab.workdir / "router.key")


@pytest.fixture
def musersd(lab, pin_dir, key):
    d = Musersd(lab, pin_dir, key_file=key).start()
    yield d
    if d.proc.poll() is None:
        d.stop()


def ctl_v2(lab, key, *args, ns=None):
    return mauthctl(lab, ns or lab.senders["s1"].ns, "--router", f"{ROUTER_IN}:7575", "--key-file", str(key), *args)


def ctl_v1(lab, *args, ns=None):
    return mauthctl(lab, ns or lab.router.ns, "--router", "127.0.0.1:7575", "--v1", *args)


def delivered(lab, flows, ttl=4):
    """Send N packets per (source, group) and return what the receiver got."""
    return lab.deliver(flows, N, ttl=ttl)


def stats_of(d: Musersd) -> dict[str, int]:
    mark = len(d.log())
    d.signal(signal.SIGUSR1)
    tail = d.wait_log("protocol stats:", mark)
    line = [ln for ln in tail.splitlines() if "protocol stats:" in ln][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def unread(lab) -> int | None:
    """Bytes waiting to be read on musersd's protocol socket (Recv-Q of UDP port 7575 at the router);
    None when there is no such socket."""
    with inside(lab.router.ns):
        out = subprocess.run(["ss", "-uanH", "sport = :7575"], capture_output=True, text=True, check=True).stdout
    queues = [int(line.split()[1]) for line in out.splitlines() if line.strip()]
    return sum(queues) if queues else None


def test_mauthctl_v1_and_v2_drive_real_traffic(lab, musersd, key):
    assert delivered(lab, [(AUTH, GROUP)])[(AUTH, GROUP)] == 0
    r = ctl_v1(lab, "add-sender", AUTH, GROUP, "--max-ttl", "8")
    assert r.returncode == 0, r.stderr
    r = ctl_v2(lab, key, "add-sender", AUTH2, GROUP2, "--max-ttl", "4")
    assert r.returncode == 0, r.stderr
    got = delivered(lab, [(AUTH, GROUP), (AUTH2, GROUP2), (ROGUE, GROUP)])
    assert got == {(AUTH, GROUP): N, (AUTH2, GROUP2): N, (ROGUE, GROUP): 0}

    listed = json.loads(ctl_v2(lab, key, "--json", "list").stdout)
    assert {(r["source"], r["group"], r["max_ttl"], r["packets"]) for r in listed} == {
        (AUTH, GROUP, 8, N), (AUTH2, GROUP2, 4, N)}
    stats = json.loads(ctl_v2(lab, key, "--json", "stats").stdout)
    assert stats["rules"] == 2 and stats["mode"] == "enforce" and stats["backend"] == "xdp"
    assert stats["reasons"]["passed"]["packets"] == 2 * N
    assert stats["reasons"]["unauthorized"]["packets"] == 2 * N  # the first probe, then ROGUE
    denied = json.loads(ctl_v2(lab, key, "--json", "denied").stdout)
    assert [(d["source"], d["group"], d["reason"], d["packets"]) for d in denied] == [(ROGUE, GROUP, "unauthorized", N)]

    # Errors: exit status and one sentence on stderr.
    r = ctl_v2(lab, key, "add-sender", AUTH, GROUP, "--max-ttl", "8")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl_v2(lab, key, "del-sender", ROGUE, GROUP)
    assert r.returncode == 1
    r = ctl_v2(lab, key, "add-sender", AUTH, "10.0.0.1", "--max-ttl", "8")
    assert r.returncode == 2 and "not a multicast address" in r.stderr

    assert ctl_v1(lab, "del-sender", AUTH, GROUP).returncode == 0
    assert ctl_v2(lab, key, "del-sender", AUTH2, GROUP2).returncode == 0
    got = delivered(lab, [(AUTH, GROUP), (AUTH2, GROUP2)])
    assert got == {(AUTH, GROUP): 0, (AUTH2, GROUP2): 0}


def test_v1_from_an_address_not_allowed_has_no_effect(lab, musersd, key):
    r = mauthctl(lab, lab.senders["s1"].ns, "--router", f"{ROUTER_IN}:7575", "--v1", "--tries", "2",
                 "--timeout", "0.2", "add-sender", ROGUE, GROUP, "--max-ttl", "8")
    assert r.returncode == 3 and "did not answer" in r.stderr
    assert json.loads(ctl_v2(lab, key, "--json", "list").stdout) == []
    assert stats_of(musersd)["v1_refused"] >= 1


def _v1(sock, seq, cmd, src, grp, ttl, expect_reply=True):
    """A v1 exchange written from docs/protocol.md's Version 1 alone."""
    sock.send(struct.pack("!BB4s4sB", seq, cmd, socket.inet_aton(src), socket.inet_aton(grp), ttl))
    try:
        reply = sock.recv(16)
    except TimeoutError:
        return None
    return reply


def test_v1_wire_format_and_at_most_once(lab, musersd, key):
    with inside(lab.router.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", 7575))
    s.settimeout(1.0)
    ACK, ERROR = 0x00, 0x01
    try:
        assert _v1(s, 7, 0x00, AUTH, GROUP, 8) == bytes([ACK, 7])  # add
        assert _v1(s, 8, 0x01, AUTH, GROUP, 0) == bytes([ACK, 8])  # remove
        # A late duplicate of the add (older seq) must not execute again.
        s.settimeout(0.5)
        _v1(s, 7, 0x00, AUTH, GROUP, 8)
        # The exact duplicate of the last request is answered from memory, not executed.
        assert _v1(s, 8, 0x01, AUTH, GROUP, 0) == bytes([ACK, 8])
        rules = json.loads(ctl_v2(lab, key, "--json", "list").stdout)
        assert rules == []
        assert delivered(lab, [(AUTH, GROUP)])[(AUTH, GROUP)] == 0
        # ERROR for an invalid group, a bad TTL and an unknown command.
        assert _v1(s, 9, 0x00, AUTH, "10.1.1.1", 8) == bytes([ERROR, 9])
        assert _v1(s, 10, 0x00, AUTH, GROUP, 0) == bytes([ERROR, 10])
        assert _v1(s, 11, 0x05, AUTH, GROUP, 8) == bytes([ERROR, 11])
        # Other lengths are ignored.
        for junk in (b"\x0c\x00" + b"\x00" * 8, b"\x0c\x00" + b"\x00" * 10, b"", b"\x01\x02"):
            s.send(junk)
            with pytest.raises(socket.timeout):
                s.recv(16)
        # Serial-number arithmetic (RFC 1982): 11 -> 255 is *older* (distance 244), so ignored...
        assert _v1(s, 255, 0x00, AUTH, GROUP, 8) is None
        # ...while 11 -> 100 -> 200 -> 44 each move forward, the last one across the wrap.
        assert _v1(s, 100, 0x00, AUTH, GROUP, 8) == bytes([ACK, 100])
        assert _v1(s, 200, 0x01, AUTH, GROUP, 0) == bytes([ACK, 200])
        assert _v1(s, 44, 0x00, AUTH, GROUP, 8) == bytes([ACK, 44])
    finally:
        s.close()
    assert delivered(lab, [(AUTH, GROUP)])[(AUTH, GROUP)] == N
    st = stats_of(musersd)
    assert st["v1_duplicates"] >= 1


def test_hostile_v2_is_rejected_and_counted(lab, musersd, key):
    keys = load_keys(key)
    wrong = lab.workdir / "wrong.key"
    write_key_file(wrong)
    r = ctl_v2(lab, wrong, "--tries", "2", "--timeout", "0.2", "add-sender", ROGUE, GROUP, "--max-ttl", "8")
    assert r.returncode == 3 and "BAD_AUTH" in r.stderr
    other_id = lab.workdir / "other-id.key"
    write_key_file(other_id, key_id=9)
    r = ctl_v2(lab, other_id, "--tries", "2", "--timeout", "0.2", "add-sender", ROGUE, GROUP, "--max-ttl", "8")
    assert r.returncode == 3

    # A rule that must come through the flood intact.
    assert ctl_v2(lab, key, "add-sender", AUTH2, GROUP2, "--max-ttl", "4").returncode == 0

    # Capture a valid request on the wire, then replay and forge it.
    with inside(lab.senders["s1"].ns):
        c = RouterClient(ROUTER_IN, 7575, keys)
        tap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tap.connect((ROUTER_IN, 7575))
    tap.settimeout(0.5)
    sent: list[bytes] = []
    real_send = c._send
    c._send = lambda d: (sent.append(d), real_send(d))[1]
    c.add(Rule.make(AUTH, GROUP, 8))
    c.remove(Rule.make(AUTH, GROUP, 8).key)
    add_req = sent[-2]
    before = stats_of(musersd)
    tap.send(add_req)  # replay of an executed request from another socket
    forged = bytearray(add_req)
    forged[-40] ^= 0x01  # a bit of the body
    tap.send(bytes(forged))
    for _ in range(200):  # random junk, v2 magic and not
        tap.send(b"MAU\x02" + os.urandom(random.randint(0, 200)))
        tap.send(os.urandom(random.randint(0, 300)))
    # Every datagram that reached the socket has been read (the rest were dropped by a full buffer).
    wait_until(lambda: unread(lab) == 0, patience(10), "musersd to read every datagram on its socket")
    after = stats_of(musersd)
    for _ in range(5000):  # and a flood nobody counts exactly (the socket buffer drops some)
        tap.send(os.urandom(random.choice((2, 11, 60, 300, 1400))))
    c.close()
    tap.close()
    listed = json.loads(ctl_v2(lab, key, "--json", "list").stdout)
    # The replayed add did not run, and the existing rule is intact.
    assert [(r["source"], r["group"], r["max_ttl"]) for r in listed] == [(AUTH2, GROUP2, 4)]
    assert after["executed"] == before["executed"]  # nothing hostile reached the backend
    assert after["replays"] - before["replays"] == 1  # the captured add
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    # The replay, the forgery and 400 datagrams of junk, less whatever a full socket buffer dropped.
    assert 200 <= moved["datagrams"] <= 402, moved
    rejected = sum(moved.get(k, 0) for k in ("unrecognized", "not_v2", "unknown_key", "bad_auth", "malformed",
                                             "replays", "duplicates_elsewhere", "stale_session", "stale_epoch",
                                             "v1_refused"))
    assert rejected == moved["datagrams"], moved  # every one of them refused
    assert after["bad_auth"] - before["bad_auth"] >= 1  # the forgery at least
    assert musersd.proc.poll() is None  # alive
    assert ctl_v2(lab, key, "add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
    assert delivered(lab, [(AUTH, GROUP), (AUTH2, GROUP2)]) == {(AUTH, GROUP): N, (AUTH2, GROUP2): N}


def test_keys_rotate_without_downtime(lab, musersd, key):
    """Add a new key, SIGHUP, move clients to it, drop the old one, SIGHUP: no command is refused meanwhile."""
    old_line = [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("#")][0]
    new_secret = os.urandom(32).hex()
    new_only = lab.workdir / "new.key"
    write_key_file(new_only, key_id=2, secret=bytes.fromhex(new_secret))
    old_only = lab.workdir / "old.key"
    old_only.write_text(old_line + "\n")
    os.chmod(old_only, 0o600)

    key.write_text(f"{old_line}\n2 {new_secret}\n")  # the router accepts both
    mark = len(musersd.log())
    musersd.signal(signal.SIGHUP)
    musersd.wait_log("(2 keys)", mark)
    assert ctl_v2(lab, old_only, "add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
    assert ctl_v2(lab, new_only, "add-sender", AUTH2, GROUP2, "--max-ttl", "4").returncode == 0

    key.write_text(f"2 {new_secret}\n")  # the old key retired
    mark = len(musersd.log())
    musersd.signal(signal.SIGHUP)
    musersd.wait_log("(1 keys)", mark)
    assert ctl_v2(lab, new_only, "--json", "list").returncode == 0
    r = ctl_v2(lab, old_only, "--tries", "2", "--timeout", "0.2", "list")
    assert r.returncode == 3 and "UNKNOWN_KEY" in r.stderr

    key.write_text("2 nothex\n")  # a broken key file is refused; the running keys stay
    mark = len(musersd.log())
    musersd.signal(signal.SIGHUP)
    assert "key file rejected" in musersd.wait_log("key file rejected", mark)
    assert ctl_v2(lab, new_only, "--json", "list").returncode == 0


def test_kill9_keeps_enforcing_and_the_restart_adopts_the_rules(lab, musersd, key, pin_dir):
    assert ctl_v2(lab, key, "add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
    before = json.loads(ctl_v2(lab, key, "--json", "stats").stdout)
    musersd.kill9()
    # Nobody in user space now: the kernel still enforces the last rules.
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    musersd.start()
    after = json.loads(ctl_v2(lab, key, "--json", "stats").stdout)
    assert after["state_id"] == before["state_id"]  # same tables: nothing lost
    assert after["epoch"] != before["epoch"]  # but a new daemon
    listed = json.loads(ctl_v2(lab, key, "--json", "list").stdout)
    assert [(r["source"], r["group"], r["packets"]) for r in listed] == [(AUTH, GROUP, N)]
    assert "adopted pinned maps" in musersd.log()


def test_sigterm_fails_closed_and_detach_on_exit_opens(lab, musersd, key, pin_dir):
    assert ctl_v2(lab, key, "add-sender", AUTH, GROUP, "--max-ttl", "8").returncode == 0
    assert musersd.stop() == 0
    with inside(lab.router.ns):
        assert xdp_status("in0")[0] is not None
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    musersd.extra = ["--detach-on-exit"]
    musersd.start()
    assert musersd.stop() == 0
    with inside(lab.router.ns):
        assert xdp_status("in0") == (None, 0)
    assert delivered(lab, [(ROGUE, GROUP)]) == {(ROGUE, GROUP): N}  # unguarded now, as asked


def test_sighup_applies_the_difference_and_rejects_a_broken_file(lab, pin_dir, key):
    conf = lab.workdir / "mauth.conf"
    conf.write_text(f"# initial\n{AUTH} {GROUP} 8\n{AUTH2} {GROUP2} 4\n")
    d = Musersd(lab, pin_dir, key_file=key, extra=["--config", str(conf)]).start()
    try:
        assert delivered(lab, [(AUTH, GROUP), (AUTH2, GROUP2), (ROGUE, GROUP)]) == {
            (AUTH, GROUP): N, (AUTH2, GROUP2): N, (ROGUE, GROUP): 0}
        assert ctl_v2(lab, key, "list").returncode == 0  # the daemon now holds a LIST order of the old table
        conf.write_text(f"{AUTH} {GROUP} 8\n{ROGUE} {GROUP} 4\n")  # AUTH2 out, ROGUE in
        mark = len(d.log())
        d.signal(signal.SIGHUP)
        assert "1 added, 0 replaced, 1 removed" in d.wait_log("applied", mark)
        assert delivered(lab, [(AUTH, GROUP), (AUTH2, GROUP2), (ROGUE, GROUP)]) == {
            (AUTH, GROUP): N, (AUTH2, GROUP2): 0, (ROGUE, GROUP): N}
        listed = {(r["source"], r["group"]): r for r in json.loads(ctl_v2(lab, key, "--json", "list").stdout)}
        assert set(listed) == {(AUTH, GROUP), (ROGUE, GROUP)}  # LIST shows the reloaded table
        assert listed[(AUTH, GROUP)]["packets"] == 2 * N  # unchanged rule kept its counters

        conf.write_text(f"{AUTH} {GROUP} 8\n{AUTH2} 10.9.9.9 4\n{ROGUE} {GROUP} 4\n")
        mark = len(d.log())
        d.signal(signal.SIGHUP)
        tail = d.wait_log("rule file rejected", mark)
        assert "mauth.conf:2:" in tail and "not a multicast address" in tail
        assert set(listed) == {(r["source"], r["group"]) for r in
                               json.loads(ctl_v2(lab, key, "--json", "list").stdout)}
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_broken_startup_configuration_is_one_clear_sentence(lab, pin_dir, key):
    conf = lab.workdir / "bad.conf"
    conf.write_text(f"{AUTH} {GROUP} 300\n")
    for extra, message in [
        (["--config", str(conf)], "bad.conf:1: max TTL 300 is outside 1-255"),
        (["--iface", "nope0"], "interface 'nope0' does not exist"),
        (["--legacy-allow", "banana"], "is not an address or CIDR prefix"),
        (["--rpf-iface", "lo"], "--rpf-iface lo is not one of the guarded interfaces (--iface)"),
    ]:
        d = Musersd(lab, pin_dir, key_file=key, extra=extra)
        with pytest.raises(LabError):
            d.start(timeout=30)
        assert d.proc.wait(10) == 2
        assert message in d.log()
    lax = lab.workdir / "lax.key"
    write_key_file(lax)
    os.chmod(lax, 0o644)
    d = Musersd(lab, pin_dir, key_file=lax)
    with pytest.raises(LabError):
        d.start(timeout=30)
    assert d.proc.wait(10) == 2


def test_at_most_once_through_a_lossy_duplicating_relay(lab, musersd, key):
    """2,000 commands through 30% loss and 10% duplication: exact final set, each executed once."""
    keys = load_keys(key)
    rng = random.Random(7)
    pool = [Rule.make(f"192.0.2.{10 + i % 40}", f"239.2.{i // 40}.{1 + i % 200}", 1 + i % 60) for i in range(120)]
    intended: dict = {}
    before = stats_of(musersd)
    with inside(lab.router.ns):
        relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", 7575), loss=0.30, dup=0.10, seed=11).start()
        client = RouterClient(*relay.address, keys, timeout=0.02, tries=40, max_timeout=0.2)
    try:
        for _ in range(2000):
            rule = rng.choice(pool)
            if rule.key in intended:
                client.remove(rule.key)  # NOT_FOUND here would mean a remove ran twice
                del intended[rule.key]
            else:
                client.add(rule)  # EXISTS here would mean an add ran twice
                intended[rule.key] = rule
    finally:
        client.close()
        relay.close()
    assert relay.stats["dropped"] > 400 and relay.stats["duplicated"] > 100
    after = stats_of(musersd)
    # Every ADD and REMOVE executed exactly once; retransmitted HELLOs are read-only and also counted.
    hellos = after["requests_hello"] - before["requests_hello"]
    assert after["executed"] - before["executed"] == 2000 + hellos
    assert after["duplicates"] - before["duplicates"] > 100  # retransmissions answered from memory
    listed = json.loads(ctl_v2(lab, key, "--json", "list").stdout)
    assert {(r["source"], r["group"], r["max_ttl"]) for r in listed} == {
        (str(r.source), str(r.group), r.max_ttl) for r in intended.values()}


def test_tells_systemd_it_is_ready_and_feeds_the_watchdog(lab, pin_dir, key):
    """NOTIFY_SOCKET/WATCHDOG_USEC as systemd sets them for Type=notify, WatchdogSec=."""
    path = str(lab.workdir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    d = Musersd(lab, pin_dir, key_file=key)
    d.proc = lab.spawn(lab.router.ns, d.argv(), d.name, env=env)
    try:
        messages = []
        while sum("WATCHDOG=1" in m for m in messages) < 3:
            messages.append(sock.recv(4096).decode())
        assert "READY=1" in messages[0] and "serving" in d.log()
        d.signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1]:
            messages.append(sock.recv(4096).decode())
        assert d.proc.wait(20) == 0
    finally:
        sock.close()
        if d.proc.poll() is None:
            d.proc.kill()


def test_denied_pairs_zero_records_no_pairs_but_still_drops_and_counts(lab, pin_dir, key):
    """musersd --denied-pairs 0: drops are the same and counted by reason; the denied listing stays empty."""
    d = Musersd(lab, pin_dir, key_file=key, extra=["--denied-pairs", "0"]).start()
    try:
        assert "records no denied pairs" in d.log()
        assert delivered(lab, [(ROGUE, GROUP)])[(ROGUE, GROUP)] == 0
        out = ctl_v2(lab, key, "--json", "stats")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["reasons"]["unauthorized"]["packets"] == N
        out = ctl_v2(lab, key, "--json", "denied")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []
    finally:
        d.stop()
    # The same maps with recording on (the default): the pair shows up.
    d = Musersd(lab, pin_dir, key_file=key).start()
    try:
        assert delivered(lab, [(ROGUE, GROUP)])[(ROGUE, GROUP)] == 0
        out = ctl_v2(lab, key, "--json", "denied")
        assert [(e["source"], e["group"], e["packets"]) for e in json.loads(out.stdout)] == [(ROGUE, GROUP, N)]
    finally:
        d.stop()
