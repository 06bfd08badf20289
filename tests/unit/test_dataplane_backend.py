"""The protocol backends musersd runs (DataPlaneBackend, NfqueueBackend) behind the real server core.

Strategy: the backends run unchanged on `FakeDataPlane` (tests/support/fake_dataplane.py),
which stores rules under the real maps' key bytes and reads keys back with the
real decoding, so paging goes through the same `RuleKey.cursor` and
`rules.check_cursor` as on a router. Requests are real v2 datagrams through
`ServerCore.receive()`; every request type is driven with both address families
across page boundaries, a Hypothesis property pages through random mixes of
IPv4, IPv6 and prefix rules and must get each rule exactly once, and a backend
that fails on an unexpected error must cost one INTERNAL answer, not the server.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol import v1, v2
from mauthcore.protocol.errors import ReplyCode
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import Mode, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.v2 import (
    Add,
    Flush,
    GetCounters,
    Hello,
    ListDenied,
    ListRules,
    ModeRequest,
    Remove,
    Replace,
    Request,
)
from mauthcore.rules import Rule, RuleKey
from musersd.dataplane_backend import DataPlaneBackend
from musersd.nfqueue import NfqueueFilter
from musersd.nfqueue_backend import NfqueueBackend
from tests.support.fake_dataplane import FakeDataPlane

SECRET = bytes(range(32))
KEYS = KeyRing([Key(1, SECRET)])
EPOCH = 0x1122334455667788
PEER = ("192.0.2.10", 40000)


class Client:
    """A v2 client by hand: one session, seq counting up."""

    def __init__(self, server: ServerCore) -> None:
        self.server, self.session, self.seq = server, 0, 0

    def send(self, body, *, epoch: int = EPOCH) -> v2.Response:
        self.seq += 1
        wire = v2.encode_request(Request(body, 1, epoch, self.session, self.seq), KEYS)
        out = self.server.receive(wire, PEER, 0.0)
        assert out is not None and len(out) <= v2.MAX_DATAGRAM
        return v2.decode_response(out, KEYS)

    def hello(self) -> v2.Response:
        reply = self.send(Hello(), epoch=0)
        self.session = reply.body.session
        return reply

    def walk(self, body_type, max_count: int = 0) -> tuple[list, int]:
        """Every entry of a listing, page by page; and how many pages it took."""
        entries, cursor, pages, seen = [], b"", 0, set()
        while True:
            reply = self.send(body_type(max_count, cursor))
            assert reply.status == ReplyCode.OK, reply.body
            entries.extend(reply.body.entries)
            pages += 1
            if not reply.body.cursor:
                return entries, pages
            assert reply.body.cursor not in seen
            seen.add(reply.body.cursor)
            cursor = reply.body.cursor


def served(backend_type=DataPlaneBackend, dp: FakeDataPlane | None = None) -> tuple[FakeDataPlane, ServerCore,
                                                                                      Client]:
    if dp is None:
        # The fake holds what the real filter behind this backend holds (NfqueueFilter: IPv4 only).
        dp = FakeDataPlane(families=NfqueueFilter.families if backend_type is NfqueueBackend else (4, 6))
    server = ServerCore(backend_type(dp), KEYS, EPOCH, dp.state_id, lambda host: host == "127.0.0.1")
    client = Client(server)
    client.hello()
    return dp, server, client


def v4_rule(n: int, ttl: int = 16) -> Rule:
    return Rule.make(f"10.0.{n // 256}.{n % 256}", "239.1.2.3", ttl)


def v6_rule(n: int, ttl: int = 16) -> Rule:
    return Rule.make(f"2001:db8::{n + 1:x}", "ff0e::db8:1", ttl)


def prefix_rules() -> list[Rule]:
    return [Rule.make("10.9.0.0/16", "239.1.2.3", 8), Rule.make("10.0.0.1", "239.192.0.0/14", 8),
            Rule.make("2001:db8:1::/48", "ff0e::db8:1", 8), Rule.make("2001:db8::1", "ff3e::/16", 8)]


# --- every request type, both families, across page boundaries ---------------------------------


def test_every_request_with_both_families_across_page_boundaries():
    dp, server, c = served()
    rules = [v4_rule(i) for i in range(30)] + [v6_rule(i) for i in range(30)] + prefix_rules()
    for r in rules:
        assert c.send(Add(r)).status == ReplyCode.OK
    assert c.send(Add(rules[40])).status == ReplyCode.EXISTS
    assert dp.rule_count() == len(rules)

    listed, pages = c.walk(ListRules)
    assert sorted(e.rule for e in listed) == sorted(rules)
    assert pages == -(-len(rules) // v2.MAX_LIST_ENTRIES) and pages > 2
    for size in (1, 2, 7, v2.MAX_LIST_ENTRIES):  # every page boundary lands on both families somewhere
        listed, _ = c.walk(ListRules, size)
        assert [e.rule for e in listed] == sorted(rules, key=lambda r: r.key.cursor)

    changed = [Rule.make(str(r.source), str(r.group), 99) for r in (rules[3], rules[33], rules[-1])]
    for r in changed:
        assert c.send(Replace(r)).body == v2.Replaced(False)
    assert c.send(Replace(v6_rule(500))).body == v2.Replaced(True)
    assert c.send(Remove(rules[34].key)).status == ReplyCode.OK
    assert c.send(Remove(rules[34].key)).status == ReplyCode.NOT_FOUND
    assert c.send(Remove(rules[4].key)).status == ReplyCode.OK
    listed = {e.rule.key: e.rule for e in c.walk(ListRules, 5)[0]}
    assert len(listed) == len(rules) - 1 and all(listed[r.key] == r for r in changed)
    assert rules[34].key not in listed and rules[4].key not in listed

    for i in range(25):
        dp.deny(f"10.1.0.{i}", "239.9.9.9", i + 1)
        dp.deny(f"2001:db8:9::{i + 1:x}", "ff0e::9", i + 1, reason="ttl")
    denied, pages = c.walk(ListDenied)
    assert len(denied) == 50 and len({(d.source, d.group) for d in denied}) == 50 and pages == 3
    assert {d.reason for d in denied if d.source.version == 6} == {Reason.TTL}
    assert len(c.walk(ListDenied, 4)[0]) == 50

    dp.reason_counters["ttl"] = {"packets": 7, "bytes": 700}
    counters = c.send(GetCounters()).body
    assert counters.rule_count == len(rules) - 1 and counters.backend == "xdp"
    assert counters.by_reason()[Reason.TTL].packets == 7
    assert c.send(ModeRequest(Mode.MONITOR)).body == v2.ModeReply(Mode.MONITOR)
    assert c.send(ModeRequest()).body == v2.ModeReply(Mode.MONITOR)
    assert c.hello().body.rule_count == len(rules) - 1
    assert c.send(Flush()).body == v2.Flushed(len(rules) - 1)
    assert c.walk(ListRules) == ([], 1)
    assert server.stats["internal_errors"] == 0


def test_nfqueue_backend_pages_ipv4_and_refuses_ipv6_as_unsupported():
    dp, server, c = served(NfqueueBackend)
    rules = [v4_rule(i) for i in range(40)] + prefix_rules()[:2]
    for r in rules:
        assert c.send(Add(r)).status == ReplyCode.OK
    for r in (v6_rule(1), prefix_rules()[2]):
        assert c.send(Add(r)).status == ReplyCode.UNSUPPORTED
        assert c.send(Replace(r)).status == ReplyCode.UNSUPPORTED
    for size in (0, 1, 6):
        assert sorted(e.rule for e in c.walk(ListRules, size)[0]) == sorted(rules)
    for i in range(30):  # the queue sees IPv4 only, but its listing pages whatever the table holds
        dp.deny(f"10.1.0.{i}", "239.9.9.9")
    dp.deny("2001:db8::1", "ff0e::1")
    assert len(c.walk(ListDenied, 7)[0]) == 31
    assert c.send(GetCounters()).body.backend == "nfqueue"
    assert c.send(Remove(rules[0].key)).status == ReplyCode.OK
    assert c.send(Flush()).body == v2.Flushed(len(rules) - 1)


# --- cursors ---------------------------------------------------------------------------------


def test_the_documented_ipv6_cursor_continues_after_its_key():
    dp, _, c = served()
    rules = [v4_rule(1), v6_rule(0), Rule.make("2001:db8::10", "ff0e::db8:1", 8), v6_rule(100)]
    for r in rules:
        c.send(Add(r))
    cursor = RuleKey.make("2001:db8::10", "ff0e::db8:1").cursor  # the list-request-ipv6-cursor vector's
    page = c.send(ListRules(0, cursor)).body
    assert [e.rule for e in page.entries] == [v6_rule(100)] and page.cursor == b""


def test_a_cursor_is_a_position_so_removing_its_rule_does_not_lose_the_rest():
    dp, _, c = served()
    rules = sorted([v4_rule(i) for i in range(5)] + [v6_rule(i) for i in range(5)], key=lambda r: r.key.cursor)
    for r in rules:
        c.send(Add(r))
    page = c.send(ListRules(5)).body
    assert page.cursor == rules[4].key.cursor and len(page.cursor) == 11
    c.send(Remove(rules[4].key))
    rest = c.send(ListRules(0, page.cursor)).body
    assert [e.rule for e in rest.entries] == rules[5:] and rest.cursor == b""


def test_a_page_ending_on_an_ipv6_rule_hands_out_a_35_byte_cursor():
    dp, _, c = served()
    for i in range(40):
        c.send(Add(v6_rule(i)))
    page = c.send(ListRules()).body
    assert len(page.entries) == v2.MAX_LIST_ENTRIES and len(page.cursor) == 35
    assert page.cursor == page.entries[-1].rule.key.cursor


@pytest.mark.parametrize("cursor", [
    b"\x07garbage",
    b"\x04" + bytes(9),  # IPv4 family, one byte short
    b"\x06" + bytes(33),  # IPv6 family, one byte short
    b"\x04" + bytes(8) + b"\x21\x20",  # source length 33 in IPv4
    b"\x06" + bytes(32) + b"\x80\x81",  # group length 129 in IPv6
    RuleKey.make("10.0.0.1", "239.1.1.1").cursor[:-1] + b"\x20\x20",  # IPv4 key with an IPv6 length
    b"\x04" + RuleKey.make("2001:db8::1", "ff0e::1").cursor[1:],  # IPv6 bytes, IPv4 family
])
@pytest.mark.parametrize("body_type", [ListRules, ListDenied])
def test_a_cursor_of_no_known_shape_is_invalid_argument(cursor, body_type):
    dp, server, c = served()
    c.send(Add(v4_rule(1)))
    reply = c.send(body_type(0, cursor))
    if cursor[:1] == b"\x04" and len(cursor) == 11 and cursor[-2] <= 32 and cursor[-1] <= 32:
        assert reply.status == ReplyCode.OK  # a well-formed position, even of a key nobody has
    else:
        assert reply.status == ReplyCode.INVALID_ARGUMENT and "cursor" in reply.body.message
    assert server.stats["internal_errors"] == 0


# --- the property: every rule exactly once ----------------------------------------------------

_v4_hosts = st.integers(1, 250).map(lambda n: f"10.0.0.{n}")
_v6_hosts = st.integers(1, 2**16 - 1).map(lambda n: f"2001:db8::{n:x}")
_v4_groups = st.integers(1, 250).map(lambda n: f"239.1.1.{n}")
_v6_groups = st.integers(1, 2**16 - 1).map(lambda n: f"ff0e::{n:x}")
_rules = st.one_of(
    st.builds(lambda s, g: Rule.make(s, g, 8), _v4_hosts, _v4_groups),
    st.builds(lambda s, g: Rule.make(s, g, 8), _v6_hosts, _v6_groups),
    st.builds(lambda n, g: Rule.make(f"10.{n}.0.0/16", g, 8), st.integers(1, 250), _v4_groups),
    st.builds(lambda s, n: Rule.make(s, f"239.{n}.0.0/16", 8), _v4_hosts, st.integers(0, 255)),
    st.builds(lambda n, g: Rule.make(f"2001:db8:{n:x}::/48", g, 8), st.integers(1, 2**16 - 1), _v6_groups),
    st.builds(lambda s, n: Rule.make(s, f"ff{n:x}e::/16", 8), _v6_hosts, st.integers(0, 15)),
    st.builds(lambda n, g: Rule.make(f"2001:db8::{n:x}", g, 8), st.integers(1, 2**16 - 1), _v6_groups),
)


@given(st.lists(_rules, max_size=80, unique_by=lambda r: r.key), st.integers(0, 20),
       st.sampled_from([DataPlaneBackend, NfqueueBackend]))
def test_paging_through_random_mixes_gets_each_rule_exactly_once(rules, max_count, backend_type):
    dp = FakeDataPlane()
    for r in rules:  # straight into the tables: the NFQUEUE backend refuses to add IPv6, not to list it
        dp.add_rule(r)
    _, server, c = served(backend_type, dp)
    listed, pages = c.walk(ListRules, max_count)
    assert sorted(e.rule for e in listed) == sorted(rules)
    assert len(listed) == len({e.rule.key for e in listed})
    per_page = min(max_count or v2.MAX_LIST_ENTRIES, v2.MAX_LIST_ENTRIES)
    assert pages == max(1, -(-len(rules) // per_page))
    for r in rules:
        dp.deny(r.key.source_address, r.key.group_address)
    denied, _ = c.walk(ListDenied, max_count)
    pairs = {(r.key.source_address, r.key.group_address) for r in rules}
    assert len(denied) == len(rules) and {(d.source, d.group) for d in denied} == pairs
    assert server.stats["internal_errors"] == 0


# --- no request can stop the server -------------------------------------------------------------


class _Broken(DataPlaneBackend):
    """A backend with a bug: one operation raises what no backend should."""

    def __init__(self, dp, fail: str) -> None:
        super().__init__(dp)
        self.fail = fail

    def __getattribute__(self, name):
        if name == object.__getattribute__(self, "fail"):
            def broken(*args, **kwargs):
                raise RuntimeError(f"bug in {name}")
            return broken
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("fail,body", [
    ("add", Add(v6_rule(1))), ("replace", Replace(v4_rule(1))), ("remove", Remove(v6_rule(2).key)),
    ("list", ListRules(3)), ("denied", ListDenied()), ("counters", GetCounters()), ("flush", Flush()),
    ("set_mode", ModeRequest(Mode.MONITOR)), ("get_mode", ModeRequest()),
])
def test_a_request_that_fails_on_a_bug_is_answered_internal_and_the_server_goes_on(fail, body, caplog):
    dp = FakeDataPlane()
    backend = _Broken(dp, "")
    server = ServerCore(backend, KEYS, EPOCH, 1)
    c = Client(server)
    c.hello()
    backend.fail = fail  # after HELLO, which reads the counters and the mode
    reply = c.send(body)
    assert reply.status == ReplyCode.INTERNAL and "RuntimeError" in reply.body.message
    assert server.stats["internal_errors"] == 1 and "bug in" in caplog.text
    # the duplicate is answered from memory, not executed again; the next request is served
    wire = v2.encode_request(Request(body, 1, EPOCH, c.session, c.seq), KEYS)
    assert v2.decode_response(server.receive(wire, PEER, 0.0), KEYS).status == ReplyCode.INTERNAL
    assert server.stats["duplicates"] == 1 and server.stats["internal_errors"] == 1
    other = Add(v4_rule(7)) if fail != "add" else Remove(v4_rule(8).key)
    assert c.send(other).status in (ReplyCode.OK, ReplyCode.NOT_FOUND)
    backend.fail = ""
    assert c.send(GetCounters()).status == ReplyCode.OK


def test_a_reply_that_cannot_be_encoded_is_answered_internal():
    class Oversized(DataPlaneBackend):
        def list(self, cursor, limit):
            page = super().list(cursor, limit)
            return type(page)(page.items, b"\x06" * (v2.MAX_CURSOR + 1))

    dp = FakeDataPlane()
    for i in range(30):
        dp.add_rule(v6_rule(i))
    server = ServerCore(Oversized(dp), KEYS, EPOCH, 1)
    c = Client(server)
    c.hello()
    reply = c.send(ListRules())
    assert reply.status == ReplyCode.INTERNAL and server.stats["internal_errors"] == 1
    assert c.send(GetCounters()).body.rule_count == 30


def test_a_v1_request_that_fails_on_a_bug_is_answered_error():
    server = ServerCore(_Broken(FakeDataPlane(), "replace"), KEYS, EPOCH, 1, lambda host: True)
    wire = v1.encode_request(v1.V1Add(1, v4_rule(1)))
    assert v1.decode_response(server.receive(wire, PEER, 0.0)).type == v1.V1Type.ERROR
    assert server.stats["internal_errors"] == 1


def test_a_fault_outside_one_command_drops_the_datagram_and_the_server_goes_on(monkeypatch):
    dp, server, c = served()
    monkeypatch.setattr(server, "_receive_v2", lambda *a: 1 / 0)
    assert server.receive(b"MAU" + bytes(100), PEER, 0.0) is None
    assert server.stats["internal_errors"] == 1
    monkeypatch.undo()
    assert c.send(GetCounters()).status == ReplyCode.OK


def test_ipv6_addresses_in_denied_pages_survive_the_round_trip():
    dp, _, c = served()
    dp.deny("2001:db8::1", "ff0e::1", reason="mld")
    (entry,), _ = c.walk(ListDenied)
    assert entry.source == ipaddress.IPv6Address("2001:db8::1") and entry.reason == Reason.MLD
