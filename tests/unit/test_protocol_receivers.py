"""The receiver commands (RECV_ADD .. RECV_POLICY) through the real server core and MemoryBackend.

Requests are encoded and replies decoded by the v2 codec, as on the wire;
every test asserts on what the backend executed or holds, not only on the
reply codes. The blocking client's paging over UDP is
tests/loopback/test_protocol_receivers.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from mauthcore.protocol import v2
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.errors import ReplyCode
from mauthcore.protocol.model import (
    RECV_COUNTERS,
    DeniedJoinEntry,
    IfaceReceiversEntry,
    JoinedEntry,
    Reason,
    ReceiverEntry,
    check_receiver_cursor,
)
from mauthcore.protocol.v2 import RecvAdd, RecvDenied, RecvJoined, RecvList, RecvPolicy, RecvRemove
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import RuleError
from tests.unit.test_protocol_server import Client, make

R1 = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1")
R2 = ReceiverRule.make("10.1.0.7", "232.1.1.1", source="192.0.2.10")


def served(**kw) -> tuple[MemoryBackend, Client]:
    backend = MemoryBackend(ifaces=("eth1", "eth2"), **kw)
    client = Client(make(backend))
    client.hello()
    return backend, client


def walk(client: Client, request: type, **kw) -> tuple[list, list[int]]:
    """Every entry of a receiver listing, page by page; and the number of entries of each page."""
    entries: list = []
    sizes: list[int] = []
    cursor = b""
    while True:
        reply = client.send(request(kw.get("max_count", 0), cursor))
        assert reply.ok, reply
        wire_size = len(v2.encode_response(reply, client.keys))
        assert wire_size <= v2.MAX_DATAGRAM
        entries.extend(reply.body.entries)
        sizes.append(len(reply.body.entries))
        if not reply.body.cursor:
            return entries, sizes
        cursor = reply.body.cursor


def test_add_remove_and_their_refusals():
    backend, client = served(receiver_capacity=2)
    assert client.send(RecvAdd(R1)).status == ReplyCode.OK
    reply = client.send(RecvAdd(R1))
    assert reply.status == ReplyCode.EXISTS and "held already" in reply.body.message
    unguarded = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth9")
    reply = client.send(RecvAdd(unguarded))
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "eth9" in reply.body.message
    assert client.send(RecvAdd(R2)).ok
    reply = client.send(RecvAdd(ReceiverRule.make("0.0.0.0/0", "239.0.0.0/8")))
    assert reply.status == ReplyCode.TABLE_FULL
    assert set(backend.receivers) == {R1, R2}
    assert client.send(RecvRemove(R1)).ok
    reply = client.send(RecvRemove(R1))
    assert reply.status == ReplyCode.NOT_FOUND and str(R1) in reply.body.message
    assert set(backend.receivers) == {R2}
    assert [op for op, _ in backend.log if op.endswith("_receiver")] == ["add_receiver"] * 5 + ["remove_receiver"] * 2
    assert client.server.stats["requests_recv_add"] == 5 and client.server.stats["requests_recv_remove"] == 2


def test_a_malformed_receiver_record_executes_nothing():
    backend, client = served()
    wire = bytearray(client.wire(RecvAdd(R1)))
    body_at = v2.REQUEST_HEADER_SIZE
    wire[body_at + 1] = 0x02  # flags: an unknown bit
    from tests.unit.test_protocol_v2 import sign  # re-sign the altered request

    reply = client.deliver(sign(bytes(wire[:-v2.TAG_SIZE])))
    assert reply.status == ReplyCode.MALFORMED and "flags" in reply.body.message
    assert backend.receivers == {} and not [op for op, _ in backend.log if op == "add_receiver"]


def test_list_pages_are_cut_by_bytes_and_walk_every_rule_once_in_order():
    backend, client = served()
    rules = [ReceiverRule.make(f"10.{i // 256}.{i % 256}.0/24", "239.1.0.0/16") for i in range(60)]
    rules += [ReceiverRule.make(f"2001:db8:{i:x}::/64", "ff0e::/16", source=f"2001:db8::{i + 1:x}",
                                iface="vlan-uplink-001") for i in range(40)]
    for r in rules:
        backend.receivers[r] = (len(backend.receivers), 1_700_000_000_000 + len(backend.receivers))
    entries, sizes = walk(client, RecvList)
    assert [e.rule for e in entries] == sorted(rules)
    assert entries[5] == ReceiverEntry(sorted(rules)[5], *backend.receivers[sorted(rules)[5]])
    # IPv4 entries without a source are short: a page holds up to MAX_RECV_ENTRIES of them; IPv6 SSM entries
    # with a 15-byte interface name take 84 bytes, so only 14 of them fit.
    assert sizes == [v2.MAX_RECV_ENTRIES, 18 + (v2.RECV_PAGE_ROOM - 18 * 29) // 84, 14, 14, 4]
    # A smaller page asked for is honoured.
    entries, sizes = walk(client, RecvList, max_count=7)
    assert len(entries) == 100 and max(sizes) == 7


def test_denied_and_joined_listings_page_through_every_entry():
    backend, client = served()
    v4 = ipaddress.IPv4Address
    backend.denied_join_entries = [
        DeniedJoinEntry("eth1", v4(f"10.1.{i // 200}.{i % 200 + 1}"), v4("239.5.5.5"),
                        v4("192.0.2.1") if i % 2 else None, Reason.JOIN_REFUSED if i % 3 else Reason.JOIN_LIMIT,
                        i + 1, 1_700_000_000_000, 3) for i in range(100)]
    backend.joined_entries = [
        JoinedEntry(("eth1", "eth2")[i % 2], v4(f"239.9.{i // 250}.{i % 250 + 1}"), v4("10.1.0.1"), 1, 2, 3,
                    bool(i % 5 == 0)) for i in range(90)]
    denied, _ = walk(client, RecvDenied)
    assert denied == sorted(backend.denied_join_entries, key=lambda e: e.cursor)
    joined, sizes = walk(client, RecvJoined)
    assert joined == sorted(backend.joined_entries, key=lambda e: e.cursor)
    assert sizes[0] == v2.RECV_PAGE_ROOM // (27 + 8 + 4) == 31  # IPv4 entries naming a 4-byte interface


def test_a_cursor_of_another_shape_is_an_invalid_argument():
    backend, client = served()
    backend.receivers[R1] = (0, 0)
    reply = client.send(RecvList(0, b"\x05abc"))
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "not one this router issued" in reply.body.message
    # A position after every rule: an empty last page.
    reply = client.send(RecvList(0, b"\x06"))
    assert reply.ok and reply.body.entries == () and reply.body.cursor == b""
    assert check_receiver_cursor(R1.cursor) == R1.cursor
    with pytest.raises(RuleError):
        check_receiver_cursor(b"")


def test_policy_get_set_and_an_unguarded_interface():
    backend, client = served()
    backend.groups["eth1"] = 4
    backend.recv_counters["eth1"] = {"reports": 9, "refused": 2}
    reply = client.send(RecvPolicy())
    assert reply.ok and reply.body.interfaces == (
        IfaceReceiversEntry(IfacePolicy("eth1"), 4, {**dict.fromkeys(RECV_COUNTERS, 0), "reports": 9, "refused": 2}),
        IfaceReceiversEntry(IfacePolicy("eth2")))
    closed = IfacePolicy.make("eth2", "closed", 20)
    reply = client.send(RecvPolicy(closed))
    assert reply.ok and reply.body.interfaces[1].policy == closed and backend.policies["eth2"] == closed
    reply = client.send(RecvPolicy(IfacePolicy.make("eth9", "closed")))
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "eth9" in reply.body.message
    assert set(backend.policies) == {"eth1", "eth2"}
    assert client.server.stats["requests_recv_policy"] == 3
