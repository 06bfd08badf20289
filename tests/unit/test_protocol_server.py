"""ServerCore: the at-most-once state machine, fed datagrams with a fake clock.

Every test asserts on what the backend executed (MemoryBackend.log) and on
the server's counters, not only on the replies.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol import v1, v2
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.errors import BackendUnsupported, LocalProtocolError, ReplyCode
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import DeniedEntry, Mode, Reason
from mauthcore.protocol.server import STATS, ServerCore
from mauthcore.protocol.v2 import (
    Add,
    Command,
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

SECRET = bytes(range(32))
KEYS = KeyRing([Key(1, SECRET), Key(2, b"\x22" * 16)])
WRONG = KeyRing([Key(1, b"\x99" * 32)])
EPOCH = 0x1122334455667788
STATE_ID = 0xCAFEF00D
PEER = ("192.0.2.10", 40000)
LOCAL = ("127.0.0.1", 40001)


def rule(n: int = 1, ttl: int = 16) -> Rule:
    return Rule.make(f"10.0.{n // 256}.{n % 256}", "239.1.2.3", ttl)


def make(backend: MemoryBackend | None = None, **kw) -> ServerCore:
    return ServerCore(backend if backend is not None else MemoryBackend(), KEYS, EPOCH, STATE_ID,
                      lambda host: host == "127.0.0.1", **kw)


def mutations(backend: MemoryBackend) -> list:
    return [entry for entry in backend.log if entry[0] in ("add", "replace", "remove", "flush", "set_mode")]


class Client:
    """Hand-driven v2 requests (the real client core is tested in test_protocol_pair)."""

    def __init__(self, server: ServerCore, keys: KeyRing = KEYS, key_id: int = 1) -> None:
        self.server, self.keys, self.key_id = server, keys, key_id
        self.session = 0
        self.seq = 0
        self.peer = PEER

    def hello(self, now: float = 0.0) -> v2.Response:
        reply = self.send(Hello(), epoch=0, session=0, seq=12345, now=now)
        self.session = reply.body.session
        return reply

    def wire(self, body, *, epoch: int = EPOCH, session: int | None = None, seq: int | None = None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return v2.encode_request(
            Request(body, self.key_id, epoch, self.session if session is None else session, seq), self.keys)

    def deliver(self, wire: bytes, now: float = 0.0) -> v2.Response | None:
        out = self.server.receive(wire, self.peer, now)
        return None if out is None else v2.decode_response(out, KEYS)

    def send(self, body, now: float = 0.0, **kw) -> v2.Response | None:
        return self.deliver(self.wire(body, **kw), now)


# --- dispatch -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x01", b"x" * 10, b"x" * 12, b"GET / HTTP/1.0\r\n\r\n",
                                  b"\x00" * 200])
def test_unrecognized_datagrams_are_ignored_and_counted(data):
    server = make()
    assert server.receive(data, PEER, 0.0) is None
    assert server.stats["unrecognized"] == 1
    assert server.backend.log == []


def test_stats_have_help_and_start_at_zero():
    server = make()
    assert set(server.stats) == set(STATS)
    assert all(value == 0 for value in server.stats.values())
    assert {"requests_add", "requests_hello", "replies_replay", "executed", "duplicates", "replays", "bad_auth",
            "unknown_key", "stale_epoch", "malformed", "v1_refused"} <= set(STATS)


def test_constructor_refuses_epoch_zero():
    with pytest.raises(LocalProtocolError):
        ServerCore(MemoryBackend(), KEYS, 0, STATE_ID)


# --- v1 ---------------------------------------------------------------------------------


FIRST = rule()  # the default rule of the v1 helpers below


def v1_add(seq: int, r: Rule = FIRST) -> bytes:
    return v1.encode_request(v1.V1Add(seq, r))


def v1_remove(seq: int, key: RuleKey = FIRST.key) -> bytes:
    return v1.encode_request(v1.V1Remove(seq, key))


ACK = lambda seq: bytes([0, seq])  # noqa: E731
ERROR = lambda seq: bytes([1, seq])  # noqa: E731


def test_v1_from_an_address_not_allowed_is_ignored_and_counted():
    server = make()
    assert server.receive(v1_add(1), PEER, 0.0) is None
    assert server.receive(v1_add(1), ("127.0.0.2", 5), 0.0) is None
    assert server.stats["v1_refused"] == 2
    assert server.backend.log == [] and server.backend.rules == {}


def test_v1_add_and_remove():
    server = make()
    assert server.receive(v1_add(1), LOCAL, 0.0) == ACK(1)
    assert server.backend.rules == {rule().key: rule()}
    assert server.receive(v1_add(2, rule(ttl=5)), LOCAL, 0.0) == ACK(2)  # v1 ADD is add-or-update
    assert server.backend.rules[rule().key].max_ttl == 5
    assert server.receive(v1_remove(3), LOCAL, 0.0) == ACK(3)
    assert server.receive(v1_remove(4), LOCAL, 0.0) == ERROR(4)  # not found
    assert server.backend.rules == {}
    assert server.stats["v1_ack"] == 3 and server.stats["v1_error"] == 1 and server.stats["executed"] == 4


def test_v1_duplicate_is_answered_from_memory():
    server = make()
    for _ in range(5):
        assert server.receive(v1_add(7), LOCAL, 0.0) == ACK(7)
    assert mutations(server.backend) == [("replace", rule())]
    assert server.stats["v1_duplicates"] == 4


def test_v1_duplicate_of_an_error_is_the_same_error():
    server = make()
    assert server.receive(v1_remove(7), LOCAL, 0.0) == ERROR(7)
    server.backend.rules[rule().key] = rule()
    assert server.receive(v1_remove(7), LOCAL, 0.0) == ERROR(7)  # from memory: not executed again
    assert rule().key in server.backend.rules


@pytest.mark.parametrize("last,old", [(10, 9), (10, 10), (0, 255), (0, 128), (200, 72), (5, 133)])
def test_v1_late_request_with_an_older_seq_is_never_executed(last, old):
    server = make()
    assert server.receive(v1_add(last), LOCAL, 0.0) == ACK(last)
    late = v1_remove(old)  # different bytes, seq not newer
    assert server.receive(late, LOCAL, 1.0) is None
    assert mutations(server.backend) == [("replace", rule())]
    assert server.stats["v1_stale"] == 1


def test_v1_seq_wraps_around():
    server = make()
    for i in range(600):
        seq = i % 256
        assert server.receive(v1_add(seq, rule(i)), LOCAL, float(i)) == ACK(seq)
    assert len(server.backend.rules) == 600


def test_v1_windows_are_per_address_and_port():
    server = make()
    assert server.receive(v1_add(5, rule(1)), ("127.0.0.1", 1000), 0.0) == ACK(5)
    assert server.receive(v1_add(5, rule(2)), ("127.0.0.1", 1001), 0.0) == ACK(5)
    assert server.receive(v1_add(4, rule(3)), ("127.0.0.1", 1002), 0.0) == ACK(4)
    assert len(server.backend.rules) == 3


def test_v1_unknown_command_and_invalid_rule_get_error():
    server = make()
    assert server.receive(bytes([9, 0x05]) + bytes(9), LOCAL, 0.0) == ERROR(9)
    assert server.receive(bytes([10, 0x00]) + bytes.fromhex("0a000001 0a000002 10".replace(" ", "")), LOCAL,
                          0.0) == ERROR(10)
    assert server.receive(bytes([11, 0x00]) + bytes.fromhex("0a000001ef01020300"), LOCAL, 0.0) == ERROR(11)
    assert server.backend.log == []
    assert server.stats["requests_unknown"] == 1


def test_v1_remove_ignores_max_ttl():
    server = make(MemoryBackend([rule()]))
    assert server.receive(v1.encode_request(v1.V1Remove(3, rule().key, 0)), LOCAL, 0.0) == ACK(3)
    assert server.backend.rules == {}


def test_v1_entry_expires_so_a_restarted_client_can_start_anywhere():
    server = make(v1_lifetime=120.0)
    assert server.receive(v1_add(100, rule(1)), LOCAL, 0.0) == ACK(100)
    assert server.receive(v1_add(50, rule(2)), LOCAL, 60.0) is None  # older, within the lifetime
    assert server.receive(v1_add(50, rule(2)), LOCAL, 181.0) == ACK(50)  # 121 s idle: forgotten
    assert len(server.backend.rules) == 2


def test_v1_client_table_is_bounded():
    server = make(v1_max_clients=2, v1_lifetime=10.0)
    assert server.receive(v1_add(1, rule(1)), ("127.0.0.1", 1), 0.0) == ACK(1)
    assert server.receive(v1_add(1, rule(2)), ("127.0.0.1", 2), 0.0) == ACK(1)
    assert server.receive(v1_add(1, rule(3)), ("127.0.0.1", 3), 5.0) is None  # full of live entries
    assert server.stats["v1_busy"] == 1
    assert server.receive(v1_add(1, rule(3)), ("127.0.0.1", 3), 11.0) == ACK(1)  # the oldest had expired
    assert server.v1_client_count == 2 and len(server.backend.rules) == 3


# --- v2: hello, commands ---------------------------------------------------------------


def test_hello_reports_the_router_state():
    server = make(MemoryBackend([rule(1), rule(2)], mode=Mode.MONITOR))
    reply = Client(server).hello()
    assert reply.ok and reply.authenticated and reply.epoch == EPOCH
    assert reply.body == v2.HelloReply(1, STATE_ID, 2, Mode.MONITOR, "memory")
    assert Client(server).hello().body.session == 2  # every HELLO opens a new session
    assert server.stats["sessions_opened"] == 2 and server.stats["requests_hello"] == 2
    assert mutations(server.backend) == []


def test_commands_execute_and_map_backend_errors_to_codes():
    backend = MemoryBackend(capacity=2)
    server = make(backend)
    c = Client(server)
    c.hello()
    assert c.send(Add(rule(1))).status == ReplyCode.OK
    reply = c.send(Add(rule(1)))
    assert reply.status == ReplyCode.EXISTS and "already exists" in reply.body.message
    assert c.send(Replace(rule(1, ttl=3))).body == v2.Replaced(False)
    assert c.send(Replace(rule(2))).body == v2.Replaced(True)
    assert c.send(Add(rule(3))).status == ReplyCode.TABLE_FULL
    assert c.send(Remove(rule(9).key)).status == ReplyCode.NOT_FOUND
    assert c.send(Remove(rule(2).key)).status == ReplyCode.OK
    assert c.send(ModeRequest()).body == v2.ModeReply(Mode.ENFORCE)
    assert c.send(ModeRequest(Mode.MONITOR)).body == v2.ModeReply(Mode.MONITOR)
    assert backend.mode == Mode.MONITOR
    backend.reason_counters[Reason.TTL] = (4, 400)
    counters = c.send(GetCounters()).body
    assert counters.rule_count == 1 and counters.mode == Mode.MONITOR and counters.backend == "memory"
    assert counters.by_reason()[Reason.TTL].packets == 4
    assert c.send(Flush()).body == v2.Flushed(1)
    assert backend.rules == {}
    assert server.stats["replies_exists"] == 1 and server.stats["replies_table_full"] == 1


def test_list_and_denied_are_paged_within_a_datagram():
    backend = MemoryBackend()
    rules = [rule(i) for i in range(60)]
    for i, r in enumerate(rules):
        backend.rules[r.key] = r
        backend.traffic[r.key] = (i, 100 * i, 1_700_000_000_000 + i)
    backend.denied_entries = [
        DeniedEntry(ipaddress.IPv4Address(f"10.1.0.{i}"), ipaddress.IPv4Address("239.9.9.9"), Reason.UNAUTHORIZED,
                    i, i * 60, 32, 1_700_000_000_000) for i in range(50)
    ]
    server = make(backend)
    c = Client(server)
    c.hello()
    for body_type, expected, most in ((ListRules, 60, v2.MAX_LIST_ENTRIES), (ListDenied, 50, v2.MAX_DENIED_ENTRIES)):
        got, cursor, pages = [], b"", 0
        while True:
            wire = server.receive(c.wire(body_type(0, cursor)), PEER, 0.0)
            assert len(wire) <= v2.MAX_DATAGRAM
            page = v2.decode_response(wire, KEYS).body
            assert len(page.entries) <= most
            got.extend(page.entries)
            pages += 1
            if not page.cursor:
                break
            cursor = page.cursor
        assert len(got) == expected and len(set(got)) == expected
        assert pages == -(-expected // most)
        if body_type is ListRules:
            listed = {e.rule: e for e in got}
    assert listed[rules[7]].packets == 7 and listed[rules[7]].octets == 700
    page = v2.decode_response(server.receive(c.wire(ListRules(5)), PEER, 0.0), KEYS).body
    assert len(page.entries) == 5 and page.cursor  # a client may ask for fewer


def test_list_with_a_bad_cursor_is_invalid_argument():
    server = make()
    c = Client(server)
    c.hello()
    assert c.send(ListRules(0, b"\x07garbage")).status == ReplyCode.INVALID_ARGUMENT


def _v6_rule(source: str, group: str, *, src_plen: int = 128, grp_plen: int = 128, ttl: int = 16) -> bytes:
    """A rule record of family 6, written field by field as docs/protocol.md lays it out."""
    return (bytes([6, src_plen, grp_plen, ttl]) + bytes(12) + ipaddress.IPv6Address(source).packed
            + ipaddress.IPv6Address(group).packed)


class IPv4OnlyBackend(MemoryBackend):
    """A backend that refuses IPv6 rules, as the nfqueue one does."""

    def add(self, rule: Rule) -> None:
        if rule.key.family == 6:
            raise BackendUnsupported(f"this backend filters IPv4 only, so it cannot hold the rule for {rule.key}")
        super().add(rule)


def test_ipv6_rules_execute_and_invalid_ones_are_answered_and_remembered():
    server = make()
    c = Client(server)
    c.hello()
    wire = _signed_request(Command.ADD, _v6_rule("2001:db8:0:1::", "ff0e::db8:1", src_plen=64), c.session, 1)
    first = server.receive(wire, PEER, 0.0)
    assert v2.decode_response(first, KEYS).status == ReplyCode.OK
    assert server.receive(wire, PEER, 1.0) == first  # a duplicate: answered from memory, not executed again
    assert mutations(server.backend) == [("add", Rule.make("2001:db8:0:1::/64", "ff0e::db8:1", 16))]
    link_scope = _signed_request(Command.ADD, _v6_rule("2001:db8::1", "ff02::1"), c.session, 2)
    reply = v2.decode_response(server.receive(link_scope, PEER, 0.0), KEYS)
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "link-scope group" in reply.body.message
    link_local = _signed_request(Command.ADD, _v6_rule("fe80::1", "ff0e::1"), c.session, 3)
    reply = v2.decode_response(server.receive(link_local, PEER, 0.0), KEYS)
    assert reply.status == ReplyCode.INVALID_ARGUMENT and "link-local" in reply.body.message
    bad_group = bytes.fromhex("0420201000000000" "0000000000000000" "0a000001" "0a000002")
    reply = v2.decode_response(server.receive(_signed_request(Command.ADD, bad_group, c.session, 4), PEER, 0.0), KEYS)
    assert reply.status == ReplyCode.INVALID_ARGUMENT
    reply = v2.decode_response(server.receive(_signed_request(0x42, b"", c.session, 5), PEER, 0.0), KEYS)
    assert reply.status == ReplyCode.UNKNOWN_COMMAND
    assert len(mutations(server.backend)) == 1


def test_a_backend_that_cannot_hold_a_rule_answers_unsupported_and_it_is_remembered():
    server = make(IPv4OnlyBackend())
    c = Client(server)
    c.hello()
    wire = _signed_request(Command.ADD, _v6_rule("2001:db8::1", "ff3e::1"), c.session, 1)
    first = server.receive(wire, PEER, 0.0)
    reply = v2.decode_response(first, KEYS)
    assert reply.status == ReplyCode.UNSUPPORTED and reply.authenticated and "IPv4 only" in reply.body.message
    assert server.receive(wire, PEER, 1.0) == first  # remembered like any answer
    assert server.stats["duplicates"] == 1
    assert server.backend.rules == {}


def _signed_request(command: int, body: bytes, session: int, seq: int, *, epoch: int = EPOCH,
                    body_len: int | None = None, reserved: int = 0) -> bytes:
    header = b"MAU\x02\x01" + struct.pack("!BBBHHQQQ", command, 0, reserved, 1,
                                         len(body) if body_len is None else body_len, epoch, session, seq)
    return header + body + v2.mac(SECRET, header + body)


def test_authenticated_framing_errors_get_an_authenticated_malformed():
    server = make()
    c = Client(server)
    c.hello()
    for wire in (_signed_request(Command.FLUSH, b"", c.session, 1, body_len=3),
                 _signed_request(Command.FLUSH, b"", c.session, 1, reserved=1)):
        reply = v2.decode_response(server.receive(wire, PEER, 0.0), KEYS)
        assert reply.status == ReplyCode.MALFORMED and reply.authenticated
    assert server.stats["malformed"] == 2 and mutations(server.backend) == []


def test_a_backend_bug_costs_one_internal_answer_not_the_daemon():
    class Broken(MemoryBackend):
        def add(self, rule):
            raise RuntimeError("bug")

    server = make(Broken())
    c = Client(server)
    c.hello()
    reply = c.send(Add(rule()))
    assert reply.status == ReplyCode.INTERNAL and server.stats["internal_errors"] == 1
    assert c.send(Remove(rule().key)).status == ReplyCode.NOT_FOUND  # the next request is served


# --- v2: duplicates, replays, forgeries --------------------------------------------------


def test_duplicate_is_answered_from_memory_without_executing():
    server = make()
    c = Client(server)
    c.hello()
    wire = c.wire(Add(rule()))
    first = server.receive(wire, PEER, 0.0)
    for t in range(1, 6):
        assert server.receive(wire, PEER, float(t)) == first
    assert mutations(server.backend) == [("add", rule())]
    assert server.stats["duplicates"] == 5 and server.stats["executed"] == 2  # HELLO and ADD


def test_remembered_answers_go_only_to_the_original_address():
    server = make()
    c = Client(server)
    c.hello()
    wire = c.wire(ListRules())
    first = server.receive(wire, PEER, 0.0)
    assert server.receive(wire, ("198.51.100.7", 53), 0.0) is None  # spoofed victim: no reflection
    assert server.receive(wire, PEER, 0.0) == first
    assert server.stats["duplicates_elsewhere"] == 1 and server.stats["duplicates"] == 1
    assert c.send(Flush(), now=1.0).ok  # the session goes on from anywhere


def test_replayed_older_request_is_refused_and_counted():
    server = make()
    c = Client(server)
    c.hello()
    captured = c.wire(Add(rule(1)))
    server.receive(captured, PEER, 0.0)
    assert c.send(Remove(rule(1).key)).ok
    reply = c.deliver(captured, 5.0)  # the attacker replays the old ADD
    assert reply.status == ReplyCode.REPLAY and reply.authenticated
    assert server.backend.rules == {}
    same_seq = c.wire(Add(rule(2)), seq=c.seq)  # the last seq again, other content
    assert c.deliver(same_seq).status == ReplyCode.REPLAY
    assert mutations(server.backend) == [("add", rule(1)), ("remove", rule(1).key)]
    assert server.stats["replays"] == 2


def test_messages_from_before_a_restart_are_stale():
    backend = MemoryBackend()
    server = make(backend)
    c = Client(server)
    captured_hello = c.wire(Hello(), epoch=0, session=0, seq=1)
    c.hello()
    captured = c.wire(Add(rule(1)))
    server.receive(captured, PEER, 0.0)
    assert c.send(Remove(rule(1).key)).ok
    # the daemon restarts: a new epoch, the same tables (pinned maps)
    restarted = ServerCore(backend, KEYS, EPOCH + 1, STATE_ID)
    c.server = restarted
    reply = c.deliver(captured)
    assert reply.status == ReplyCode.STALE_EPOCH and reply.authenticated and reply.epoch == EPOCH + 1
    assert c.deliver(captured_hello).ok  # a replayed HELLO is harmless: it only opens a session
    assert c.deliver(captured).status == ReplyCode.STALE_EPOCH
    assert restarted.stats["stale_epoch"] == 2
    assert mutations(backend) == [("add", rule(1)), ("remove", rule(1).key)]


def test_forged_requests_are_rejected_counted_and_never_executed():
    server = make(unauth_rate=0)
    c = Client(server)
    c.hello()
    wire = c.wire(Add(rule()))
    for i in range(len(wire) * 8):
        forged = bytearray(wire)
        forged[i // 8] ^= 1 << (i % 8)
        out = server.receive(bytes(forged), PEER, 0.0)
        assert out is None  # unauthenticated notices are switched off here
    assert mutations(server.backend) == []
    s = server.stats
    assert s["bad_auth"] + s["unknown_key"] + s["not_v2"] + s["unrecognized"] == len(wire) * 8
    assert s["bad_auth"] > 0 and s["unknown_key"] == 16 and s["not_v2"] > 0
    assert server.receive(wire, PEER, 0.0) is not None and server.backend.rules  # the genuine one still works


def test_wrong_key_gets_a_small_unauthenticated_notice():
    server = make()
    c = Client(server)
    c.hello()
    forged = Client(server, keys=WRONG)
    forged.session = c.session
    wire = forged.wire(Add(rule()))
    out = server.receive(wire, PEER, 0.0)
    notice = v2.decode_response(out, None)
    assert notice.status == ReplyCode.BAD_AUTH and not notice.authenticated
    assert notice.epoch == 0 and len(out) < len(wire)  # reveals nothing, amplifies nothing
    assert notice.in_reply_to == wire[-32:-16]
    unknown = Client(server, keys=KeyRing([Key(9, SECRET)]), key_id=9)
    notice = v2.decode_response(server.receive(unknown.wire(Flush(), session=c.session), PEER, 0.0), None)
    assert notice.status == ReplyCode.UNKNOWN_KEY
    assert server.stats["bad_auth"] == 1 and server.stats["unknown_key"] == 1
    assert mutations(server.backend) == []


def test_unauthenticated_notices_are_rate_limited():
    server = make(unauth_rate=10.0, unauth_burst=5)
    forged = Client(server, keys=WRONG)
    sent = sum(server.receive(forged.wire(Flush(), session=1), PEER, 0.0) is not None for _ in range(50))
    assert sent == 5 and server.stats["unauth_suppressed"] == 45
    assert server.receive(forged.wire(Flush(), session=1), PEER, 1.0) is not None  # refilled


def test_responses_fed_to_the_server_are_ignored():
    server = make()
    c = Client(server)
    c.hello()
    reply = server.receive(c.wire(Flush()), PEER, 0.0)
    assert server.receive(reply, PEER, 0.0) is None  # no reflection loop between two servers
    assert server.stats["not_v2"] == 1


def test_v2_without_keys_is_ignored():
    server = ServerCore(MemoryBackend(), None, EPOCH, STATE_ID)
    assert server.receive(Client(make()).wire(Hello(), epoch=0, session=0), PEER, 0.0) is None
    assert server.stats["v2_disabled"] == 1


def test_keys_can_be_rotated_without_losing_sessions():
    server = make()
    c = Client(server)
    c.hello()
    assert c.send(Add(rule(1))).ok
    new = KeyRing([Key(3, b"\x33" * 32), Key(1, SECRET)])  # new key first, old still accepted
    server.set_keys(new)
    c.keys, c.key_id = new, 3
    reply = v2.decode_response(server.receive(c.wire(Add(rule(2))), PEER, 0.0), new)
    assert reply.ok and reply.key_id == 3  # answered with the key the request used
    server.set_keys(KeyRing([Key(3, b"\x33" * 32)]))  # old key retired
    stale = Client(server, keys=KEYS)
    stale.session, stale.seq = c.session, c.seq
    assert server.receive(stale.wire(Add(rule(3))), PEER, 0.0) is not None  # an UNKNOWN_KEY notice
    assert server.stats["unknown_key"] == 1 and len(server.backend.rules) == 2


# --- v2: sessions ----------------------------------------------------------------------------


def test_sessions_never_issued_are_stale():
    server = make()
    c = Client(server)
    c.hello()
    for session in (0, c.session + 1, 2**64 - 1):
        assert c.send(Flush(), session=session).status == ReplyCode.STALE_SESSION
    assert server.stats["stale_session"] == 3 and mutations(server.backend) == []


def test_full_table_refuses_with_busy_while_sessions_are_young():
    server = make(max_clients=2, session_grace=300.0)
    a, b, c = Client(server), Client(server), Client(server)
    for client in (a, b, c):
        client.hello()
    assert a.send(Add(rule(1)), now=0.0).ok
    assert b.send(Add(rule(2)), now=10.0).ok
    busy = c.send(Add(rule(3)), now=100.0)
    assert busy.status == ReplyCode.BUSY and server.stats["busy"] == 1
    assert a.send(Add(rule(4)), now=200.0).ok  # known sessions carry on
    assert set(server.backend.rules) == {rule(1).key, rule(2).key, rule(4).key}


def test_eviction_never_reopens_replay():
    """The safety property of the bounded table: an evicted session's requests are never executed again."""
    server = make(max_clients=2, session_grace=300.0)
    a, b, c = Client(server), Client(server), Client(server)
    a.hello(), b.hello()
    captured = a.wire(Add(rule(1)))
    assert a.deliver(captured, 0.0).ok
    assert a.send(Remove(rule(1).key), now=1.0).ok
    assert b.send(Add(rule(2)), now=2.0).ok
    c.hello(now=400.0)
    assert c.send(Add(rule(3)), now=400.0).ok  # a (idle 399 s) is evicted to make room
    assert server.stats["sessions_evicted"] == 1
    assert a.deliver(captured, 401.0).status == ReplyCode.STALE_SESSION  # not "new session, execute"
    assert a.send(Add(rule(5)), now=402.0).status == ReplyCode.STALE_SESSION  # a must say HELLO again
    assert rule(1).key not in server.backend.rules
    a.hello(now=403.0)
    assert a.send(Add(rule(5)), now=403.0 + 300).ok  # b idle since 2.0: evicted now
    assert mutations(server.backend).count(("add", rule(1))) == 1


def test_issued_but_unused_session_below_the_eviction_mark_is_stale():
    server = make(max_clients=1, session_grace=1.0)
    a, b, c = Client(server), Client(server), Client(server)
    a.hello(), b.hello(), c.hello()  # sessions 1, 2, 3
    assert c.send(Flush(), now=0.0).ok  # 3 in the table
    assert a.send(Flush(), now=5.0).ok  # evicts 3: mark = 3, so 1 (in the table now) is fine
    assert b.send(Flush(), now=5.0).status == ReplyCode.STALE_SESSION  # 2 <= mark, not in the table


# --- hostile input ------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from([PEER, LOCAL])), max_size=8))
def test_random_datagrams_never_raise(datagrams):
    server = make()
    for data, peer in datagrams:
        out = server.receive(data, peer, 0.0)
        assert out is None or isinstance(out, bytes)


@given(st.integers(0, 255), st.binary(max_size=80), st.integers(0, 4), st.integers(0, 3))
def test_random_authenticated_requests_never_raise(command, body, session, seq):
    server = make()
    Client(server).hello()
    out = server.receive(_signed_request(command, body, session, seq), PEER, 0.0)
    assert out is not None
    reply = v2.decode_response(out, KEYS)
    assert reply.authenticated and reply.session == session and reply.seq == seq
