"""Per-rule rate limits on real forwarded multicast: senders above their rate are cut to it.

sender ns -> router ns (smcrouted, the XDP filter on its internal link) ->
receiver ns. Each test runs a sender above its rule's limit and one below
its own, at the same time, and counts what the receiving host got:

* above: the bucket's burst plus the rate for as long as the sender sent,
  within 15 % (the limit's promise; the program's clock moves in 4 ms ticks
  and the sender's pacing is Python's);
* below: every packet, exactly;
* the filter's own counts agree exactly with the receiver: everything the
  rule passed arrived, everything else was counted as reason "rate".

No timing is asserted: the expected counts come from the send durations the
test measures, whatever the machine's load made them.
"""

from __future__ import annotations

import threading
import time

import pytest

from lab.netns import inside
from lab.topology import Lab, Route
from mauthcore.protocol.model import Reason
from mauthcore.rules import Rule
from musersd.dataplane import DataPlane
from musersd.maps import BURST_NS, MIN_BIT_BURST, NSEC

pytestmark = pytest.mark.integration

FAST = "192.0.2.10"  # sends above its rule's limit
SLOW = "192.0.2.11"  # sends below its rule's limit
PEER = "192.0.2.12"  # a third host: with FAST, the two halves of a subnet's traffic
G_PPS, G_SLOW, G_BPS, G_NET = "239.1.1.1", "239.1.1.2", "239.1.1.3", "239.1.1.4"
SOURCES = [FAST, SLOW, PEER]
GROUPS = [G_PPS, G_SLOW, G_BPS, G_NET]
TOLERANCE = 0.15
ETH_IP_UDP = 14 + 20 + 8  # what the filter counts on top of the UDP payload


@pytest.fixture
def guarded(pin_dir):
    routes = [Route(g, s) for s in SOURCES for g in GROUPS]
    with Lab(senders={"s1": SOURCES}, routes=routes) as lab:
        dp = DataPlane(pin_dir, max_rules=64).load()
        with inside(lab.router.ns):
            dp.attach("in0")
        try:
            yield lab, dp
        finally:
            with inside(lab.router.ns):
                dp.detach("in0")
            dp.close()


def _send_together(lab, flows) -> dict:
    """Send every flow (source, group, count, rate, size) at once, one thread each; return durations by flow."""
    senders = {f: lab.sender(f[0]) for f in flows}
    took: dict = {}

    def run(flow):
        source, group, count, rate, size = flow
        t0 = time.monotonic()
        senders[flow].send(group, count, ttl=8, size=size, rate=rate)
        took[flow] = time.monotonic() - t0

    threads = [threading.Thread(target=run, args=(f,)) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took


def _delta(before: dict, after: dict, reason: str) -> int:
    return after[reason]["packets"] - before[reason]["packets"]


def _within(got: int, want: float) -> bool:
    return abs(got - want) <= TOLERANCE * want


def test_packet_rate_cuts_a_fast_sender_and_spares_a_slow_one(guarded):
    lab, dp = guarded
    dp.add_rule(Rule.make(FAST, G_PPS, 8, pps=500))
    dp.add_rule(Rule.make(SLOW, G_SLOW, 8, pps=500))
    rx = lab.receiver([G_PPS, G_SLOW])
    before = dp.counters()
    fast, slow = (FAST, G_PPS, 6000, 2000, 64), (SLOW, G_SLOW, 600, 200, 64)
    took = _send_together(lab, [fast, slow])
    rx.drain()
    after = dp.counters()

    want = 500 * took[fast] + 500 * BURST_NS / NSEC  # the rate while it sent, plus the burst of 100 ms
    got = rx.got(FAST, G_PPS)
    assert _within(got, want), f"{got} delivered of 6000 sent in {took[fast]:.2f} s; expected about {want:.0f}"
    assert rx.got(SLOW, G_SLOW) == 600  # below its limit: untouched
    assert dp.get_rule((FAST, G_PPS)).packets == got  # everything the rule passed arrived
    assert _delta(before, after, "rate") == 6000 - got
    assert _delta(before, after, "passed") == got + 600
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert denied[(FAST, G_PPS)].reason == Reason.RATE and denied[(FAST, G_PPS)].packets == 6000 - got
    assert (SLOW, G_SLOW) not in denied


def test_bit_rate_cuts_a_heavy_sender_and_spares_a_light_one(guarded):
    lab, dp = guarded
    size = 1000
    frame_bits = (size + ETH_IP_UDP) * 8
    dp.add_rule(Rule.make(FAST, G_BPS, 8, bps=400_000))  # about 48 of these frames a second
    dp.add_rule(Rule.make(SLOW, G_SLOW, 8, bps=2_000_000))  # 100 a second of them: about 0.83 Mbit/s
    rx = lab.receiver([G_BPS, G_SLOW])
    before = dp.counters()
    heavy, light = (FAST, G_BPS, 600, 200, size), (SLOW, G_SLOW, 300, 100, size)
    took = _send_together(lab, [heavy, light])
    rx.drain()
    after = dp.counters()

    burst_bits = max(400_000 * BURST_NS / NSEC, MIN_BIT_BURST)
    want = (400_000 * took[heavy] + burst_bits) / frame_bits
    got = rx.got(FAST, G_BPS)
    assert _within(got, want), f"{got} delivered of 600 sent in {took[heavy]:.2f} s; expected about {want:.0f}"
    assert rx.got(SLOW, G_SLOW) == 300
    assert dp.get_rule((FAST, G_BPS)).packets == got
    assert _delta(before, after, "rate") == 600 - got


def test_a_subnets_limit_holds_for_its_hosts_together(guarded):
    """One bucket per rule: two hosts of a rate-limited source prefix share its rate."""
    lab, dp = guarded
    dp.add_rule(Rule.make("192.0.2.8/29", G_NET, 8, pps=200))  # FAST (.10) and PEER (.12), not SLOW's group
    rx = lab.receiver([G_NET])
    before = dp.counters()
    a, b = (FAST, G_NET, 1500, 600, 64), (PEER, G_NET, 1500, 600, 64)
    took = _send_together(lab, [a, b])
    rx.drain()
    after = dp.counters()

    got = rx.got(FAST, G_NET) + rx.got(PEER, G_NET)
    want = 200 * max(took.values()) + 200 * BURST_NS / NSEC
    assert _within(got, want), f"{got} delivered of 3000 in {max(took.values()):.2f} s; expected about {want:.0f}"
    assert rx.got(FAST, G_NET) > 0 and rx.got(PEER, G_NET) > 0
    assert dp.get_rule(("192.0.2.8/29", G_NET)).packets == got
    assert _delta(before, after, "rate") == 3000 - got
