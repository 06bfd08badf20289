"""Client core and server core joined by a hostile in-memory link (h11 ConnectionPair style).

The link loses, duplicates and delays (so reorders) datagrams; the clock is
fake and jumps to the next event. The property: thousands of commands end
with exactly the intended rule set, and the backend's log shows each one
executed exactly once, in order. Then a few client-core unit tests. The
client over real UDP on 127.0.0.1 is tests/loopback/test_protocol_pair.py.
"""

from __future__ import annotations

import heapq
import itertools
import random

import pytest

from mauthcore.protocol import v1, v2
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.client import ClientCore, RetryPolicy, V1ClientCore
from mauthcore.protocol.errors import (
    LocalProtocolError,
    ReplyCode,
    Timeout,
)
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.udp import RouterClient
from mauthcore.rules import Rule, RuleKey

KEYS = KeyRing([Key(1, bytes(range(32)))])
EPOCH = 0x5EED
PEER = ("127.0.0.1", 50000)
FAST = RetryPolicy(timeout=0.05, tries=30, backoff=2.0, max_timeout=0.2)


class LossyLink:
    """Datagrams in flight: each is lost with `loss`, else doubled with `dup`, each copy delayed up to `max_delay`."""

    def __init__(self, rng: random.Random, loss: float, dup: float, max_delay: float) -> None:
        self.rng, self.loss, self.dup, self.max_delay = rng, loss, dup, max_delay
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()
        self.sent = self.lost = self.duplicated = 0

    def send(self, to: str, data: bytes, now: float) -> None:
        self.sent += 1
        if self.rng.random() < self.loss:
            self.lost += 1
            return
        copies = 1
        if self.rng.random() < self.dup:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            heapq.heappush(self._queue, (now + self.rng.uniform(0, self.max_delay), next(self._order), to, data))

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def pop(self) -> tuple[float, str, bytes]:
        t, _, to, data = heapq.heappop(self._queue)
        return t, to, data


class Pair:
    """One client's calls against a ServerCore over a LossyLink, on a fake clock."""

    def __init__(self, server: ServerCore, link: LossyLink) -> None:
        self.server, self.link, self.now = server, link, 0.0

    def run(self, call):
        self.link.send("server", call.start(self.now), self.now)
        while True:
            t = self.link.next_time()
            if t is not None and t <= call.next_deadline:
                self.now, to, data = self.link.pop()
                if to == "server":
                    self._to_server(data)
                    continue
                out = call.on_datagram(data, self.now)
                if isinstance(out, bytes):
                    self.link.send("server", out, self.now)
                elif out is not None:
                    return out
            else:
                self.now = call.next_deadline
                self.link.send("server", call.on_timeout(self.now), self.now)

    def _to_server(self, data: bytes) -> None:
        reply = self.server.receive(data, PEER, self.now)
        if reply is not None:
            self.link.send("client", reply, self.now)

    def drain(self) -> None:
        """Deliver every late datagram still in flight (replies go nowhere)."""
        while self.link.next_time() is not None:
            self.now, to, data = self.link.pop()
            if to == "server":
                self.server.receive(data, PEER, self.now)


def plan(rng: random.Random, count: int, *, with_replace: bool) -> list[tuple[str, Rule | RuleKey]]:
    """`count` commands that each succeed when executed once, in order."""
    keys = [RuleKey.make(f"10.{s // 200}.{s % 200}.1", f"239.0.0.{g + 1}") for s in range(40) for g in range(5)]
    model: dict[RuleKey, Rule] = {}
    out = []
    for _ in range(count):
        absent = [k for k in keys if k not in model]
        roll = rng.random()
        if not model or (roll < 0.45 and absent):
            key = rng.choice(absent)
            model[key] = Rule(key, rng.randint(1, 255))
            out.append(("add", model[key]))
        elif roll < 0.7:
            key = rng.choice(sorted(model))
            model[key] = Rule(key, rng.randint(1, 255))
            out.append(("replace" if with_replace else "add", model[key]))
        else:
            key = rng.choice(sorted(model))
            del model[key]
            out.append(("remove", key))
    return out


def final_rules(commands) -> dict[RuleKey, Rule]:
    model = {}
    for op, arg in commands:
        if op == "remove":
            del model[arg]
        else:
            model[arg.key] = arg
    return model


def mutations(backend: MemoryBackend) -> list:
    return [e for e in backend.log if e[0] in ("add", "replace", "remove", "flush")]


# --- the at-most-once property ------------------------------------------------------------


def test_v2_pair_2000_commands_through_loss_duplication_and_reordering():
    rng = random.Random(2)
    commands = plan(rng, 2000, with_replace=True)
    backend = MemoryBackend()
    server = ServerCore(backend, KEYS, EPOCH, 0x57A7E)
    link = LossyLink(rng, loss=0.30, dup=0.10, max_delay=0.08)
    pair = Pair(server, link)
    core = ClientCore(KEYS, FAST, randbits=random.Random(3).getrandbits)
    bodies = {"add": v2.Add, "replace": v2.Replace, "remove": v2.Remove}
    for op, arg in commands:
        reply = pair.run(core.call(bodies[op](arg)))
        assert reply.status == ReplyCode.OK, (op, arg, reply)
    pair.drain()
    assert mutations(backend) == list(commands)  # each executed exactly once, in order
    assert backend.rules == final_rules(commands)
    s = server.stats
    assert s["executed"] == 2000 + s["requests_hello"]
    assert s["requests_hello"] >= 1 and s["sessions_opened"] == s["requests_hello"]
    assert s["duplicates"] > 100 and s["replays"] > 10  # the link really was hostile
    assert link.lost > 1000 and link.duplicated > 300
    assert s["bad_auth"] == s["stale_epoch"] == s["stale_session"] == s["busy"] == 0


def test_v1_pair_2000_commands_through_loss_duplication_and_reordering():
    rng = random.Random(1)
    commands = plan(rng, 2000, with_replace=False)
    backend = MemoryBackend()
    server = ServerCore(backend, None, EPOCH, 1, legacy_allowed=lambda host: host == "127.0.0.1")
    link = LossyLink(rng, loss=0.30, dup=0.10, max_delay=0.08)
    pair = Pair(server, link)
    core = V1ClientCore(FAST, first_seq=200)
    for op, arg in commands:
        call = core.remove(arg) if op == "remove" else core.add(arg)
        reply = pair.run(call)
        assert reply.ok, (op, arg, reply)
    pair.drain()
    expected = [("replace", arg) if op == "add" else (op, arg) for op, arg in commands]  # v1 ADD upserts
    assert mutations(backend) == expected
    assert backend.rules == final_rules(commands)
    s = server.stats
    assert s["executed"] == 2000
    assert s["v1_duplicates"] > 100 and s["v1_stale"] > 10
    assert link.lost > 1000 and link.duplicated > 300


def test_v2_pair_survives_router_restarts():
    """A restart (new epoch, same pinned tables) between calls: the client says HELLO again by itself."""
    rng = random.Random(5)
    commands = plan(rng, 300, with_replace=True)
    backend = MemoryBackend()
    pair = Pair(ServerCore(backend, KEYS, EPOCH, 1), LossyLink(rng, loss=0.2, dup=0.1, max_delay=0.08))
    core = ClientCore(KEYS, FAST, randbits=random.Random(6).getrandbits)
    bodies = {"add": v2.Add, "replace": v2.Replace, "remove": v2.Remove}
    flagged = 0
    for i, (op, arg) in enumerate(commands):
        if i % 100 == 99:
            pair.server = ServerCore(backend, KEYS, EPOCH + i, 1)
        call = core.call(bodies[op](arg))
        assert pair.run(call).ok
        flagged += call.resent_after_restart
    pair.drain()
    assert mutations(backend) == list(commands)
    assert flagged == 3 and core.epoch == EPOCH + 299  # restarts before calls 99, 199 and 299
    assert core.hello.state_id == 1  # same tables: the manager sees nothing was lost


# --- client core ---------------------------------------------------------------------------


def _server(**kw) -> ServerCore:
    return ServerCore(MemoryBackend(), KEYS, EPOCH, 7, **kw)


def test_retransmission_backs_off_and_gives_up():
    core = ClientCore(KEYS, RetryPolicy(timeout=1.0, tries=4, backoff=2.0, max_timeout=3.0))
    call = core.call(v2.Hello())
    first = call.start(10.0)
    deadlines = [call.next_deadline]
    for now in (11.0, 13.0, 16.0):
        assert call.on_timeout(now) == first  # the very same bytes
        deadlines.append(call.next_deadline)
    assert deadlines == [11.0, 13.0, 16.0, 19.0]
    with pytest.raises(Timeout, match="no answer after 4 tries"):
        call.on_timeout(19.0)
    assert call.next_deadline is None


def test_retry_policy_must_end_within_the_protocol_limit():
    assert RetryPolicy().span() <= 60
    with pytest.raises(LocalProtocolError, match="could last"):
        RetryPolicy(timeout=1.0, tries=30, max_timeout=8.0)


def test_call_ignores_what_does_not_answer_it():
    server = _server()
    core = ClientCore(KEYS)
    hello = core.call(v2.Hello())
    hello_reply = server.receive(hello.start(0.0), PEER, 0.0)
    assert hello.on_datagram(hello_reply, 0.0).ok
    call = core.call(v2.Add(Rule.make("10.0.0.1", "239.1.1.1", 8)))
    request = call.start(0.0)
    reply = server.receive(request, PEER, 0.0)
    forged = bytearray(reply)
    forged[-1] ^= 1
    stranger = ClientCore(KEYS)  # another client's answer to the same seq in its own session
    foreign = stranger.call(v2.Add(Rule.make("10.0.0.1", "239.1.1.1", 8)))
    out = foreign.start(0.0)
    while isinstance(out, bytes):
        last = server.receive(out, PEER, 0.0)
        out = foreign.on_datagram(last, 0.0)
    for junk in (b"", b"\x00\x07", hello_reply, last, bytes(forged), reply[:-1], request):
        assert call.on_datagram(junk, 0.0) is None
    assert call.on_datagram(reply, 0.0).ok
    assert call.on_datagram(reply, 0.0) is None  # done: a duplicate answer changes nothing


def test_wrong_key_times_out_with_a_hint():
    server = _server()
    core = ClientCore(KeyRing([Key(1, b"\x01" * 32)]), RetryPolicy(timeout=0.1, tries=2))
    call = core.call(v2.Hello())
    notice = server.receive(call.start(0.0), PEER, 0.0)
    assert call.on_datagram(notice, 0.0) is None  # unauthenticated: never trusted...
    call.on_timeout(0.1)
    with pytest.raises(Timeout) as info:
        call.on_timeout(0.3)
    assert "BAD_AUTH" in str(info.value) and "key" in info.value.hint  # ...but it explains the silence


def test_stale_session_is_retried_without_the_restart_flag():
    server = _server(max_clients=1, session_grace=1.0)
    a, b = ClientCore(KEYS), ClientCore(KEYS)

    def run(core, body, now):
        call = core.call(body)
        out = call.start(now)
        while isinstance(out, bytes):
            out = call.on_datagram(server.receive(out, PEER, now), now)
        return call, out

    assert run(a, v2.Flush(), 0.0)[1].ok
    assert run(b, v2.Flush(), 5.0)[1].ok  # evicts a's session
    call, reply = run(a, v2.Flush(), 10.0)
    assert reply.ok and call.rehellos == 1 and not call.resent_after_restart


def test_v1_call_matches_on_seq_only():
    core = V1ClientCore(first_seq=255)
    call = core.add(Rule.make("10.0.0.1", "239.1.1.1", 8))
    assert call.start(0.0)[0] == 255 and core.remove(RuleKey.make("10.0.0.1", "239.1.1.1")).request.seq == 0
    assert call.on_datagram(b"\x00\x00", 0.0) is None
    assert call.on_datagram(b"\x00\xff\x00", 0.0) is None
    assert call.on_datagram(b"\x01\xff", 0.0) == v1.V1Response(v1.V1Type.ERROR, 255)


# --- real UDP on 127.0.0.1 -------------------------------------------------------------------


def test_router_client_needs_keys_or_v1():
    with pytest.raises(LocalProtocolError):
        RouterClient("127.0.0.1", 9, None)
    with pytest.raises(LocalProtocolError):
        RouterClient("127.0.0.1", 9, KEYS, v1=True)


def test_a_session_whose_seqs_are_used_up_is_replaced_by_a_new_one():
    """docs/protocol.md: the last seq is 2^64-1; the next call says HELLO and goes on in a new session."""
    backend = MemoryBackend()
    server = ServerCore(backend, KeyRing([Key(1, bytes(range(32)))]), epoch=5, state_id=1)
    client = ClientCore(KeyRing([Key(1, bytes(range(32)))]))

    def run(body):
        call = client.call(body)
        out = call.start(0.0)
        while True:
            reply = server.receive(out, ("192.0.2.5", 4711), 0.0)
            result = call.on_datagram(reply, 0.0)
            if isinstance(result, v2.Response):
                return result
            out = result

    assert run(v2.Hello()).ok
    first = client.session
    client._seq = 2**64 - 1  # the session's last seq
    assert run(v2.Add(Rule.make("192.0.2.10", "239.1.1.1", 8))).ok and client.session == first
    done = run(v2.Add(Rule.make("192.0.2.11", "239.1.1.1", 8)))
    assert done.ok and client.session != first and done.seq == 1
    assert len(backend.rules) == 2 and server.stats["replays"] == 0 and server.stats["sessions_opened"] == 2


def test_what_the_specification_states_of_ports_first_seqs_and_oversized_requests():
    """docs/protocol.md, "Sessions": another UDP port may use a session; the first seq may be 0;
    a request over 1400 bytes is answered MALFORMED (no valid request is that long)."""
    keys = KeyRing([Key(1, bytes(range(32)))])
    backend = MemoryBackend()
    server = ServerCore(backend, keys, epoch=5, state_id=1)
    hello = v2.decode_response(server.receive(v2.encode_request(v2.Request(v2.Hello(), 1, 0, 0, 9), keys),
                                              ("192.0.2.5", 4711), 0.0), keys)
    session = hello.body.session

    def send(body, seq, port, raw=None):
        datagram = raw or v2.encode_request(v2.Request(body, 1, 5, session, seq), keys)
        return v2.decode_response(server.receive(datagram, ("192.0.2.5", port), 0.0), keys)

    assert send(v2.Add(Rule.make("192.0.2.10", "239.1.1.1", 8)), 0, 4711).ok  # first seq 0
    assert send(v2.Add(Rule.make("192.0.2.11", "239.1.1.1", 8)), 1, 5000).ok  # another port, same session
    assert send(v2.Add(Rule.make("192.0.2.12", "239.1.1.1", 8)), 1, 4711).status == ReplyCode.REPLAY
    assert len(backend.rules) == 2
    # 1401 bytes, framed and signed correctly: MALFORMED (authenticated), nothing executed, session intact.
    import hashlib
    import hmac
    import struct
    body = bytes(1401 - v2.MIN_REQUEST_SIZE)
    message = b"MAU\x02\x01" + struct.pack("!BBBHHQQQ", v2.Command.ADD, 0, 0, 1, len(body), 5, session, 2) + body
    big = message + hmac.new(bytes(range(32)), message, hashlib.sha256).digest()
    assert len(big) == 1401
    answer = send(None, 2, 4711, raw=big)
    assert answer.status == ReplyCode.MALFORMED and answer.authenticated and len(backend.rules) == 2
    assert send(v2.GetCounters(), 3, 4711).ok
