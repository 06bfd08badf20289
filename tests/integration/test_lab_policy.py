"""The packet policy on real multicast: sender ns -> guarded interface of the router ns.

The XDP filter sits on the router's internal interface. Every assertion is
about what actually arrived on the router, at a socket joined to the group on
that interface (`Lab.receiver`): exactly the packets the filter passed, on
every kernel, with or without multicast routing (whether the router then
forwards them is the router tier's subject, see tests/integration/test_demo.py
and the tests marked `router`). The filter's counters must match the packets
sent exactly.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import pytest

from lab.netns import inside, patience
from mauthcore.protocol.model import Reason
from mauthcore.rules import Rule
from musersd.dataplane import detach, xdp_status
from musersd.policy import decide
from tests.conftest import REPO
from tests.integration.conftest import AUTH, AUTH2, GROUP, GROUP2, GROUP3, ROGUE
from tests.support.waiting import poll_for

pytestmark = pytest.mark.integration

N = 50


def _rules(dp):
    dp.add_rule(Rule.make(AUTH, GROUP, 8))
    dp.add_rule(Rule.make(AUTH2, GROUP2, 2))


def test_policy_holds_on_traffic_arriving_at_the_router(guarded):
    lab, dp = guarded
    _rules(dp)
    rx = lab.receiver([GROUP, GROUP2, GROUP3])
    auth, auth2, rogue = lab.sender(AUTH), lab.sender(AUTH2), lab.sender(ROGUE)
    before = dp.counters()

    auth.send(GROUP, N, ttl=8)  # at max: delivered
    auth.send(GROUP, N, ttl=2)  # below max: delivered
    auth.send(GROUP, N, ttl=9)  # over max: dropped
    auth2.send(GROUP2, N, ttl=2)  # at max 2: delivered
    auth2.send(GROUP2, N, ttl=3)  # over: dropped
    rogue.send(GROUP, N, ttl=2)  # unknown sender: dropped
    auth.send(GROUP3, N, ttl=2)  # authorized sender, other group: dropped
    auth2.send(GROUP, N, ttl=2)  # sender of another group: dropped
    rx.drain()

    assert rx.got(AUTH, GROUP) == 2 * N
    assert rx.got(AUTH2, GROUP2) == N
    assert rx.got(ROGUE, GROUP) == 0
    assert rx.got(AUTH, GROUP3) == 0
    assert rx.got(AUTH2, GROUP) == 0

    after = dp.counters()
    delta = {r: after[r]["packets"] - before[r]["packets"] for r in after}
    assert delta["passed"] == 3 * N
    assert delta["ttl"] == 2 * N
    assert delta["unauthorized"] == 3 * N
    assert dp.get_rule((AUTH, GROUP)).packets == 2 * N
    assert dp.get_rule((AUTH2, GROUP2)).packets == N
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert denied[(ROGUE, GROUP)].packets == N and denied[(ROGUE, GROUP)].reason == Reason.UNAUTHORIZED
    assert denied[(AUTH, GROUP)].packets == N and denied[(AUTH, GROUP)].reason == Reason.TTL
    assert denied[(AUTH, GROUP)].last_ttl == 9


def test_unicast_and_link_local_are_untouched(guarded):
    lab, dp = guarded  # no rules at all: every routable group is closed
    recv_host = lab.receivers["r1"]
    with inside(recv_host.ns):
        uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uni.bind((recv_host.addrs[0], 6000))
        uni.settimeout(2)
    # Link-local multicast from a sender reaches the router itself (never forwarded).
    router_if = lab.senders["s1"].router_iface
    with inside(lab.router.ns):
        ll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ll.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ll.bind(("224.0.0.123", 5004))
        mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.123"), socket.inet_aton(lab.senders["s1"].router_addr))
        ll.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        ll.settimeout(2)
    assert router_if
    before = dp.counters()
    rogue = lab.sender(ROGUE)
    for _ in range(10):
        rogue.sock.sendto(b"unicast", (recv_host.addrs[0], 6000))
    rogue.send("224.0.0.123", 10, ttl=1)
    got_uni = sum(1 for _ in range(10) if uni.recv(100))
    got_ll = sum(1 for _ in range(10) if ll.recv(100))
    uni.close()
    ll.close()
    assert (got_uni, got_ll) == (10, 10)
    after = dp.counters()
    assert after["not_multicast"]["packets"] - before["not_multicast"]["packets"] >= 10
    assert after["link_local"]["packets"] - before["link_local"]["packets"] >= 10
    assert after["unauthorized"]["packets"] == before["unauthorized"]["packets"]


def test_rule_changes_take_effect_immediately(guarded):
    lab, dp = guarded
    rx = lab.receiver([GROUP])
    rogue = lab.sender(ROGUE)
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == 0
    dp.add_rule(Rule.make(ROGUE, GROUP, 4))
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == N
    dp.replace_rule(Rule.make(ROGUE, GROUP, 3))
    rogue.send(GROUP, N, ttl=4)
    assert rx.drain()[(ROGUE, GROUP)] == N
    dp.remove_rule((ROGUE, GROUP))
    rogue.send(GROUP, N, ttl=2)
    assert rx.drain()[(ROGUE, GROUP)] == N


def test_monitor_mode_passes_everything_and_counts_would_be_drops(guarded):
    lab, dp = guarded
    _rules(dp)
    dp.set_mode("monitor")
    rx = lab.receiver([GROUP, GROUP3])
    before = dp.counters()
    lab.sender(ROGUE).send(GROUP, N, ttl=2)
    lab.sender(AUTH).send(GROUP, N, ttl=20)
    lab.sender(AUTH).send(GROUP3, N, ttl=2)
    rx.drain()
    assert rx.got(ROGUE, GROUP) == N
    assert rx.got(AUTH, GROUP) == N
    assert rx.got(AUTH, GROUP3) == N
    after = dp.counters()
    assert after["unauthorized"]["packets"] - before["unauthorized"]["packets"] == 2 * N
    assert after["ttl"]["packets"] - before["ttl"]["packets"] == N
    dp.set_mode("enforce")
    lab.sender(ROGUE).send(GROUP, N, ttl=2)
    assert rx.drain()[(ROGUE, GROUP)] == N  # unchanged: enforcing again


def _subprocess(code: str) -> str:
    script = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{code}"
    return subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout


def test_rules_survive_the_process_that_added_them(lab, pin_dir):
    # A separate process loads, attaches, adds a rule and exits.
    _subprocess(f"""
from lab.netns import inside
from musersd.dataplane import DataPlane
dp = DataPlane({str(pin_dir)!r}, max_rules=1024).load()
with inside({lab.router.ns!r}):
    dp.attach("in0")
dp.add_rule(({AUTH!r}, {GROUP!r}, 8))
""")
    with inside(lab.router.ns):
        mode, prog = xdp_status("in0")
    assert mode == "native" and prog  # veth has a native XDP driver: attach's first choice, and it holds
    rx = lab.receiver([GROUP])
    lab.sender(AUTH).send(GROUP, N, ttl=8)
    lab.sender(ROGUE).send(GROUP, N, ttl=8)
    rx.drain()
    assert (rx.got(AUTH, GROUP), rx.got(ROGUE, GROUP)) == (N, 0)
    # A new process sees the rule and its counters.
    out = _subprocess(f"""
from musersd.dataplane import DataPlane
dp = DataPlane({str(pin_dir)!r}).open()
r = dp.get_rule(({AUTH!r}, {GROUP!r}))
print(r.rule.max_ttl, r.packets)
""")
    assert out.split() == ["8", str(N)]
    with inside(lab.router.ns):
        assert detach("in0")


def test_reload_replaces_the_program_without_a_gap(guarded):
    """A second loader adopts the pins and swaps the program while traffic flows."""
    lab, dp = guarded
    _rules(dp)
    with inside(lab.router.ns):
        _, old_prog = xdp_status("in0")
    rx = lab.receiver([GROUP])
    auth, rogue = lab.sender(AUTH), lab.sender(ROGUE)
    reload = subprocess.Popen([sys.executable, "-c", f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from lab.netns import inside
from musersd.dataplane import DataPlane
dp = DataPlane({str(dp.pin_dir)!r}).load()
with inside({lab.router.ns!r}):
    dp.attach("in0")
"""])
    sent = 0
    deadline = time.monotonic() + 60
    while reload.poll() is None and time.monotonic() < deadline:
        auth.send(GROUP, 5, ttl=4)
        rogue.send(GROUP, 5, ttl=4)
        sent += 5
        time.sleep(0.002)  # the traffic's pace while the program is replaced (a stimulus, not a wait)
    assert reload.wait() == 0
    auth.send(GROUP, 5, ttl=4)
    rogue.send(GROUP, 5, ttl=4)
    sent += 5
    rx.drain()
    with inside(lab.router.ns):
        _, new_prog = xdp_status("in0")
    assert new_prog != old_prog  # the program really was replaced
    assert rx.got(AUTH, GROUP) == sent  # nothing authorized lost
    assert rx.got(ROGUE, GROUP) == 0  # nothing unauthorized slipped through
    assert dp.get_rule((AUTH, GROUP)).packets == sent


def test_case_table_on_the_wire(guarded):
    """Each crafted frame, injected on the sender's link, moves the router's counter the model predicts."""
    from tests.policy_cases import ALL_RULES, CASES, PREFIX_CASES, as_rules

    lab, dp = guarded
    for rule in as_rules(ALL_RULES):
        dp.add_rule(rule)
    with inside(lab.senders["s1"].ns):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        raw.bind(("eth0", 0))
    wrong = []
    try:
        for case in CASES + PREFIX_CASES:
            if len(case.frame) < 14:
                continue
            before = dp.counters()
            raw.send(case.frame)
            expect = decide(case.frame, ALL_RULES).reason
            moved = poll_for(lambda before=before: {r for r, c in dp.counters().items()
                                                    if c["packets"] != before[r]["packets"]},
                             patience(2))
            if moved != {expect}:
                wrong.append((case.name, moved, expect))
    finally:
        raw.close()
    assert wrong == []
