"""DataPlaneBackend's receiver commands over the filter's receiver half, behind the real server core.

The filter is tests/support/fake_receivers.py: exactly the Filter API's
receiver methods, in memory, with the real refusals. Requests are real v2
datagrams; what is asserted is the reply code for each refusal, the
translation of the kernel's CLOCK_MONOTONIC stamps into the wire's
milliseconds since the Unix epoch, paging, and that a filter without a
receiver half (NFQUEUE, or `receives` False) answers UNSUPPORTED and changes
nothing.
"""

from __future__ import annotations

import ipaddress

import pytest

from mauthcore.protocol.errors import ReplyCode
from mauthcore.protocol.model import (
    RECV_COUNTERS,
    DeniedJoinEntry,
    IfaceReceiversEntry,
    JoinedEntry,
    Reason,
    ReceiverEntry,
)
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.v2 import RecvAdd, RecvDenied, RecvJoined, RecvList, RecvPolicy, RecvRemove
from mauthcore.receivers import IfacePolicy, ReceiverRule
from musersd.dataplane_backend import DataPlaneBackend
from musersd.filter import DataPlaneError, DeniedJoin
from musersd.nfqueue_backend import NfqueueBackend
from tests.support.fake_dataplane import FakeDataPlane
from tests.support.fake_receivers import FakeReceivingDataPlane
from tests.unit.test_dataplane_backend import EPOCH, KEYS, Client

MONO = 50_000_000_000  # the fake kernel clock now: 50 s after boot
WALL = 1_700_000_000.0  # Unix time now
R1 = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1")
R2 = ReceiverRule.make("fe80::/10", "ff0e::db8:0/112", source="2001:db8::10")
v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address


class Clock:
    def __init__(self) -> None:
        self.ns = MONO

    def __call__(self) -> int:
        return self.ns


def served(dp=None, backend_type=DataPlaneBackend):
    clock = Clock()
    if dp is None:
        dp = FakeReceivingDataPlane(clock=clock)
    backend = backend_type(dp) if backend_type is NfqueueBackend else backend_type(dp, clock=clock,
                                                                                   wall=lambda: WALL)
    server = ServerCore(backend, KEYS, EPOCH, 1)
    client = Client(server)
    client.hello()
    return dp, client, clock


def walk(client: Client, request: type) -> list:
    out, cursor = [], b""
    while True:
        reply = client.send(request(0, cursor))
        assert reply.ok, reply
        out.extend(reply.body.entries)
        if not reply.body.cursor:
            return out
        cursor = reply.body.cursor


def test_add_remove_and_the_filters_refusals_as_reply_codes():
    dp, client, _ = served()
    dp.receiver_capacity = 2
    assert client.send(RecvAdd(R1)).ok
    assert client.send(RecvAdd(R1)).status == ReplyCode.EXISTS
    reply = client.send(RecvAdd(ReceiverRule.make("10.2.0.0/16", "239.2.0.0/16", iface="eth7")))
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "eth7" in reply.body.message
    assert client.send(RecvAdd(R2)).ok
    assert client.send(RecvAdd(ReceiverRule.make("0.0.0.0/0", "239.0.0.0/8"))).status == ReplyCode.TABLE_FULL
    assert set(dp.held) == {R1, R2}
    assert client.send(RecvRemove(R2)).ok
    assert client.send(RecvRemove(R2)).status == ReplyCode.NOT_FOUND
    assert set(dp.held) == {R1}


def test_listed_times_are_ms_since_the_epoch():
    dp, client, clock = served()
    for rule in (R1, R2):
        dp.add_receiver(rule)
    clock.ns = MONO - 2_500_000_000  # hit 2.5 s ago
    dp.hit(R1, 3)
    clock.ns = MONO - 10_000_000_000  # first joined 10 s ago, again 1 s ago, then left
    dp.join("eth1", v4("239.1.2.3"), v4("10.1.0.7"))
    clock.ns = MONO - 1_000_000_000
    dp.join("eth1", v4("239.1.2.3"), v4("10.1.0.8"))
    dp.leave("eth1", v4("239.1.2.3"))
    dp.refuse(DeniedJoin("eth2", v6("fe80::1"), v6("ff0e::1"), v6("2001:db8::10"), "join_limit", 4,
                         MONO - 500_000_000, 2))
    clock.ns = MONO
    assert walk(client, RecvList) == [ReceiverEntry(R1, 3, 1_699_999_997_500), ReceiverEntry(R2, 0, 0)]
    assert walk(client, RecvJoined) == [JoinedEntry("eth1", v4("239.1.2.3"), v4("10.1.0.8"), 1_699_999_990_000,
                                                    1_699_999_999_000, 2, False)]
    assert walk(client, RecvDenied) == [DeniedJoinEntry("eth2", v6("fe80::1"), v6("ff0e::1"), v6("2001:db8::10"),
                                                        Reason.JOIN_LIMIT, 4, 1_699_999_999_500, 2)]


def test_listings_page_through_every_entry_once():
    dp, client, _ = served()
    rules = [ReceiverRule.make(f"10.{i}.0.0/16", "239.0.0.0/8", iface="eth2") for i in range(200)]
    for rule in rules:
        dp.add_receiver(rule)
    for i in range(300):
        dp.join(("eth1", "eth2")[i % 2], v4(f"239.3.{i // 200}.{i % 200 + 1}"), v4("10.0.0.1"))
        dp.refuse(DeniedJoin("eth1", v4(f"10.5.{i // 200}.{i % 200 + 1}"), v4("239.9.9.9"), None, "join_refused",
                             1, MONO, 3))
    assert [e.rule for e in walk(client, RecvList)] == sorted(rules)
    joined = walk(client, RecvJoined)
    assert len(joined) == 300 and joined == sorted(joined, key=lambda e: e.cursor)
    assert {(e.iface, e.group) for e in joined} == set(dp.groups)
    denied = walk(client, RecvDenied)
    assert len(denied) == 300 and {d.reason for d in denied} == {Reason.JOIN_REFUSED}


def test_policy_set_and_listed_for_every_guarded_interface():
    dp, client, _ = served()
    dp.iface_counters["eth1"].update(reports=12, refused=3)
    dp.join("eth1", v4("239.1.1.1"), v4("10.1.0.1"))
    reply = client.send(RecvPolicy(IfacePolicy.make("eth1", "monitor", 100)))
    assert reply.ok and reply.body.interfaces == (
        IfaceReceiversEntry(IfacePolicy.make("eth1", "monitor", 100), 1,
                            {**dict.fromkeys(RECV_COUNTERS, 0), "reports": 12, "refused": 3}),
        IfaceReceiversEntry(IfacePolicy("eth2")))
    reply = client.send(RecvPolicy(IfacePolicy.make("lo", "closed")))
    assert reply.status == ReplyCode.INVALID_ARGUMENT
    assert dp.policies == {"eth1": IfacePolicy.make("eth1", "monitor", 100), "eth2": IfacePolicy("eth2")}


@pytest.mark.parametrize("body", [RecvAdd(R1), RecvRemove(R1), RecvList(), RecvDenied(), RecvJoined(), RecvPolicy(),
                                  RecvPolicy(IfacePolicy.make("eth1", "closed"))])
def test_a_filter_without_a_receiver_half_answers_unsupported(body):
    for dp, backend_type in ((FakeDataPlane(), DataPlaneBackend), (FakeDataPlane(families=(4,)), NfqueueBackend)):
        _, client, _ = served(dp, backend_type)
        reply = client.send(body)
        assert reply.status == ReplyCode.UNSUPPORTED and "membership reports" in reply.body.message


def test_a_failing_filter_costs_one_internal_answer():
    dp, client, _ = served()

    def broken() -> list:
        raise DataPlaneError("reading the joined-groups map failed: EPERM")
    dp.joined_groups = broken  # type: ignore[method-assign]  # the failure under test
    reply = client.send(RecvJoined())
    assert reply.status == ReplyCode.INTERNAL and "EPERM" in reply.body.message
    assert client.send(RecvAdd(R1)).ok  # the server goes on
