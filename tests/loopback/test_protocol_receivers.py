"""RouterClient's receiver methods over real UDP on 127.0.0.1, against the server core and MemoryBackend.

Listings are walked page by page (RECV_LIST, RECV_DENIED, RECV_JOINED with
cursors); the server core's paging and the codec's records are
tests/unit/test_protocol_receivers.py and tests/unit/test_protocol_v2.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from mauthcore.protocol.errors import RouterExists, RouterNotFound, RouterRejected
from mauthcore.protocol.model import RECV_COUNTERS, DeniedJoinEntry, IfaceReceiversEntry, JoinedEntry, Reason
from mauthcore.protocol.udp import RouterClient
from mauthcore.receivers import IfacePolicy, ReceiverRule
from tests.loopback.test_protocol_pair import router  # noqa: F401  (the fixture)
from tests.unit.test_protocol_pair import KEYS


def test_receiver_commands_over_udp(router):  # noqa: F811
    port, core, backend = router
    backend.ifaces = ("eth1", "eth2")
    backend.policies = {name: IfacePolicy(name) for name in backend.ifaces}
    v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    rules = [ReceiverRule.make(f"10.1.{i}.0/24", "239.1.0.0/16", iface="eth1") for i in range(50)]
    rules += [ReceiverRule.make("fe80::/10", f"ff0e::{i:x}", source="2001:db8::10") for i in range(30)]
    backend.denied_join_entries = [DeniedJoinEntry("eth2", v6(f"fe80::{i + 1:x}"), v6("ff0e::1"), None,
                                                   Reason.JOIN_LIMIT, 1, 1_700_000_000_000, 2) for i in range(60)]
    backend.joined_entries = [JoinedEntry("eth1", v4(f"239.2.0.{i + 1}"), v4("10.1.0.5"), 1_700_000_000_000,
                                          1_700_000_001_000, i + 1, i % 2 == 1) for i in range(70)]
    with RouterClient("127.0.0.1", port, KEYS, timeout=0.2, tries=5) as client:
        for rule in rules:
            client.add_receiver(rule)
        with pytest.raises(RouterExists, match="RECV_ADD|recv_add"):
            client.add_receiver(rules[0])
        with pytest.raises(RouterRejected, match="INVALID_ARGUMENT.*eth9"):
            client.add_receiver(ReceiverRule.make("10.9.0.0/16", "239.9.0.0/16", iface="eth9"))
        listed = client.list_receivers()
        assert [e.rule for e in listed] == sorted(rules)  # three pages and more, each rule once, in order
        client.remove_receiver(rules[3])
        with pytest.raises(RouterNotFound):
            client.remove_receiver(rules[3])
        assert len(client.list_receivers()) == 79
        assert client.denied_joins() == sorted(backend.denied_join_entries, key=lambda e: e.cursor)
        assert client.joined() == sorted(backend.joined_entries, key=lambda e: e.cursor)
        policies = client.receiver_policy(IfacePolicy.make("eth1", "closed", 20))
        assert policies == [IfaceReceiversEntry(IfacePolicy.make("eth1", "closed", 20), 0,
                                                dict.fromkeys(RECV_COUNTERS, 0)),
                            IfaceReceiversEntry(IfacePolicy("eth2"))]
        assert client.receiver_policy() == policies
    pages = [op for op, _ in backend.log if op in ("list_receivers", "denied_joins", "joined")]
    assert pages.count("list_receivers") >= 4 and pages.count("denied_joins") >= 2 and pages.count("joined") >= 2
    assert core.stats["requests_recv_list"] == pages.count("list_receivers")
