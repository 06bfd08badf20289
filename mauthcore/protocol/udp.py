"""Thin blocking UDP shells around the sans-IO cores: a router client and a serve loop.

Strategy (faucet: the core decides, a thin shell acts): these functions own
a socket and the clock, and nothing else. Every decision (what to send,
when to resend, what a datagram means) is the core's. `RouterClient` turns
error replies into typed `RouterError`s and a call that never got an
answer into `RouterUnreachable`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from mauthcore.protocol import v1, v2
from mauthcore.protocol.client import (
    AnyCall,
    ClientCore,
    HelloInfo,
    RetryPolicy,
    V1ClientCore,
)
from mauthcore.protocol.errors import (
    LocalProtocolError,
    Malformed,
    ReplyCode,
    RouterUnreachable,
    Timeout,
    router_error,
)
from mauthcore.protocol.keys import KeyRing
from mauthcore.protocol.model import (
    Counters,
    DeniedEntry,
    DeniedJoinEntry,
    IfaceReceiversEntry,
    JoinedEntry,
    Mode,
    ReceiverEntry,
    RuleEntry,
)
from mauthcore.protocol.server import ServerCore
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Rule, RuleKey

_Reply = TypeVar("_Reply")

RECV_SIZE = 65535


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RouterClient:
    """Blocking client of one router's musersd: v2 with `keys`, or v1 with `v1=True`."""

    def __init__(self, host: str, port: int, keys: KeyRing | None = None, *, v1: bool = False,
                 timeout: float = 0.5, tries: int = 6, max_timeout: float = 4.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if (keys is None) == (not v1):
            raise LocalProtocolError("give either keys (protocol v2) or v1=True, not both or neither")
        policy = RetryPolicy(timeout=timeout, tries=tries, max_timeout=max(max_timeout, timeout))
        self.host, self.port = host, port
        self._clock = clock
        self._v2 = ClientCore(keys, policy) if keys is not None else None
        self._v1 = V1ClientCore(policy) if v1 else None
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(family, kind, proto)
        try:
            self._sock.connect(address)  # the kernel then drops datagrams from anyone else
        except OSError:
            self._sock.close()
            raise
        self.last_call: AnyCall | None = None

    # -- context --------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hello_info(self) -> HelloInfo | None:
        return self._v2.hello if self._v2 else None

    # -- commands -------------------------------------------------------------

    def hello(self) -> HelloInfo:
        self._v2_call(v2.Hello())
        assert self._v2 is not None and self._v2.hello is not None
        return self._v2.hello

    def add(self, rule: Rule) -> None:
        if self._v1 is not None:
            self._v1_call(self._v1.add(rule))
        else:
            self._v2_call(v2.Add(rule))

    def remove(self, key: RuleKey) -> None:
        if self._v1 is not None:
            self._v1_call(self._v1.remove(key))
        else:
            self._v2_call(v2.Remove(key))

    def replace(self, rule: Rule) -> bool:
        """Add or overwrite `rule`; True if it was created."""
        return self._reply(v2.Replace(rule), v2.Replaced).created

    def rearm(self, key: RuleKey) -> None:
        """Make the learning rule for `key` forget the (interface, MAC) it pinned (v2 only)."""
        self._v2_call(v2.Rearm(key))

    def list_all(self) -> list[RuleEntry]:
        return self._pages(v2.ListRules)

    def denied_all(self) -> list[DeniedEntry]:
        return self._pages(v2.ListDenied)

    def counters(self) -> Counters:
        return self._reply(v2.GetCounters(), Counters)

    def flush(self) -> int:
        return self._reply(v2.Flush(), v2.Flushed).removed

    def mode(self, mode: Mode | str | None = None) -> Mode:
        """The filter mode; set it first when `mode` is given ("enforce" or "monitor")."""
        if isinstance(mode, str):
            try:
                mode = Mode[mode.upper()]
            except KeyError:
                raise LocalProtocolError(f"mode {mode!r} is neither enforce nor monitor") from None
        return self._reply(v2.ModeRequest(mode), v2.ModeReply).mode

    # -- receivers (v2 only; an older musersd answers UNKNOWN_COMMAND: RouterRejected) --------------

    def add_receiver(self, rule: ReceiverRule) -> None:
        """Add a receiver rule; RouterExists if it is held, RouterRejected for an interface the router lacks."""
        self._v2_call(v2.RecvAdd(rule))

    def remove_receiver(self, rule: ReceiverRule) -> None:
        """Remove a receiver rule; RouterNotFound if it is not held."""
        self._v2_call(v2.RecvRemove(rule))

    def list_receivers(self) -> list[ReceiverEntry]:
        """Every receiver rule with its counters, in rule order (RECV_LIST, page by page)."""
        return self._pages(v2.RecvList)

    def denied_joins(self) -> list[DeniedJoinEntry]:
        """Every refused join the router records (RECV_DENIED, page by page)."""
        return self._pages(v2.RecvDenied)

    def joined(self) -> list[JoinedEntry]:
        """Every group joined on the router's guarded interfaces (RECV_JOINED, page by page)."""
        return self._pages(v2.RecvJoined)

    def receiver_policy(self, set: IfacePolicy | None = None) -> list[IfaceReceiversEntry]:
        """Every guarded interface's receiver policy, groups and counters; set one interface's policy first."""
        return list(self._reply(v2.RecvPolicy(set), v2.PolicyReply).interfaces)

    # -- internals --------------------------------------------------------------

    def _pages(self, request_type: type[v2.ListRules] | type[v2.ListDenied] | type[v2.RecvPageRequest]) -> list:
        entries: list = []
        cursor = b""
        seen: set[bytes] = set()
        while True:
            page = self._v2_call(request_type(0, cursor)).body
            # v2 decodes an OK reply by its command
            assert isinstance(page, (v2.RulesPage, v2.DeniedPage, v2.ReceiversPage, v2.DeniedJoinsPage,
                                     v2.JoinedPage))
            entries.extend(page.entries)
            if not page.cursor:
                return entries
            if page.cursor in seen:
                raise Malformed(f"router {_endpoint(self.host, self.port)} returned the same listing cursor twice")
            seen.add(page.cursor)
            cursor = page.cursor

    def _reply(self, body: v2.RequestBody, kind: type[_Reply]) -> _Reply:
        """The body of the router's successful answer to `body`, of the command's reply class `kind`."""
        reply = self._v2_call(body).body
        assert isinstance(reply, kind)  # v2 decodes an OK reply by its command
        return reply

    def _v2_call(self, body: v2.RequestBody) -> v2.Response:
        if self._v2 is None:
            raise LocalProtocolError(f"protocol v1 has no {body.command} command; use a key file (v2)")
        response = self._run(self._v2.call(body))
        if not response.ok:
            assert isinstance(response.body, v2.ErrorReply)  # the body of every error reply
            raise router_error(
                response.status,
                f"router {_endpoint(self.host, self.port)} refused {body.command}: "
                f"{_status_name(response.status)}{': ' + response.body.message if response.body.message else ''}",
            )
        return response

    def _v1_call(self, call) -> v1.V1Response:
        response = self._run(call)
        if not response.ok:
            raise router_error(
                None, f"router {_endpoint(self.host, self.port)} answered ERROR to v1 {call.request.command.name}"
            )
        return response

    def _run(self, call: AnyCall):
        self.last_call = call
        refused = False
        self._send(call.start(self._clock()))
        while True:
            deadline = call.next_deadline
            assert deadline is not None  # a call has one until it returns
            wait = deadline - self._clock()
            if wait <= 0:
                try:
                    datagram = call.on_timeout(self._clock())
                except Timeout as err:
                    hint = err.hint
                    if refused and not hint:
                        hint = "the port is unreachable: is musersd running there?"
                    raise RouterUnreachable(
                        f"router {_endpoint(self.host, self.port)} did not answer after {call.tries} tries",
                        hint=hint,
                    ) from None
                refused |= self._send(datagram)
                continue
            self._sock.settimeout(wait)
            try:
                data = self._sock.recv(RECV_SIZE)
            except TimeoutError:
                continue
            except ConnectionRefusedError:  # ICMP port unreachable from an earlier send
                refused = True
                continue
            out = call.on_datagram(data, self._clock())
            if isinstance(out, (bytes, bytearray)):
                refused |= self._send(out)
            elif out is not None:
                return out

    def _send(self, datagram: bytes) -> bool:
        """Send; True if the kernel reported the port unreachable."""
        try:
            self._sock.send(datagram)
        except ConnectionRefusedError:
            return True
        return False


def _status_name(status: int) -> str:
    try:
        return ReplyCode(status).name
    except ValueError:
        return f"status 0x{status:02x}"


def serve(sock: socket.socket, core: ServerCore, stop: threading.Event, *,
          clock: Callable[[], float] = time.monotonic, poll: float = 0.1) -> None:
    """Answer datagrams on `sock` with `core` until `stop` is set."""
    sock.settimeout(poll)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(RECV_SIZE)
        except TimeoutError:
            continue
        except ConnectionRefusedError:
            continue
        reply = core.receive(data, peer, clock())
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError:
                pass  # the client went away; it will retransmit or give up
