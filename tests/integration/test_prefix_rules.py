"""Prefix rules on real forwarded multicast: a subnet's hosts, and a trusted source's scope.

Two sender hosts on their own links, a router forwarding with smcrouted
((S,G) routes for every pair the test sends, so nothing depends on the
kernel's cache-miss queue), the XDP filter on both internal links, and a
receiver joined to every group. Every assertion is about what the receiver
got, and the rules' counters must account for it exactly.
"""

from __future__ import annotations

import pytest

from lab.netns import inside
from lab.topology import Lab, Route
from mauthcore.protocol.model import Reason
from mauthcore.rules import Rule
from musersd.dataplane import DataPlane

pytestmark = pytest.mark.integration

N = 40
# s1's link 192.0.2.0/26: three hosts inside 192.0.2.8/29, one outside it.
IN_A, IN_B, IN_C, OUTSIDE = "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.20"
SUBNET = "192.0.2.8/29"
# s2's link 192.0.2.64/26: the trusted source.
TRUSTED = "192.0.2.70"
SCOPE = "239.192.0.0/14"  # organization-local scope (RFC 2365)
G1, G2 = "239.1.1.1", "239.1.1.2"
IN_SCOPE = ["239.192.0.1", "239.193.7.7", "239.195.200.9"]
PAST_SCOPE = "239.196.0.1"


@pytest.fixture
def guarded(pin_dir):
    hosts = {"s1": [IN_A, IN_B, IN_C, OUTSIDE], "s2": [TRUSTED]}
    routes = [Route(g, s) for s in hosts["s1"] for g in (G1, G2, IN_SCOPE[1])]
    routes += [Route(g, TRUSTED) for g in (*IN_SCOPE, PAST_SCOPE, G1)]
    with Lab(senders=hosts, routes=routes) as lab:
        dp = DataPlane(pin_dir, max_rules=64).load()
        with inside(lab.router.ns):
            for iface in lab.internal_ifaces:
                dp.attach(iface)
        try:
            yield lab, dp
        finally:
            with inside(lab.router.ns):
                for iface in lab.internal_ifaces:
                    dp.detach(iface)
            dp.close()


def test_source_prefix_lets_every_host_of_the_subnet_through_to_its_group_only(guarded):
    lab, dp = guarded
    dp.add_rule(Rule.make(SUBNET, G1, 8))
    dp.add_rule(Rule.make(IN_B, G1, 2))  # an exact rule inside the subnet: it wins
    rx = lab.receiver([G1, G2])
    before = dp.counters()
    for host in (IN_A, IN_B, IN_C, OUTSIDE):
        s = lab.sender(host)
        s.send(G1, N, ttl=2)
        s.send(G2, N, ttl=2)  # no rule for the subnet's hosts to G2
    lab.sender(IN_C).send(G1, N, ttl=9)  # over the subnet's max TTL
    lab.sender(IN_B).send(G1, N, ttl=4)  # within the subnet's 8, over its own exact rule's 2
    rx.drain()

    assert [rx.got(h, G1) for h in (IN_A, IN_B, IN_C, OUTSIDE)] == [N, N, N, 0]
    assert [rx.got(h, G2) for h in (IN_A, IN_B, IN_C, OUTSIDE)] == [0, 0, 0, 0]
    assert dp.get_rule((SUBNET, G1)).packets == 2 * N  # IN_A and IN_C
    assert dp.get_rule((IN_B, G1)).packets == N
    after = dp.counters()
    delta = {r: after[r]["packets"] - before[r]["packets"] for r in after}
    assert (delta["passed"], delta["ttl"], delta["unauthorized"]) == (3 * N, 2 * N, 5 * N)
    denied = {(str(d.source), str(d.group)): d for d in dp.denied()}
    assert denied[(OUTSIDE, G1)].reason == Reason.UNAUTHORIZED
    assert denied[(IN_C, G1)].reason == Reason.TTL and denied[(IN_B, G1)].reason == Reason.TTL


def test_group_prefix_lets_a_trusted_source_send_to_every_group_of_the_scope(guarded):
    lab, dp = guarded
    dp.add_rule(Rule.make(TRUSTED, SCOPE, 16))
    rx = lab.receiver([*IN_SCOPE, PAST_SCOPE, G1])
    trusted = lab.sender(TRUSTED)
    for g in (*IN_SCOPE, PAST_SCOPE, G1):
        trusted.send(g, N, ttl=16)
    lab.sender(IN_A).send(IN_SCOPE[1], N, ttl=4)  # another source: the scope is TRUSTED's only
    rx.drain()

    assert [rx.got(TRUSTED, g) for g in IN_SCOPE] == [N, N, N]
    assert rx.got(TRUSTED, PAST_SCOPE) == 0 and rx.got(TRUSTED, G1) == 0
    assert rx.got(IN_A, IN_SCOPE[1]) == 0
    assert dp.get_rule((TRUSTED, SCOPE)).packets == 3 * N

    # Removing the rule closes the whole scope at once.
    dp.remove_rule((TRUSTED, SCOPE))
    rx.reset()
    trusted.send(IN_SCOPE[0], N, ttl=16)
    rx.drain()
    assert rx.got(TRUSTED, IN_SCOPE[0]) == 0
