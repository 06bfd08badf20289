"""musersd --backend nfqueue in the namespace lab: the policy enforced from user space.

The real daemon runs in the lab's router namespace with its iptables rules
(iptables as installed here, nf_tables or legacy) queueing the multicast of
in0 to it. Assertions are about what arrived on the router (its sockets
joined on in0 get exactly what the verdicts let through), the iptables rules
in the router namespace, and the counters musersd reports over the protocol
(COUNTERS, LIST, DENIED) - the same questions the XDP lab tests ask.

Frames the kernel drops before the IPv4 hooks (malformed headers, VLAN tags
on an interface without that VLAN, non-IPv4) never reach the queue: for
those rows of the case table the test asserts that no counter moved and that
nothing arrived. Forwarding itself is the router tier's subject (the SAP test
marked `router`).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from lab.daemons import Musersd, mauthctl, write_key_file
from lab.netns import inside, patience, sh
from lab.topology import Lab, Route
from lab.traffic import Receiver, Sender
from mauthcore.constants import SAP_GROUPS, SAP_PORT
from mauthcore.protocol.model import Mode, Reason
from mauthcore.rules import Rule, RuleKey
from musersd.nfqueue import NfqueueFilter
from musersd.policy import decide
from tests.integration.conftest import AUTH, AUTH2, GROUP, GROUP2, GROUP3, GROUPS, ROGUE, SOURCES
from tests.policy_cases import ALL_RULES, CASES, PREFIX_CASES, as_rules
from tests.support.waiting import poll_for

TABLE = CASES + PREFIX_CASES  # every row holds under ALL_RULES

pytestmark = pytest.mark.integration

N = 40
QUEUE = 4242
SAP_GROUP = SAP_GROUPS[0]  # IPv4 global scope
IP_TTL, IP_RECVTTL = 2, 12  # <linux/in.h>; the socket module lacks IP_RECVTTL


def seed(lab: Lab, rules) -> None:
    """Write `rules` into the state directory musersd will restore them from (no daemon running)."""
    f = NfqueueFilter(lab.workdir / "state").open()
    try:
        f.apply(rules)
    finally:
        f.close()


def nfqueue_musersd(lab: Lab, key, *extra: str, name: str = "musersd") -> Musersd:
    return Musersd(lab, lab.workdir / "pins", key_file=key, name=name,
                   extra=["--backend", "nfqueue", "--queue-num", str(QUEUE), "--state-dir",
                          str(lab.workdir / "state"), *extra])


def our_rules(lab: Lab) -> list[str]:
    """The mangle PREROUTING rules of the router that musersd tags as its own."""
    out = sh("iptables", "-w", "10", "-t", "mangle", "-S", "PREROUTING", ns=lab.router.ns)
    return [line for line in out.splitlines() if "mauth-" in line]


def call(d: Musersd, method: str, *args):
    c = d.client()
    try:
        with inside(d.lab.router.ns):
            return getattr(c, method)(*args)
    finally:
        c.close()


def reasons(d: Musersd) -> dict[Reason, int]:
    return {r: c.packets for r, c in call(d, "counters").by_reason().items()}


def delivered(lab: Lab, flows, ttl=4) -> dict:
    return lab.deliver(flows, N, ttl=ttl)


@pytest.fixture
def key(lab):
    return write_key_file(lab.workdir / "router.key")


@pytest.fixture
def nfq(lab, key):
    d = nfqueue_musersd(lab, key).start()
    yield d
    if d.proc.poll() is None:
        d.stop()


# ---------------------------------------------------------------------------
# the case table on the wire
# ---------------------------------------------------------------------------


class Tap:
    """What the router's IP stack delivers from its guarded link after the filter's verdict.

    The router joins every routable group of the table on in0 (sockets that
    only hold the membership), and raw sockets of the table's protocols read
    every such packet the stack accepted: NFQUEUE's verdict comes first, so a
    packet read here is one the filter let through, with the TTL it carried
    on (rewritten for SAP, not yet decremented by any forwarding).
    """

    PROTOCOLS = (socket.IPPROTO_UDP, socket.IPPROTO_TCP)

    def __init__(self, lab: Lab, groups: list[str]):
        link = lab.senders["s1"]
        self.groups = set(groups)
        self.members: list[socket.socket] = []
        self.socks: list[socket.socket] = []
        with inside(lab.router.ns):
            for g in groups:
                m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                m.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(g) + socket.inet_aton(link.router_addr))
                self.members.append(m)
            for proto in self.PROTOCOLS:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
                s.setblocking(False)
                self.socks.append(s)

    def drain(self, quiet: float = 0.2) -> list[tuple[str, str, int]]:
        """(source, group, TTL) of the table's packets the stack delivered, until none came for `quiet` s."""
        got = []
        while ready := select.select(self.socks, [], [], quiet)[0]:
            for s in ready:
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    dst = socket.inet_ntoa(data[16:20])
                    if dst in self.groups:
                        got.append((socket.inet_ntoa(data[12:16]), dst, data[8]))
        return got

    def close(self) -> None:
        for s in self.members + self.socks:
            s.close()


def reaches_ipv4_hooks(frame: bytes) -> bool:
    """Untagged IPv4 that ip_rcv() accepts: what an iptables rule on the interface can see."""
    return frame[12:14] == b"\x08\x00" and decide(frame, ALL_RULES).reason != "malformed"


def routable_groups() -> list[str]:
    """Every routable multicast group a row of the table sends to."""
    groups = set()
    for case in TABLE:
        v = decide(case.frame, ALL_RULES)
        if v.key is not None:
            groups.add(str(v.key[1]))
    return sorted(groups)


@pytest.fixture
def case_lab():
    with Lab(senders={"s1": SOURCES}) as lab:
        yield lab


def _fragment(frame: bytes) -> bool:
    return int.from_bytes(frame[20:22], "big") & 0x3FFF != 0  # more fragments, or an offset


def arrived(frame: bytes, mode: Mode) -> list[tuple[str, str, int]]:
    """What the router's stack delivers when `frame` comes in on in0: (source, group, TTL) or nothing.

    A packet to a routable group that the filter lets through arrives with its
    TTL as sent (or as the SAP rewrite set it), whatever that TTL; a lone
    fragment waits for reassembly and is never delivered by itself (its
    verdict shows in the counters alone); everything else (link-local groups,
    which the router does not join here, malformed frames, unicast to nobody)
    does not arrive.
    """
    v = decide(frame, ALL_RULES, mode)
    ttl = v.new_ttl if v.new_ttl is not None else v.ttl
    if not reaches_ipv4_hooks(frame) or v.key is None or v.action != "pass" or _fragment(frame):
        return []
    return [(str(v.key[0]), str(v.key[1]), ttl)]


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR], ids=str)
def test_case_table_on_the_wire(case_lab, mode):
    """Each row of the case table, injected on the sender's link: counters and delivery as the model says."""
    lab = case_lab
    seed(lab, as_rules(ALL_RULES))  # exact, prefix and rate-limited rules, restored by musersd at start
    d = nfqueue_musersd(lab, write_key_file(lab.workdir / "router.key")).start()
    assert call(d, "counters").rule_count == len(ALL_RULES)
    call(d, "mode", str(mode))
    tap = Tap(lab, routable_groups())
    with inside(lab.senders["s1"].ns):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        raw.bind(("eth0", 0))
    wrong = []
    try:
        for case in TABLE:
            if len(case.frame) < 14:
                continue
            model = decide(case.frame, ALL_RULES, mode)
            before = reasons(d)
            raw.send(case.frame)
            queued = reaches_ipv4_hooks(case.frame)
            # A queued frame moves a counter (waited for); any other must move none within 0.3 s.
            moved = poll_for(lambda before=before: {str(r) for r, n in reasons(d).items() if n != before.get(r, 0)},
                             patience(2.0) if queued else 0.3)
            expect = {model.reason} if queued else set()  # the others never reach an IPv4 hook
            if moved != expect:
                wrong.append((case.name, "counters", moved, expect))
            got, expect_got = tap.drain(), arrived(case.frame, mode)
            if got != expect_got:
                wrong.append((case.name, "arrived", got, expect_got))
    finally:
        raw.close()
        tap.close()
        d.stop()
    assert wrong == []
    # The table exercises both outcomes, so the comparison above could have failed either way.
    outcomes = {bool(arrived(c.frame, mode)) for c in TABLE if len(c.frame) >= 14}
    assert outcomes == {True, False}


# ---------------------------------------------------------------------------
# real forwarding
# ---------------------------------------------------------------------------


def test_policy_holds_on_forwarded_traffic_and_stats_name_the_backend(lab, nfq, key):
    call(nfq, "add", Rule.make(AUTH, GROUP, 8))
    call(nfq, "add", Rule.make(AUTH2, GROUP2, 2))
    rx = lab.receiver([GROUP, GROUP2, GROUP3])
    auth, auth2, rogue = lab.sender(AUTH), lab.sender(AUTH2), lab.sender(ROGUE)
    auth.send(GROUP, N, ttl=8)  # at max: delivered
    auth.send(GROUP, N, ttl=2)  # below max: delivered
    auth.send(GROUP, N, ttl=9)  # over max: dropped
    auth2.send(GROUP2, N, ttl=2)  # at max 2: delivered
    auth2.send(GROUP2, N, ttl=3)  # over: dropped
    rogue.send(GROUP, N, ttl=2)  # unknown sender: dropped
    auth.send(GROUP3, N, ttl=2)  # authorized sender, other group: dropped
    rx.drain()
    assert (rx.got(AUTH, GROUP), rx.got(AUTH2, GROUP2), rx.got(ROGUE, GROUP), rx.got(AUTH, GROUP3)) == (2 * N, N, 0, 0)

    c = reasons(nfq)
    assert (c[Reason.PASSED], c[Reason.TTL], c[Reason.UNAUTHORIZED]) == (3 * N, 2 * N, 2 * N)
    rules = {(str(e.rule.source), str(e.rule.group)): e.packets for e in call(nfq, "list_all")}
    assert rules == {(AUTH, GROUP): 2 * N, (AUTH2, GROUP2): N}
    denied = {(str(e.source), str(e.group)): e for e in call(nfq, "denied_all")}
    assert denied[(ROGUE, GROUP)].packets == N and denied[(ROGUE, GROUP)].reason == Reason.UNAUTHORIZED
    assert denied[(AUTH, GROUP)].reason == Reason.TTL and denied[(AUTH, GROUP)].last_ttl == 9

    r = mauthctl(lab, lab.router.ns, "--router", "127.0.0.1:7575", "--key-file", str(key), "--json", "stats")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["backend"] == "nfqueue" and stats["rules"] == 2 and stats["mode"] == "enforce"
    r = mauthctl(lab, lab.router.ns, "--router", "127.0.0.1:7575", "--key-file", str(key), "stats")
    assert "backend nfqueue" in r.stdout
    assert "in0 (nfqueue)" in nfq.log()


def test_rule_changes_take_effect_immediately(lab, nfq):
    rx = lab.receiver([GROUP])
    rogue = lab.sender(ROGUE)
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == 0
    call(nfq, "add", Rule.make(ROGUE, GROUP, 4))
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == N
    call(nfq, "replace", Rule.make(ROGUE, GROUP, 3))
    rogue.send(GROUP, N, ttl=4)  # now over its max TTL
    assert rx.drain()[(ROGUE, GROUP)] == N
    call(nfq, "remove", RuleKey.make(ROGUE, GROUP))
    rogue.send(GROUP, N, ttl=2)
    assert rx.drain()[(ROGUE, GROUP)] == N


def test_prefix_and_rate_limited_rules_on_forwarded_traffic(lab, key):
    seed(lab, [Rule.make("192.0.2.10/31", GROUP3, 4),  # AUTH and AUTH2, not ROGUE
               Rule.make(AUTH, GROUP, 8, pps=50)])  # a bucket of 5 packets, refilled at 50 a second
    d = nfqueue_musersd(lab, key).start()
    try:
        assert delivered(lab, [(AUTH, GROUP3), (AUTH2, GROUP3), (ROGUE, GROUP3)]) == {
            (AUTH, GROUP3): N, (AUTH2, GROUP3): N, (ROGUE, GROUP3): 0}
        (entry,) = [e for e in call(d, "list_all") if str(e.rule.group) == GROUP3]
        assert str(entry.rule.source) == "192.0.2.10/31" and entry.packets == 2 * N

        burst = 300
        rx = lab.receiver([GROUP])
        lab.sender(AUTH).send(GROUP, burst, ttl=4)  # as fast as a socket sends: far above 50 a second
        got = rx.drain()[(AUTH, GROUP)]
        rx.close()
        assert 0 < got < burst // 2
        assert reasons(d)[Reason.RATE] == burst - got
        denied = {(str(e.source), str(e.group)): (e.reason, e.packets) for e in call(d, "denied_all")}
        assert denied == {(AUTH, GROUP): (Reason.RATE, burst - got), (ROGUE, GROUP3): (Reason.UNAUTHORIZED, N)}
    finally:
        d.stop()


def test_a_flood_does_not_starve_the_command_protocol(lab, nfq):
    """Commands are served while a flood keeps the queue full (the queue is read without blocking the loop)."""
    done = threading.Event()
    sent = []

    def send() -> None:  # for longer than a client retries (about 6 s): the queue never runs dry meanwhile
        rogue, end = lab.sender(ROGUE), time.monotonic() + 8
        while time.monotonic() < end:
            rogue.send(GROUP, 10_000, ttl=4)
            sent.append(10_000)
        done.set()

    # One client, one session, as a manager holds: a new client per command would open a session
    # per command and, at this pace, fill the bounded session table (BUSY) within the 8 s.
    client = nfq.client()
    t = threading.Thread(target=send)
    t.start()
    try:
        changes = 0
        while not done.is_set() or changes < 3:
            with inside(nfq.lab.router.ns):
                client.add(Rule.make(AUTH, GROUP2, 4))
                client.remove(RuleKey.make(AUTH, GROUP2))
            changes += 1
    finally:
        t.join()
        client.close()
    assert changes >= 3
    judged = reasons(nfq)
    assert 0 < judged[Reason.UNAUTHORIZED] <= sum(sent)  # what did not fit in the queue the kernel dropped
    assert delivered(lab, [(ROGUE, GROUP)]) == {(ROGUE, GROUP): 0}
    assert nfq.proc.poll() is None


def test_monitor_mode_passes_everything_and_counts_would_be_drops(lab, nfq):
    call(nfq, "add", Rule.make(AUTH, GROUP, 8))
    call(nfq, "mode", "monitor")
    before = reasons(nfq)
    got = delivered(lab, [(ROGUE, GROUP), (AUTH, GROUP3)])
    assert got == {(ROGUE, GROUP): N, (AUTH, GROUP3): N}
    after = reasons(nfq)
    assert after[Reason.UNAUTHORIZED] - before[Reason.UNAUTHORIZED] == 2 * N
    call(nfq, "mode", "enforce")
    assert delivered(lab, [(ROGUE, GROUP)]) == {(ROGUE, GROUP): 0}


def router_hears_link_local(lab: Lab, count: int = 10) -> int:
    """Send `count` datagrams to 224.0.0.123 from ROGUE; return how many a socket on the router got."""
    with inside(lab.router.ns):
        ll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ll.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ll.bind(("224.0.0.123", 5004))
        mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.123"), socket.inet_aton(lab.senders["s1"].router_addr))
        ll.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    ll.settimeout(1)
    lab.sender(ROGUE).send("224.0.0.123", count, ttl=1)
    got = 0
    try:
        while got < count:
            ll.recv(100)
            got += 1
    except TimeoutError:
        pass
    finally:
        ll.close()
    return got


def test_link_local_and_unicast_are_never_queued(lab, nfq):
    recv_host = lab.receivers["r1"]
    with inside(recv_host.ns):
        uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uni.bind((recv_host.addrs[0], 6000))
        uni.settimeout(2)
    with inside(lab.router.ns):
        ll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ll.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ll.bind(("224.0.0.123", 5004))
        mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.123"), socket.inet_aton(lab.senders["s1"].router_addr))
        ll.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        ll.settimeout(2)
    before = reasons(nfq)
    rogue = lab.sender(ROGUE)
    for _ in range(10):
        rogue.sock.sendto(b"unicast", (recv_host.addrs[0], 6000))
    rogue.send("224.0.0.123", 10, ttl=1)
    got = (sum(1 for _ in range(10) if uni.recv(100)), sum(1 for _ in range(10) if ll.recv(100)))
    uni.close()
    ll.close()
    assert got == (10, 10)
    after = reasons(nfq)
    assert after[Reason.NOT_MULTICAST] - before[Reason.NOT_MULTICAST] >= 10
    assert after[Reason.LINK_LOCAL] - before[Reason.LINK_LOCAL] >= 10
    assert after[Reason.UNAUTHORIZED] == before[Reason.UNAUTHORIZED]


@pytest.fixture
def sap_lab():
    routes = [Route(g, s) for s in SOURCES for g in GROUPS] + [Route(SAP_GROUP, s) for s in (AUTH, ROGUE)]
    with Lab(senders={"s1": SOURCES}, routes=routes, forwarding=True) as lab:
        yield lab


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_sap_from_an_unregistered_announcer_is_heard_by_the_router_and_not_forwarded(sap_lab):
    lab = sap_lab
    d = nfqueue_musersd(lab, write_key_file(lab.workdir / "router.key")).start()
    try:
        call(d, "add", Rule.make(AUTH, SAP_GROUP, 16))  # an announcer allowed beyond this router
        with inside(lab.router.ns):
            heard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            heard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            heard.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            heard.bind((SAP_GROUP, SAP_PORT))
            mreq = struct.pack("4s4s", socket.inet_aton(SAP_GROUP), socket.inet_aton(lab.senders["s1"].router_addr))
            heard.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        heard.settimeout(2)
        rx = Receiver(lab.receivers["r1"].ns, lab.receivers["r1"].addrs[0], [SAP_GROUP], port=SAP_PORT)
        for src in (ROGUE, AUTH):
            s = Sender(lab.host_of(src).ns, src, port=SAP_PORT)
            s.send(SAP_GROUP, 10, ttl=16)
            s.close()
        ttls: dict[str, list[int]] = {ROGUE: [], AUTH: []}
        for _ in range(20):
            _, anc, _, (src, _) = heard.recvmsg(2048, socket.CMSG_SPACE(4))
            ttls[src] += [struct.unpack("i", data)[0] for level, kind, data in anc if kind == IP_TTL]
        heard.close()
        rx.drain()
        assert ttls == {ROGUE: [1] * 10, AUTH: [16] * 10}  # the router hears both, the stranger with TTL 1
        assert (rx.got(ROGUE, SAP_GROUP), rx.got(AUTH, SAP_GROUP)) == (0, 10)  # only the authorized one goes on
        rx.close()
        assert reasons(d)[Reason.SAP_LOCAL] == 10
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# restarts, crashes and the iptables rules
# ---------------------------------------------------------------------------


def test_restart_keeps_rules_and_exit_removes_exactly_our_iptables_rules(lab, key):
    operator = ["-i", "in0", "-d", "239.9.9.9", "-m", "comment", "--comment", "operator", "-j", "ACCEPT"]
    sh("iptables", "-w", "10", "-t", "mangle", "-A", "PREROUTING", *operator, ns=lab.router.ns)
    d = nfqueue_musersd(lab, key).start()
    assert len(our_rules(lab)) == 4
    assert any("NFQUEUE --queue-num 4242" in line and "bypass" not in line for line in our_rules(lab))
    call(d, "add", Rule.make(AUTH, GROUP, 8))
    state_id = call(d, "hello").state_id
    assert d.stop() == 0
    assert our_rules(lab) == []  # a clean stop turns the filter off...
    listing = sh("iptables", "-w", "10", "-t", "mangle", "-S", "PREROUTING", ns=lab.router.ns)
    assert "--comment operator -j ACCEPT" in listing  # ...and leaves everybody else's rules alone
    assert delivered(lab, [(ROGUE, GROUP)]) == {(ROGUE, GROUP): N}  # unfiltered while stopped

    d.start()
    assert call(d, "hello").state_id == state_id
    assert [(str(e.rule.source), e.rule.max_ttl) for e in call(d, "list_all")] == [(AUTH, 8)]
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    d.stop()


def test_a_crash_fails_closed_and_the_restart_adopts_the_rules(lab, key):
    d = nfqueue_musersd(lab, key).start()
    call(d, "add", Rule.make(AUTH, GROUP, 8))
    d.kill9()
    left = our_rules(lab)
    assert len(left) == 4  # still in place, with nobody on the queue...
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): 0, (ROGUE, GROUP): 0}  # ...fail closed
    assert router_hears_link_local(lab) == 10  # control traffic is never queued: it still flows

    d.start()
    assert "replaced 4 iptables rules left by an earlier musersd" in d.log(since_start=True)
    assert sorted(our_rules(lab)) == sorted(left)  # the same rules, once
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}
    d.stop()
    assert our_rules(lab) == []


def test_a_second_musersd_cannot_take_over_a_guarded_interface(lab, nfq, key):
    mine = our_rules(lab)
    other = nfqueue_musersd(lab, key, "--queue-num", "4343", "--listen", "127.0.0.1:7576", name="second")
    other.spawn()
    assert other.proc.wait(timeout=60) == 2
    assert "in0 is guarded by another running musersd (NFQUEUE 4242)" in other.log()
    assert our_rules(lab) == mine
    call(nfq, "add", Rule.make(AUTH, GROUP, 8))
    assert delivered(lab, [(AUTH, GROUP), (ROGUE, GROUP)]) == {(AUTH, GROUP): N, (ROGUE, GROUP): 0}


def test_a_start_that_fails_leaves_no_iptables_rules(lab, key):
    with inside(lab.router.ns):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocker.bind(("0.0.0.0", 7575))
    try:
        d = nfqueue_musersd(lab, key)
        d.spawn()
        assert d.proc.wait(timeout=60) == 2
        assert "cannot listen on 0.0.0.0:7575" in d.log()
        assert our_rules(lab) == []
    finally:
        blocker.close()
    r = subprocess.run(["ip", "netns", "exec", lab.router.ns, str(Musersd(lab, lab.workdir).argv()[0]),
                        "--iface", "nosuch0", "--backend", "nfqueue", "--state-dir", str(lab.workdir / "s2")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == "musersd: interface 'nosuch0' does not exist"
    assert our_rules(lab) == []
