"""The router's at-most-once state machine, for protocol v1 and v2, sans-IO.

Strategy (after h11 `_state.py`: everything that affects the state machine
lives here): `ServerCore.receive(datagram, peer, now)` takes one datagram
and returns the datagram to answer with, or None to stay silent. It owns
every transition of the replay state; the codecs only check bytes and the
`Backend` only executes. Time is the `now` parameter (seconds, monotonic).

Dispatch on the datagram alone (docs/protocol.md, "Telling v1 and v2 apart"):
11 bytes is v1; a datagram starting with the v2 magic is v2; anything else
is ignored and counted.

v1, per client address (host, port): a window of one (the original design's "sliding
window of size one"). The last request's bytes and its response are kept;
an identical datagram is answered from memory without executing; a request
whose 8-bit seq is not newer than the last one (RFC 1982, SERIAL_BITS = 8)
is ignored silently and never executed. An entry idle for `v1_lifetime`
seconds is forgotten, so a client restarted on the same port can start at
any seq. v1 is unauthenticated: accepted only when `legacy_allowed(host)`.

v2, per session (a number the server hands out in HELLO, unique within an
epoch): strictly increasing 64-bit seq; the exact duplicate of the last
request is answered from memory (only to the address it came from, so that
a captured request cannot reflect a large answer elsewhere), anything older
is refused with REPLAY.
Requests must carry the current epoch (random, new at each daemon start),
so nothing captured before a restart is accepted after it. The session
table is bounded: when full, the least recently used session is evicted
only if it has been idle for `session_grace` seconds, and every session
number at or below the largest evicted one is refused from then on
(STALE_SESSION: the client says HELLO again). Nothing that could replay
an evicted session's requests is ever accepted; without an idle session to
evict, a new session is refused with BUSY instead. See docs/protocol.md,
"Replay protection", for why this needs no clock on the client.

Responses to requests whose authentication fails are unauthenticated error
notices (key id 0, no tag, never longer than the request), sent at most
`unauth_rate` per second.

No request can stop the server: an exception other than a `CommandError`
while one request is executed or its reply encoded (a bug in a backend or a
codec) is logged with its traceback, counted in `internal_errors` and
answered INTERNAL (v1: ERROR); the replay state records that answer as for
any other, so the request is never executed twice. Should anything else in
`receive()` fail, the datagram is logged and dropped. Only a fault of the
daemon outside one request (its socket, its signals) may end it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mauthcore.protocol import v1, v2
from mauthcore.protocol.backend import Backend
from mauthcore.protocol.errors import (
    BadAuth,
    CommandError,
    LocalProtocolError,
    Malformed,
    NotV2,
    RemoteProtocolError,
    ReplyCode,
    UnknownKey,
)
from mauthcore.protocol.keys import KeyRing
from mauthcore.protocol.model import DeniedEntry, RuleEntry
from mauthcore.protocol.v2 import Command

log = logging.getLogger("mauthcore.protocol")

# Counter name -> help text. Every counter exists from the start (value 0),
# so that a metrics exporter sees a stable set.
STATS: dict[str, str] = {
    "datagrams": "datagrams received",
    "unrecognized": "datagrams neither 11 bytes long (v1) nor starting with the v2 magic; ignored",
    "executed": "commands handed to the backend (v1 and v2, whatever the outcome)",
    "v1_requests": "v1 requests from allowed addresses",
    "v1_refused": "v1 requests from addresses not allowed to use v1; ignored",
    "v1_duplicates": "v1 duplicates of the last request, answered from memory",
    "v1_stale": "v1 requests with a seq not newer than the last one; ignored, not executed",
    "v1_busy": "v1 requests from a new address ignored because the v1 client table was full",
    "v1_ack": "v1 ACK responses sent (duplicates included)",
    "v1_error": "v1 ERROR responses sent (duplicates included)",
    "v2_datagrams": "datagrams starting with the v2 magic",
    "v2_disabled": "v2 datagrams ignored because no key file is configured",
    "not_v2": "v2-magic datagrams too short, of another version, or not requests; ignored",
    "unknown_key": "v2 requests naming a key id not in the key file",
    "bad_auth": "v2 requests whose tag did not verify",
    "unauth_suppressed": "unauthenticated error notices not sent because of the rate limit",
    "malformed": "authenticated v2 requests with a broken framing or body",
    "stale_epoch": "v2 requests carrying another epoch (e.g. from before a restart)",
    "stale_session": "v2 requests for a session this server no longer (or never) had",
    "replays": "v2 requests with a seq not newer than the session's last; refused, not executed",
    "duplicates": "v2 duplicates of a session's last request, answered from memory",
    "duplicates_elsewhere": "v2 duplicates arriving from another address than the original; ignored",
    "busy": "v2 requests refused with BUSY because the session table was full",
    "sessions_opened": "v2 sessions handed out by HELLO",
    "sessions_evicted": "idle v2 sessions evicted to make room",
    "internal_errors": "requests that failed on an unexpected error (logged); answered INTERNAL or dropped",
}
for _command in Command:
    STATS[f"requests_{_command}"] = f"{_command.name} requests received (authenticated v2 and allowed v1)"
STATS["requests_unknown"] = "requests with an unknown command code"
for _code in ReplyCode:
    STATS[f"replies_{_code.name.lower()}"] = f"v2 responses sent with status {_code.name}"

_REJECTION_STATS: dict[type, str] = {
    NotV2: "not_v2",
    UnknownKey: "unknown_key",
    BadAuth: "bad_auth",
    Malformed: "malformed",
}

_V1_COMMAND_NAMES: dict[int, str] = {v1.V1Command.ADD: "add", v1.V1Command.REMOVE: "remove"}


def new_epoch() -> int:
    """A random non-zero 64-bit epoch (0 is what HELLO requests carry)."""
    return secrets.randbits(64) or 1


def new_state_id() -> int:
    return secrets.randbits(64) or 1


def no_legacy(host: str) -> bool:
    return False


def legacy_checker(cidrs: Iterable[str]) -> Callable[[str], bool]:
    """`legacy_allowed` for ServerCore: is a client address inside one of `cidrs`?

    IPv4-mapped IPv6 peers (a dual-stack socket) are judged by their IPv4
    address; a scope suffix (fe80::1%eth0) is ignored. Raises ValueError on a
    CIDR that does not parse.
    """
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def allowed(host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr.version == n.version and addr in n for n in nets)

    return allowed


@dataclass
class _Session:
    seq: int
    tag: bytes
    response: bytes
    last_used: float
    peer: tuple[str, int] = ("", 0)  # where the last request came from


@dataclass
class _V1Client:
    seq: int
    request: bytes
    response: bytes
    last_used: float


class TokenBucket:
    """`rate` tokens a second up to `burst`; take() spends one if there is one (time is a parameter)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last: float | None = None

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return False
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ServerCore:
    """Turns request datagrams into response datagrams, executing each request at most once."""

    def __init__(
        self,
        backend: Backend,
        keys: KeyRing | None,
        epoch: int,
        state_id: int,
        legacy_allowed: Callable[[str], bool] = no_legacy,
        *,
        max_clients: int = 1024,
        session_grace: float = 300.0,
        v1_max_clients: int = 256,
        v1_lifetime: float = 120.0,
        unauth_rate: float = 10.0,
        unauth_burst: float = 20.0,
    ) -> None:
        if not 0 < epoch < 1 << 64:
            raise LocalProtocolError("the epoch must be a non-zero 64-bit number")
        if not 0 <= state_id < 1 << 64:
            raise LocalProtocolError("the state id must be a 64-bit number")
        if max_clients < 1 or v1_max_clients < 1:
            raise LocalProtocolError("client tables need room for at least one client")
        self.backend = backend
        self.epoch = epoch
        self.state_id = state_id
        self.max_clients = max_clients
        self.session_grace = session_grace
        self.v1_max_clients = v1_max_clients
        self.v1_lifetime = v1_lifetime
        self._keys = keys
        self._legacy_allowed = legacy_allowed
        self._bucket = TokenBucket(unauth_rate, unauth_burst)
        self._sessions: OrderedDict[int, _Session] = OrderedDict()  # least recently used first
        self._issued = 0  # highest session number handed out
        self._low_water = 0  # every session <= this is refused unless still in the table
        self._v1: OrderedDict[tuple[str, int], _V1Client] = OrderedDict()
        self._stats = dict.fromkeys(STATS, 0)

    # -- public -------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (names and meanings: `STATS`)."""
        return dict(self._stats)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def v1_client_count(self) -> int:
        return len(self._v1)

    def set_keys(self, keys: KeyRing | None) -> None:
        """Swap the key ring (key file reloaded); sessions survive."""
        self._keys = keys

    def receive(self, datagram: bytes, peer: tuple, now: float) -> bytes | None:
        """Handle one datagram from `peer` ((host, port, ...)); return the reply or None."""
        self._count("datagrams")
        datagram = bytes(datagram)
        try:
            if len(datagram) == v1.REQUEST_SIZE:
                return self._receive_v1(datagram, (str(peer[0]), int(peer[1])), now)
            if datagram[:len(v2.MAGIC)] == v2.MAGIC:
                return self._receive_v2(datagram, (str(peer[0]), int(peer[1])), now)
        except Exception:  # a bug outside one command's execution: drop this datagram, serve the next
            self._count("internal_errors")
            log.exception("datagram of %d bytes from %s dropped on an unexpected error", len(datagram), peer[0])
            return None
        self._count("unrecognized")
        return None

    # -- v1 -------------------------------------------------------------------

    def _receive_v1(self, data: bytes, client: tuple[str, int], now: float) -> bytes | None:
        if not self._legacy_allowed(client[0]):
            self._count("v1_refused")
            return None
        self._count("v1_requests")
        self._count(f"requests_{_V1_COMMAND_NAMES.get(data[1], 'unknown')}")
        entry = self._v1.get(client)
        if entry is not None and now - entry.last_used > self.v1_lifetime:
            del self._v1[client]
            entry = None
        if entry is not None:
            if data == entry.request:
                self._count("v1_duplicates")
                entry.last_used = now
                self._v1.move_to_end(client)
                return self._v1_sent(entry.response)
            if not v1.seq_newer(data[0], entry.seq):
                self._count("v1_stale")
                return None
        elif not self._admit_v1(now):
            self._count("v1_busy")
            return None
        response = v1.encode_response(self._execute_v1(data))
        self._v1[client] = _V1Client(data[0], data, response, now)
        self._v1.move_to_end(client)
        return self._v1_sent(response)

    def _admit_v1(self, now: float) -> bool:
        if len(self._v1) < self.v1_max_clients:
            return True
        oldest_client, oldest = next(iter(self._v1.items()))
        if now - oldest.last_used <= self.v1_lifetime:
            return False
        del self._v1[oldest_client]
        return True

    def _execute_v1(self, data: bytes) -> v1.V1Response:
        try:
            request = v1.decode_request(data)
        except RemoteProtocolError:  # unknown command, invalid rule: ERROR for that seq
            return v1.V1Response(v1.V1Type.ERROR, data[0])
        self._count("executed")
        try:
            _V1_HANDLERS[type(request)](self.backend, request)
        except CommandError:
            return v1.V1Response(v1.V1Type.ERROR, request.seq)
        except Exception:
            self._count("internal_errors")
            log.exception("v1 %s failed on an unexpected error; answered ERROR", type(request).__name__)
            return v1.V1Response(v1.V1Type.ERROR, request.seq)
        return v1.V1Response(v1.V1Type.ACK, request.seq)

    def _v1_sent(self, response: bytes) -> bytes:
        self._count("v1_ack" if response[0] == v1.V1Type.ACK else "v1_error")
        return response

    # -- v2 -------------------------------------------------------------------

    def _receive_v2(self, data: bytes, peer: tuple[str, int], now: float) -> bytes | None:
        self._count("v2_datagrams")
        if self._keys is None:
            self._count("v2_disabled")
            return None
        try:
            envelope = v2.open_request(data, self._keys)
        except RemoteProtocolError as err:
            return self._reject(err, now)
        h = envelope.header
        self._count(f"requests_{Command(h.command) if h.command in Command._value2member_map_ else 'unknown'}")
        if h.command == Command.HELLO:
            return self._execute_v2(envelope)  # read-only; opens a session; never remembered
        if h.epoch != self.epoch:
            self._count("stale_epoch")
            return self._error(h, ReplyCode.STALE_EPOCH, "")
        session = self._sessions.get(h.session)
        if session is not None:
            if h.seq == session.seq and hmac.compare_digest(h.tag, session.tag):
                if peer != session.peer:  # a captured request replayed to reflect a large answer
                    self._count("duplicates_elsewhere")
                    return None
                self._count("duplicates")
                session.last_used = now
                self._sessions.move_to_end(h.session)
                return self._v2_sent(session.response)
            if h.seq <= session.seq:
                self._count("replays")
                return self._error(h, ReplyCode.REPLAY, "")
        else:
            if not self._low_water < h.session <= self._issued:
                self._count("stale_session")
                return self._error(h, ReplyCode.STALE_SESSION, "")
            if not self._admit_session(now):
                self._count("busy")
                return self._error(h, ReplyCode.BUSY, "")
            session = self._sessions[h.session] = _Session(0, b"", b"", now)
        response = self._execute_v2(envelope)
        session.seq, session.tag, session.response, session.last_used, session.peer = (
            h.seq, h.tag, response, now, peer)
        self._sessions.move_to_end(h.session)
        return response

    def _admit_session(self, now: float) -> bool:
        if len(self._sessions) < self.max_clients:
            return True
        oldest_id, oldest = next(iter(self._sessions.items()))
        if now - oldest.last_used < self.session_grace:
            return False
        del self._sessions[oldest_id]
        self._low_water = max(self._low_water, oldest_id)
        self._count("sessions_evicted")
        return True

    def _reject(self, err: RemoteProtocolError, now: float) -> bytes | None:
        """A request that failed before the replay window: count it, maybe say why."""
        self._count(_REJECTION_STATS.get(type(err), "malformed"))
        header = err.header
        if err.code is None or not isinstance(header, v2.RequestHeader):
            return None
        if header.authenticated:
            return self._error(header, err.code, err.message)
        if not self._bucket.take(now):
            self._count("unauth_suppressed")
            return None
        notice = v2.error_response(header, err.code, "", epoch=0, key_id=0)
        return self._v2_sent(v2.encode_response(notice, None))

    def _execute_v2(self, envelope: v2.Envelope) -> bytes:
        h = envelope.header
        try:
            request = v2.parse_request(envelope)
        except RemoteProtocolError as err:
            if err.code == ReplyCode.MALFORMED:
                self._count("malformed")
            return self._error(h, err.code or ReplyCode.MALFORMED, err.message)
        self._count("executed")
        try:
            body = _V2_HANDLERS[request.command](self, request.body)
            response = v2.Response(h.command, ReplyCode.OK, body, h.key_id, self.epoch, h.session, h.seq,
                                   h.in_reply_to)
            return self._v2_sent(v2.encode_response(response, self._keys))
        except CommandError as err:
            return self._error(h, err.code or ReplyCode.INTERNAL, err.message)
        except Exception as exc:  # a bug while executing or encoding this one request
            self._count("internal_errors")
            log.exception("%s request (session %d, seq %d) failed on an unexpected error; answered INTERNAL",
                          request.command.name, h.session, h.seq)
            return self._error(h, ReplyCode.INTERNAL, f"the router failed on this {request.command} request"
                                                      f" ({type(exc).__name__}); its log says more")

    def _error(self, h: v2.RequestHeader, code: ReplyCode, message: str) -> bytes:
        response = v2.error_response(h, code, message, epoch=self.epoch, key_id=h.key_id)
        return self._v2_sent(v2.encode_response(response, self._keys))

    def _v2_sent(self, response: bytes) -> bytes:
        code = response[v2.STATUS_OFFSET]
        if code in ReplyCode._value2member_map_:
            self._count(f"replies_{ReplyCode(code).name.lower()}")
        return response

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] += n

    # -- v2 command handlers (table below) ------------------------------------

    def _hello(self, body: v2.Hello) -> v2.HelloReply:
        counters = self.backend.counters()
        self._issued += 1
        self._count("sessions_opened")
        return v2.HelloReply(self._issued, self.state_id, counters.rule_count, counters.mode, counters.backend)

    def _add(self, body: v2.Add) -> v2.Done:
        self.backend.add(body.rule)
        return v2.Done()

    def _replace(self, body: v2.Replace) -> v2.Replaced:
        return v2.Replaced(bool(self.backend.replace(body.rule)))

    def _remove(self, body: v2.Remove) -> v2.Done:
        self.backend.remove(body.key)
        return v2.Done()

    def _list(self, body: v2.ListRules) -> v2.RulesPage:
        limit = _page_limit(body.max_count, v2.MAX_LIST_ENTRIES)
        page = self.backend.list(body.cursor, limit)
        _check_page(page, limit)
        return v2.RulesPage(*_fit(tuple(page.items), page.cursor))

    def _rearm(self, body: v2.Rearm) -> v2.Done:
        self.backend.rearm(body.key)
        return v2.Done()

    def _denied(self, body: v2.ListDenied) -> v2.DeniedPage:
        limit = _page_limit(body.max_count, v2.MAX_DENIED_ENTRIES)
        page = self.backend.denied(body.cursor, limit)
        _check_page(page, limit)
        return v2.DeniedPage(*_fit(tuple(page.items), page.cursor))

    def _counters(self, body: v2.GetCounters):
        return self.backend.counters()

    def _flush(self, body: v2.Flush) -> v2.Flushed:
        return v2.Flushed(self.backend.flush())

    def _mode(self, body: v2.ModeRequest) -> v2.ModeReply:
        if body.mode is not None:
            self.backend.set_mode(body.mode)
        return v2.ModeReply(self.backend.get_mode())

    def _recv_add(self, body: v2.RecvAdd) -> v2.Done:
        self.backend.add_receiver(body.rule)
        return v2.Done()

    def _recv_remove(self, body: v2.RecvRemove) -> v2.Done:
        self.backend.remove_receiver(body.rule)
        return v2.Done()

    def _recv_list(self, body: v2.RecvList) -> v2.ReceiversPage:
        return v2.ReceiversPage(*self._recv_page(self.backend.list_receivers, body, v2.MAX_RECV_ENTRIES))

    def _recv_denied(self, body: v2.RecvDenied) -> v2.DeniedJoinsPage:
        return v2.DeniedJoinsPage(*self._recv_page(self.backend.denied_joins, body, v2.MAX_DENIED_JOIN_ENTRIES))

    def _recv_joined(self, body: v2.RecvJoined) -> v2.JoinedPage:
        return v2.JoinedPage(*self._recv_page(self.backend.joined, body, v2.MAX_JOINED_ENTRIES))

    @staticmethod
    def _recv_page(listing: Callable, body: v2.RecvPageRequest, most: int) -> tuple[tuple, bytes]:
        limit = _page_limit(body.max_count, most)
        page = listing(body.cursor, limit)
        _check_page(page, limit)
        return _fit(tuple(page.items), page.cursor, v2.RECV_PAGE_ROOM, v2.recv_entry_size)

    def _recv_policy(self, body: v2.RecvPolicy) -> v2.PolicyReply:
        return v2.PolicyReply(tuple(self.backend.receiver_policy(body.policy)))


def _fit(entries: tuple, cursor: bytes, room: int = v2.PAGE_ROOM,
         size: Callable[[Any], int] = v2.entry_size) -> tuple[tuple, bytes]:
    """(entries, cursor) of a page that fits one datagram: bound rules' entries, and denied entries a binding
    dropped, are longer, so fewer of them may; receiver entries vary with family, source and interface.

    Cut short, the page ends at its last entry's key, and the next listing goes on from there.
    """
    used = 0
    for n, entry in enumerate(entries):
        used += size(entry)
        if used > room:
            last = entries[n - 1]
            if isinstance(last, RuleEntry):
                return entries[:n], last.rule.key.cursor
            if isinstance(last, DeniedEntry):
                return entries[:n], last.key.cursor
            return entries[:n], last.cursor
    return entries, cursor


def _page_limit(asked: int, most: int) -> int:
    return most if asked == 0 else min(asked, most)


def _check_page(page, limit: int) -> None:
    if len(page.items) > limit:
        raise LocalProtocolError(f"the backend returned {len(page.items)} entries when asked for {limit}")


_V2_HANDLERS: dict[Command, Callable] = {
    Command.HELLO: ServerCore._hello,
    Command.ADD: ServerCore._add,
    Command.REPLACE: ServerCore._replace,
    Command.REMOVE: ServerCore._remove,
    Command.LIST: ServerCore._list,
    Command.DENIED: ServerCore._denied,
    Command.COUNTERS: ServerCore._counters,
    Command.FLUSH: ServerCore._flush,
    Command.MODE: ServerCore._mode,
    Command.REARM: ServerCore._rearm,
    Command.RECV_ADD: ServerCore._recv_add,
    Command.RECV_REMOVE: ServerCore._recv_remove,
    Command.RECV_LIST: ServerCore._recv_list,
    Command.RECV_DENIED: ServerCore._recv_denied,
    Command.RECV_JOINED: ServerCore._recv_joined,
    Command.RECV_POLICY: ServerCore._recv_policy,
}

# v1 ADD is add-or-update (REPLACE): with a single ERROR code, "already there"
# would be indistinguishable from a failure (docs/protocol.md, "v1 semantics").
_V1_HANDLERS: dict[type, Callable] = {
    v1.V1Add: lambda backend, request: backend.replace(request.rule),
    v1.V1Remove: lambda backend, request: backend.remove(request.key),
}
