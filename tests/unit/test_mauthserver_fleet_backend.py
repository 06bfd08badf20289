"""The router protocol served by mauthserver for the fleet: ServerCore + FleetBackend, as a client sees it."""

from __future__ import annotations

import pytest

from mauthcore.protocol import v1, v2
from mauthcore.protocol.client import ClientCore, V1ClientCore
from mauthcore.protocol.errors import ReplyCode
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import Mode
from mauthcore.protocol.server import legacy_checker
from mauthcore.rules import Binding, Rule, RuleKey
from mauthserver.core import RouterCore
from mauthserver.events import EventBus
from mauthserver.fleet_backend import FleetServer
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory

KEYS = KeyRing([Key(7, bytes(range(32)))])
PEER = ("192.0.2.5", 4711)
LOOPBACK = ("127.0.0.1", 4712)


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data, addr) -> None:
        self.sent.append((data, addr))


@pytest.fixture
def fleet(tmp_path):
    store = Store.open(tmp_path / "m.db", now=1.0)
    m = Mediator(store, Directory(), EventBus(), [])
    server = FleetServer(m, KEYS, legacy_checker(["127.0.0.0/8"]))
    server.connection_made(Transport())
    yield m, server
    store.close()


def call(server: FleetServer, client: ClientCore, body, peer=PEER) -> v2.Response:
    """Run one client call against the server shell, datagram by datagram."""
    datagram = client.call(body)
    out = datagram.start(0.0)
    while True:
        server.datagram_received(out, peer)
        reply, addr = server.transport.sent.pop()
        assert addr == peer
        result = datagram.on_datagram(reply, 0.0)
        if isinstance(result, (bytes, bytearray)):
            out = result
            continue
        assert result is not None
        return result


def test_v2_commands_act_on_the_whole_fleet(fleet):
    m, server = fleet
    c = ClientCore(KEYS)
    hello = call(server, c, v2.Hello())
    assert hello.ok and hello.body.state_id == m.store.fleet_state_id and hello.body.backend == "mauthserver"
    rule = Rule.make("192.0.2.10", "239.1.1.1", 8)
    assert call(server, c, v2.Add(rule)).ok
    assert call(server, c, v2.Add(rule)).status == ReplyCode.EXISTS
    assert call(server, c, v2.Replace(Rule.make("192.0.2.10", "239.1.1.1", 9))).body.created is False
    assert call(server, c, v2.Replace(Rule.make("192.0.2.11", "239.1.1.1", 4))).body.created is True
    assert {k: r.rule.max_ttl for k, r in m.fleet.desired.items()} == {
        RuleKey.make("192.0.2.10", "239.1.1.1"): 9, RuleKey.make("192.0.2.11", "239.1.1.1"): 4}
    assert call(server, c, v2.Remove(RuleKey.make("192.0.2.12", "239.1.1.1"))).status == ReplyCode.NOT_FOUND
    counters = call(server, c, v2.GetCounters()).body
    assert counters.rule_count == 2 and counters.backend == "mauthserver"
    assert call(server, c, v2.ListDenied()).status == ReplyCode.UNSUPPORTED
    assert call(server, c, v2.ModeRequest(Mode.MONITOR)).body.mode == Mode.MONITOR
    assert m.fleet.mode == Mode.MONITOR and m.store.desired_mode() == Mode.MONITOR
    # Every change was committed and audited with who sent it.
    audit = m.store.audit_log()
    assert audit[0]["action"] == "mode" and audit[0]["actor"] == "udp-v2 192.0.2.5:4711"
    assert call(server, c, v2.Flush()).body.removed == 2
    assert m.fleet.desired == {}


def test_listing_pages_over_the_desired_rules(fleet):
    m, server = fleet
    for i in range(60):
        m.add_rule("192.0.2.10", f"239.1.1.{i + 1}", 1 + i, actor="t")
    c = ClientCore(KEYS)
    entries, cursor = [], b""
    while True:
        page = call(server, c, v2.ListRules(0, cursor)).body
        entries += page.entries
        if not page.cursor:
            break
        cursor = page.cursor
    assert len(entries) == 60 and len({e.rule.key for e in entries}) == 60
    assert {e.rule.key: e.rule.max_ttl for e in entries} == {k: r.rule.max_ttl for k, r in m.fleet.desired.items()}
    assert call(server, c, v2.ListRules(0, b"\x09garbage")).status == ReplyCode.INVALID_ARGUMENT


def test_v1_only_from_allowed_addresses(fleet):
    m, server = fleet
    v1c = V1ClientCore(first_seq=3)
    request = v1c.add(Rule.make("192.0.2.10", "239.1.1.1", 8)).start(0.0)
    server.datagram_received(request, PEER)  # not allowed: silence, nothing done
    assert server.transport.sent == [] and m.fleet.desired == {}
    server.datagram_received(request, LOOPBACK)
    (reply, _), = server.transport.sent
    assert v1.decode_response(reply).ok
    assert len(m.fleet.desired) == 1
    assert m.store.audit_log()[0]["actor"] == "udp-v1 127.0.0.1:4712"
    server.datagram_received(request, LOOPBACK)  # a duplicate: answered from memory, not executed again
    assert m.store.commits == 1


def test_wrong_key_changes_nothing(fleet):
    m, server = fleet
    stranger = ClientCore(KeyRing([Key(7, bytes(32))]))
    datagram = stranger.call(v2.Add(Rule.make("192.0.2.10", "239.1.1.1", 8))).start(0.0)
    server.datagram_received(datagram, PEER)
    assert m.fleet.desired == {}


def test_counters_add_up_the_routers_reasons_unknown_ones_included(fleet):
    """A reason a newer musersd counts (unknown here) is summed and passed on with its code."""
    from mauthcore.protocol.model import Counters, Reason, ReasonCounter
    from mauthserver.core import RouterCore

    m, server = fleet
    for name, filter_ in (("r1", (ReasonCounter(Reason.PASSED, 10, 1000), ReasonCounter(Reason(20), 1, 100))),
                          ("r2", (ReasonCounter(Reason.PASSED, 5, 500), ReasonCounter(Reason(20), 2, 200)))):
        core = RouterCore(name, "192.0.2.1", 7575)
        core.filter = Counters(0, Mode.ENFORCE, "xdp", filter_)
        m.fleet.add_router(core)
    counters = call(server, ClientCore(KEYS), v2.GetCounters()).body
    by = counters.by_reason()
    assert by[Reason.PASSED] == ReasonCounter(Reason.PASSED, 15, 1500)
    assert by[Reason(20)] == ReasonCounter(Reason(20), 3, 300) and str(by[Reason(20)].reason) == "unknown_20"
    assert [int(c.reason) for c in counters.reasons] == [*range(1, 17), 20]


def test_bound_rules_and_rearm_through_the_fleet_port(tmp_path):
    """REPLACE keeps the binding it carries (one interface per router included); REARM is audited and handed to
    the routers whose rule learns; a rule that does not learn, or is absent, is refused as a router would."""
    store = Store.open(tmp_path / "m.db", now=1.0)
    try:
        cores = [RouterCore(n, "192.0.2.1", 7575) for n in ("r1", "r2")]
        m = Mediator(store, Directory(), EventBus(), cores)
        server = FleetServer(m, KEYS, legacy_checker([]))
        server.connection_made(Transport())
        client = ClientCore(KEYS)
        learning = Rule.make("192.0.2.10", "239.1.1.1", 8, binding=Binding.make("r1=eth1", learn=True, rpf=True))
        assert call(server, client, v2.Replace(learning)).ok
        assert m.fleet.desired[learning.key].rule == learning
        assert [d.rule for d in store.rules()] == [learning]

        assert call(server, client, v2.Rearm(learning.key)).ok
        assert [list(c.rearms) for c in cores] == [[learning.key], []]  # r2 holds it with rpf only
        entry = store.audit_log(limit=1)[0]
        assert (entry["action"], entry["actor"]) == ("rule-rearmed", "udp-v2 192.0.2.5:4711")
        assert entry["detail"] == {"source": "192.0.2.10", "group": "239.1.1.1", "routers": ["r1"]}

        plain = Rule.make("192.0.2.10", "239.1.1.2", 8)
        assert call(server, client, v2.Add(plain)).ok
        reply = call(server, client, v2.Rearm(plain.key))
        assert reply.status == ReplyCode.INVALID_ARGUMENT and "does not learn" in reply.body.message
        assert call(server, client, v2.Rearm(RuleKey.make("192.0.2.99", "239.1.1.1"))).status == ReplyCode.NOT_FOUND
        assert store.audit_log(limit=1)[0]["action"] == "add-sender"  # the refusals audited nothing
    finally:
        store.close()


def test_receiver_commands_are_unsupported_on_the_fleet_port(fleet):
    """Receiver rules and policies are mauthserver's HTTP API's: its protocol port refuses them, changing nothing."""
    from mauthcore.protocol.errors import ReplyCode
    from mauthcore.receivers import IfacePolicy, ReceiverRule

    m, server = fleet
    rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
    client = ClientCore(KEYS)
    for body in (v2.RecvAdd(rule), v2.RecvRemove(rule), v2.RecvList(), v2.RecvDenied(), v2.RecvJoined(),
                 v2.RecvPolicy(), v2.RecvPolicy(IfacePolicy.make("eth1", "closed"))):
        reply = call(server, client, body)
        assert reply.status == ReplyCode.UNSUPPORTED and "HTTP API" in reply.body.message
    assert m.fleet.desired == {}
