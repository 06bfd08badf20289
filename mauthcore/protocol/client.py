"""Client side of the router protocol, sans-IO: calls with retransmission timers.

Strategy: a call object holds one request and its retransmission timer; the
caller owns the socket and the clock. The loop a shell runs is:

    datagram = call.start(now)                 # send it
    until done:
        wait for a datagram or call.next_deadline
        on timeout:  datagram = call.on_timeout(now)   # resend, or raises Timeout
        on datagram: out = call.on_datagram(data, now)
                     bytes    -> send it (the call moved on, e.g. to HELLO)
                     response -> done (error statuses included; the shell raises)
                     None     -> not ours / not trustworthy: keep waiting

A retransmission resends the very same bytes (same seq, same tag), which is
what lets the server recognise it as a duplicate and answer from memory.
Timers back off exponentially up to a cap, for a bounded number of tries;
`RetryPolicy` refuses a policy whose calls could outlive MAX_CALL_SPAN,
the bound the server's replay state relies on (docs/protocol.md).

v2 calls open a session first when the core has none (HELLO), and when the
router answers STALE_EPOCH (it restarted) or STALE_SESSION (it forgot the
session) they say HELLO again and resend the request with a new seq. After
STALE_EPOCH an earlier copy of the request may have been executed before
the restart, so the call sets `resent_after_restart`; the caller decides
what EXISTS or NOT_FOUND mean then.

One call at a time per core: the server keeps a window of one per session.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from mauthcore.protocol import v1, v2
from mauthcore.protocol.errors import LocalProtocolError, RemoteProtocolError, ReplyCode, Timeout
from mauthcore.protocol.keys import KeyRing
from mauthcore.protocol.model import Mode
from mauthcore.rules import Rule, RuleKey

MAX_CALL_SPAN = 60.0  # seconds from a call's first transmission to giving up, at most


@dataclass(frozen=True)
class RetryPolicy:
    """Retransmission timer: first wait `timeout`, times `backoff` each try, at most `max_timeout`."""

    timeout: float = 0.5
    tries: int = 6
    backoff: float = 2.0
    max_timeout: float = 4.0

    def __post_init__(self) -> None:
        if self.tries < 1 or self.timeout <= 0 or self.backoff < 1 or self.max_timeout < self.timeout:
            raise LocalProtocolError(f"unusable retry policy {self!r}")
        if self.span() > MAX_CALL_SPAN:
            raise LocalProtocolError(
                f"a call could last {self.span():.1f} s with this retry policy; "
                f"the protocol allows {MAX_CALL_SPAN:.0f} s"
            )

    def intervals(self) -> list[float]:
        out, wait = [], self.timeout
        for _ in range(self.tries):
            out.append(wait)
            wait = min(wait * self.backoff, self.max_timeout)
        return out

    def span(self) -> float:
        """Worst-case seconds from the first transmission to giving up."""
        return sum(self.intervals())


class _Retransmitter:
    """The timer of one datagram: when to resend it and when to give up."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.datagram = b""
        self.sent = 0
        self.interval = 0.0
        self.deadline: float | None = None

    def arm(self, datagram: bytes, now: float) -> bytes:
        self.datagram = datagram
        self.sent = 1
        self.interval = self.policy.timeout
        self.deadline = now + self.interval
        return datagram

    def fire(self, now: float, hint: Callable[[], str] = lambda: "") -> bytes:
        if self.deadline is None:
            raise LocalProtocolError("on_timeout() on a call that is not waiting")
        if self.sent >= self.policy.tries:
            self.deadline = None
            raise Timeout(f"no answer after {self.sent} tries", hint=hint())
        self.sent += 1
        self.interval = min(self.interval * self.policy.backoff, self.policy.max_timeout)
        self.deadline = now + self.interval
        return self.datagram

    def stop(self) -> None:
        self.deadline = None


# =============================================================================
# v1
# =============================================================================


class V1Call:
    """One v1 request until its response (matched by seq; v1 has nothing else to match)."""

    def __init__(self, request: v1.V1Request, policy: RetryPolicy) -> None:
        self.request = request
        self._datagram = v1.encode_request(request)
        self._timer = _Retransmitter(policy)
        self.done = False

    @property
    def next_deadline(self) -> float | None:
        return self._timer.deadline

    @property
    def tries(self) -> int:
        return self._timer.sent

    def start(self, now: float) -> bytes:
        return self._timer.arm(self._datagram, now)

    def on_timeout(self, now: float) -> bytes:
        return self._timer.fire(now)

    def on_datagram(self, data: bytes, now: float) -> v1.V1Response | None:
        if self.done:
            return None
        try:
            response = v1.decode_response(data)
        except RemoteProtocolError:
            return None
        if response.seq != self.request.seq:
            return None
        self.done = True
        self._timer.stop()
        return response


class V1ClientCore:
    """Hands out v1 calls with consecutive 8-bit seqs (the first one random)."""

    def __init__(self, policy: RetryPolicy | None = None, *, first_seq: int | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._seq = secrets.randbelow(v1.SEQ_MODULUS) if first_seq is None else first_seq % v1.SEQ_MODULUS

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % v1.SEQ_MODULUS
        return seq

    def add(self, rule: Rule) -> V1Call:
        return V1Call(v1.V1Add(self._take_seq(), rule), self.policy)

    def remove(self, key: RuleKey) -> V1Call:
        return V1Call(v1.V1Remove(self._take_seq(), key), self.policy)


# =============================================================================
# v2
# =============================================================================


@dataclass(frozen=True)
class HelloInfo:
    """What the last HELLO told us about the router."""

    epoch: int
    session: int
    state_id: int
    rule_count: int
    mode: Mode
    backend: str


_STALE = (ReplyCode.STALE_EPOCH, ReplyCode.STALE_SESSION)
_HELLO, _COMMAND, _DONE = "hello", "command", "done"
MAX_SEQ = 2**64 - 1  # the last seq of a session; the next call opens a new session (docs/protocol.md)


class Call:
    """One v2 command (opening or reopening a session with HELLO when needed)."""

    def __init__(self, core: ClientCore, body: v2.RequestBody) -> None:
        self.core = core
        self.body = body
        self.phase = _HELLO
        self.rehellos = 0
        self.resent_after_restart = False
        self.notices: list[int] = []  # statuses of unauthenticated notices that matched our request
        self._timer = _Retransmitter(core.policy)
        self._expect: tuple[int, int, int, bytes] = (0, 0, 0, b"")  # command, session, seq, in_reply_to

    @property
    def done(self) -> bool:
        return self.phase == _DONE

    @property
    def next_deadline(self) -> float | None:
        return self._timer.deadline

    @property
    def tries(self) -> int:
        return self._timer.sent

    def start(self, now: float) -> bytes:
        if isinstance(self.body, v2.Hello) or self.core.session is None or self.core._seq > MAX_SEQ:
            # No session yet, or its seqs are used up (the server would answer REPLAY for ever): a new one.
            return self._send_hello(now)
        return self._send_command(now)

    def on_timeout(self, now: float) -> bytes:
        return self._timer.fire(now, self._hint)

    def on_datagram(self, data: bytes, now: float) -> v2.Response | bytes | None:
        if self.done:
            return None
        try:
            response = v2.decode_response(data, self.core.keys)
        except RemoteProtocolError:
            return None  # garbage, or a tag that does not verify: not from the router
        expected = (response.command, response.session, response.seq, response.in_reply_to)
        if expected != self._expect:
            return None  # a late answer to something else
        if not response.authenticated:
            self.notices.append(response.status)  # a hint for the timeout message, never trusted
            return None
        if self.phase == _HELLO:
            if not response.ok:
                return self._finish(response)
            self.core._adopt_hello(response)
            if isinstance(self.body, v2.Hello):
                return self._finish(response)
            return self._send_command(now)
        if response.status in _STALE and self.rehellos < self.core.max_rehellos:
            self.rehellos += 1
            if response.status == ReplyCode.STALE_EPOCH:
                self.resent_after_restart = True
            self.core._forget_session()
            return self._send_hello(now)
        return self._finish(response)

    # -- internals --------------------------------------------------------------

    def _finish(self, response: v2.Response) -> v2.Response:
        self.phase = _DONE
        self._timer.stop()
        return response

    def _send_hello(self, now: float) -> bytes:
        self.phase = _HELLO
        request = v2.Request(v2.Hello(), self.core.keys.current.key_id, 0, 0, self.core._randbits(64))
        return self._send(request, now)

    def _send_command(self, now: float) -> bytes:
        self.phase = _COMMAND
        core = self.core
        # Reached from start() with a session, or right after _adopt_hello() set one; epoch and
        # session are set and forgotten together.
        assert core.epoch is not None and core.session is not None
        request = v2.Request(self.body, core.keys.current.key_id, core.epoch, core.session, core._take_seq())
        return self._send(request, now)

    def _send(self, request: v2.Request, now: float) -> bytes:
        datagram = v2.encode_request(request, self.core.keys)
        tag = datagram[-v2.TAG_SIZE:]
        self._expect = (request.command, request.session, request.seq, tag[: v2.IN_REPLY_TO_SIZE])
        return self._timer.arm(datagram, now)

    def _hint(self) -> str:
        if not self.notices:
            return ""
        names = sorted({ReplyCode(s).name if s in ReplyCode._value2member_map_ else str(s) for s in self.notices})
        return (f"it sent unauthenticated {'/'.join(names)} notices:"
                " our key is probably missing from its key file or differs from it")


class ClientCore:
    """A v2 client's session state toward one router; makes `Call`s."""

    def __init__(self, keys: KeyRing, policy: RetryPolicy | None = None, *, max_rehellos: int = 2,
                 randbits: Callable[[int], int] = secrets.randbits) -> None:
        self.keys = keys
        self.policy = policy or RetryPolicy()
        self.max_rehellos = max_rehellos
        self._randbits = randbits
        self.epoch: int | None = None
        self.session: int | None = None
        self.hello: HelloInfo | None = None  # the latest HELLO's answer
        self._seq = 1

    def call(self, body: v2.RequestBody) -> Call:
        return Call(self, body)

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _adopt_hello(self, response: v2.Response) -> None:
        body = response.body
        assert isinstance(body, v2.HelloReply)
        self.epoch, self.session, self._seq = response.epoch, body.session, 1
        self.hello = HelloInfo(response.epoch, body.session, body.state_id, body.rule_count, body.mode,
                               body.backend)

    def _forget_session(self) -> None:
        self.epoch = self.session = None


AnyCall = Call | V1Call
