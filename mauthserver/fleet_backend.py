"""The router protocol, served by mauthserver for the whole fleet (docs/design.md).

Strategy: reuse, do not re-implement. `mauthcore.protocol.server.ServerCore`
(the same at-most-once state machine musersd runs) serves v2, and v1 from
allowed addresses, on mauthserver's own UDP port; `FleetBackend` is the
`Backend` it executes on. Each mutation becomes a mediator command: committed
to the store with its audit row before the reply is sent, then fanned out to
every router. A client of this port therefore talks to "the fleet" exactly as
it would talk to one router, with the mediator's durability.

Semantics as musersd's, per docs/protocol.md: ADD of an existing (source,
group) is EXISTS, REPLACE overwrites, REMOVE of an absent one is NOT_FOUND,
FLUSH removes every desired rule, MODE sets the desired mode of every router,
REARM is audited and passed on to every router whose rule learns its sender.
LIST pages over the desired rules (counters: the sum of the routers' last
listed counters); COUNTERS reports the desired rule count and the routers'
filter counters added up. DENIED is not kept centrally: UNSUPPORTED, ask a
router. HELLO's state_id is the fleet's (made when the database was), and
the epoch is new at each mediator start, as for a router.

The audit actor names the peer and protocol version ("udp-v2 192.0.2.5:4711");
`ServerCore` does not pass the peer to the backend, so the shell sets it for
the duration of each `receive()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from mauthcore.protocol import v1 as v1_codec
from mauthcore.protocol.errors import BackendInvalid, BackendUnsupported, Exists, NotFound
from mauthcore.protocol.keys import KeyRing
from mauthcore.protocol.model import Counters, DeniedEntry, Mode, Page, Reason, ReasonCounter, RuleEntry, page_start
from mauthcore.protocol.server import ServerCore, new_epoch
from mauthcore.rules import Rule, RuleKey

from . import core as mcore

log = logging.getLogger("mauthserver.fleet")


class FleetBackend:
    """A `mauthcore.protocol.backend.Backend` whose operations go to the mediator (store + fan-out)."""

    name = "mauthserver"

    def __init__(self, mediator) -> None:
        self.mediator = mediator
        self.actor = "udp"

    @property
    def fleet(self) -> mcore.Fleet:
        return self.mediator.fleet

    # -- mutations ------------------------------------------------------------

    def add(self, rule: Rule) -> None:
        if rule.key in self.fleet.desired:
            raise Exists(f"a rule for {rule.key} already exists")
        self._put(rule)

    def replace(self, rule: Rule) -> bool:
        created = rule.key not in self.fleet.desired
        self._put(rule)
        return created

    def _put(self, rule: Rule) -> None:
        try:
            self.mediator.add_rule(rule.source, rule.group, rule.max_ttl, replace=True, actor=self.actor,
                                   pps=rule.pps, bps=rule.bps, binding=rule.binding)
        except mcore.Refused as exc:  # pragma: no cover - the codec validated the rule already
            raise BackendUnsupported(exc.message) from None

    def remove(self, key: RuleKey) -> None:
        try:
            self.mediator.remove_rule(key.source, key.group, actor=self.actor)
        except mcore.NotFound:
            raise NotFound(f"no rule for {key}") from None

    def flush(self) -> int:
        return self.mediator.flush(actor=self.actor)

    def rearm(self, key: RuleKey) -> None:
        """Committed (audited) here, then sent to every router whose rule learns, as the API's re-arm is: the
        reply says the fleet took the request, not that every router has forgotten its sender yet."""
        try:
            self.mediator.rearm_rule(key.source, key.group, actor=self.actor)
        except mcore.NotFound:
            raise NotFound(f"no rule for {key}") from None
        except mcore.Refused as exc:
            raise BackendInvalid(exc.message) from None

    def set_mode(self, mode: Mode) -> None:
        self.mediator.set_mode(Mode(mode), actor=self.actor)

    # -- queries ----------------------------------------------------------------

    def get_mode(self) -> Mode:
        if self.fleet.mode is not None:
            return self.fleet.mode
        modes = [r.mode for r in self.fleet.routers.values() if r.mode is not None]
        return Mode.MONITOR if modes and all(m == Mode.MONITOR for m in modes) else Mode.ENFORCE

    def counters(self) -> Counters:
        totals = {reason: [0, 0] for reason in Reason}
        for router in self.fleet.routers.values():
            if router.filter is None:
                continue
            for c in router.filter.reasons:  # a reason this version does not know (a newer musersd's) adds up too
                total = totals.setdefault(c.reason, [0, 0])
                total[0] += c.packets
                total[1] += c.octets
        reasons = tuple(ReasonCounter(r, p, o) for r, (p, o) in sorted(totals.items()))
        return Counters(len(self.fleet.desired), self.get_mode(), self.name, reasons)

    def list(self, cursor: bytes, limit: int) -> Page[RuleEntry]:
        keys = self.fleet.sorted_keys()
        start = page_start([k.cursor for k in keys], cursor, "server")
        chunk = keys[start:start + max(limit, 0)]
        items = []
        for key in chunk:
            packets = octets = last = 0
            for router in self.fleet.routers.values():
                entry = router.traffic.get(key)
                if entry is not None:
                    packets += entry.packets
                    octets += entry.octets
                    last = max(last, entry.last_seen)
            items.append(RuleEntry(self.fleet.desired[key].rule, packets, octets, last))
        end = start + len(chunk)
        next_cursor = chunk[-1].cursor if chunk and end < len(keys) else b""
        return Page(tuple(items), next_cursor)

    def denied(self, cursor: bytes, limit: int) -> Page[DeniedEntry]:
        raise BackendUnsupported("mauthserver keeps no list of denied senders; ask a router directly")

    # Receiver rules and policies are the HTTP API's (docs/protocol.md, "Receiver commands"): this port answers
    # the receiver commands UNSUPPORTED, as it does DENIED.

    def _no_receivers(self, *args: object) -> NoReturn:
        raise BackendUnsupported("mauthserver's protocol port does not serve receiver rules; use its HTTP API"
                                 " or ask a router directly")

    add_receiver = remove_receiver = list_receivers = denied_joins = joined = receiver_policy = _no_receivers


class FleetServer(asyncio.DatagramProtocol):
    """The UDP shell: datagram in, `ServerCore.receive()`, datagram out."""

    def __init__(self, mediator, keys: KeyRing | None, legacy_allowed: Callable[[str], bool], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = FleetBackend(mediator)
        self.core = ServerCore(self.backend, keys, new_epoch(), mediator.store.fleet_state_id, legacy_allowed)
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        version = "v1" if len(data) == v1_codec.REQUEST_SIZE else "v2"
        host, port = str(addr[0]), int(addr[1])
        self.backend.actor = f"udp-{version} {host}:{port}" if ":" not in host else f"udp-{version} [{host}]:{port}"
        try:
            reply = self.core.receive(data, addr, self.clock())
        finally:
            self.backend.actor = "udp"
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass
