"""Fan-out to the routers: one asyncio task per router, driving its `core.RouterCore`.

Strategy (the core decides, a thin shell acts): `RouterCore.next_action()`
says what to do (probe, LIST, MODE, one install or removal, or wait); this
module does it over UDP with the sans-IO v2 client (`ClientCore` and its
`Call`s, the same code `mauthctl --router` runs), feeds the outcome back, and
persists what changed. It decides nothing itself except how to classify a
router's answer:

* no answer after the call's retransmissions, BUSY, INTERNAL, or
  authentication trouble -> `on_unreachable` (the core backs off
  exponentially, then starts over with HELLO);
* TABLE_FULL, INVALID_ARGUMENT, UNSUPPORTED, MALFORMED, UNKNOWN_COMMAND on
  an install/removal -> `on_refused` (not retried until the rule changes);
* NOT_FOUND on a removal -> done (it is gone, which is what we wanted).

The client core opens its session with HELLO, and re-opens it by itself
when the router restarted (STALE_EPOCH) or forgot it; every HELLO answer it
gets is fed to the reconciler, so a restart noticed in the middle of a
command is handled like one noticed by the periodic probe.

What the reconciler learns is written to the store (the router's row and its
applied rules) when it goes idle, after a LIST, and every `FLUSH_EVERY`
operations: losing the last few of those writes in a crash costs nothing,
because the first contact after a restart is always verified with LIST.

Each router is talked to on one protocol session, its task's `RouterLink`:
the reconciler's calls, the denied watch's listings (mauthserver/denied.py)
and the reads the API asks for (`FanOut.traffic`, `GET /api/v1/traffic`)
take turns on it one call at a time, so a long listing delays a rule change
by one page at most. A denied listing younger than the asker's `max_age` is
shared (`RouterTask.list_denied`), so the watch and the API do not list a
router's denied table twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from mauthcore.events import EventKind
from mauthcore.protocol import v2
from mauthcore.protocol.client import Call, ClientCore, HelloInfo, RetryPolicy
from mauthcore.protocol.errors import ReplyCode, RouterUnreachable, Timeout
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
from mauthcore.rules import RuleKey

from .core import (
    CONVERGING,
    DOWN,
    UP,
    Apply,
    ApplyReceiver,
    Held,
    Install,
    Probe,
    ReadReceivers,
    ReadRules,
    RearmRule,
    RouterCore,
    SetMode,
    SetPolicy,
    Uninstall,
    Wait,
    held,
)
from .events import EventBus
from .store import Store

log = logging.getLogger("mauthserver.fanout")

FLUSH_EVERY = 200

# Replies to an install/removal that retrying will not change.
_FINAL = {ReplyCode.TABLE_FULL, ReplyCode.INVALID_ARGUMENT, ReplyCode.UNSUPPORTED, ReplyCode.MALFORMED,
          ReplyCode.UNKNOWN_COMMAND}
# Replies to RECV_LIST meaning the router holds no receiver rules at all (a filter without a receiver half;
# a musersd older than the receiver commands).
_NO_RECEIVERS = {ReplyCode.UNSUPPORTED, ReplyCode.UNKNOWN_COMMAND}


def _status_name(status: int) -> str:
    try:
        return ReplyCode(status).name
    except ValueError:
        return f"status 0x{status:02x}"


class _Answer(Exception):
    """A router answered a call with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{_status_name(status)}{': ' + message if message else ''}")
        self.status = status


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.refused = False

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self.refused = True


class RouterLink:
    """An async UDP shell around one router's `ClientCore`: one call at a time, whoever calls."""

    def __init__(self, name: str, host: str, port: int, keys: KeyRing, policy: RetryPolicy,
                 clock: Callable[[], float] = time.monotonic, fence: Callable[[], None] | None = None) -> None:
        self.name, self.host, self.port = name, host, port
        # Called before every datagram; raises (mauthserver.leader.Fenced) once this instance may no
        # longer write to routers, so a leader whose lease ran out sends nothing, even mid-call.
        self.fence = fence
        self.client = ClientCore(keys, policy)
        self.clock = clock
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _Endpoint | None = None
        self._turn = asyncio.Lock()  # callers take turns: one call in flight on the session

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _open(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._transport, self._endpoint = await loop.create_datagram_endpoint(
                _Endpoint, remote_addr=(self.host, self.port))
        except OSError as exc:
            raise RouterUnreachable(f"router {self.name} ({self.address}) cannot be reached:"
                                    f" {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = self._endpoint = None

    async def call(self, body) -> v2.Response:
        """Run one v2 call to completion; raise RouterUnreachable or _Answer (error status)."""
        async with self._turn:
            return await self._call(body)

    async def _call(self, body) -> v2.Response:
        await self._open()
        assert self._transport is not None and self._endpoint is not None
        endpoint, transport = self._endpoint, self._transport
        while not endpoint.queue.empty():  # late answers to earlier calls
            endpoint.queue.get_nowait()
        endpoint.refused = False
        call: Call = self.client.call(body)
        self._send(transport, call.start(self.clock()))
        while True:
            deadline = call.next_deadline
            assert deadline is not None  # a call has one until it returns
            wait = deadline - self.clock()
            if wait <= 0:
                try:
                    datagram = call.on_timeout(self.clock())
                except Timeout as err:
                    hint = err.hint or ("the port is unreachable: is musersd running there?" if endpoint.refused
                                        else "")
                    raise RouterUnreachable(f"router {self.name} ({self.address}) did not answer"
                                            f" {body.command.name} after {call.tries} tries", hint=hint) from None
                self._send(transport, datagram)
                continue
            try:
                data = await asyncio.wait_for(endpoint.queue.get(), wait)
            except TimeoutError:
                continue
            out = call.on_datagram(data, self.clock())
            if isinstance(out, (bytes, bytearray)):
                self._send(transport, out)
            elif out is not None:
                if not out.ok:
                    raise _Answer(out.status, getattr(out.body, "message", ""))
                return out

    def _send(self, transport: asyncio.DatagramTransport, datagram: bytes) -> None:
        if self.fence is not None:
            self.fence()
        transport.sendto(datagram)

    async def list_all(self) -> list[RuleEntry]:
        return await self._pages(v2.ListRules)

    async def list_denied(self) -> list[DeniedEntry]:
        return await self._pages(v2.ListDenied)

    async def list_receivers(self) -> list[ReceiverEntry]:
        return await self._pages(v2.RecvList)

    async def list_denied_joins(self) -> list[DeniedJoinEntry]:
        return await self._pages(v2.RecvDenied)

    async def list_joined(self) -> list[JoinedEntry]:
        return await self._pages(v2.RecvJoined)

    async def receiver_policy(self, policy=None) -> list[IfaceReceiversEntry]:
        """RECV_POLICY: every guarded interface's policy, groups and counters (after setting `policy`)."""
        reply = (await self.call(v2.RecvPolicy(policy))).body
        assert isinstance(reply, v2.PolicyReply)  # v2 decodes an OK reply by its command
        return list(reply.interfaces)

    async def _pages(self, request_type: type[v2.ListRules] | type[v2.ListDenied] | type[v2.RecvPageRequest]
                     ) -> list:
        """Every entry of a paged listing; a router that repeats a cursor is answering nonsense."""
        entries: list = []
        cursor, seen = b"", set()
        while True:
            page = (await self.call(request_type(0, cursor))).body
            # v2 decodes an OK reply by its command
            assert isinstance(page, (v2.RulesPage, v2.DeniedPage, v2.ReceiversPage, v2.DeniedJoinsPage,
                                     v2.JoinedPage))
            entries.extend(page.entries)
            if not page.cursor:
                return entries
            if page.cursor in seen:
                raise _Answer(ReplyCode.MALFORMED, "the router returned the same listing cursor twice")
            seen.add(page.cursor)
            cursor = page.cursor


class RouterTask:
    """Keeps one router converged on the desired state, for as long as the daemon runs."""

    def __init__(self, core: RouterCore, link: RouterLink, mediator, store: Store, bus: EventBus, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.core = core
        self.link = link
        self.mediator = mediator
        self.store = store
        self.bus = bus
        self.clock = clock
        self.wall = wall
        self.wakeup = asyncio.Event()
        self._hello_seen: HelloInfo | None = None  # the HelloInfo object last fed to the core
        self._put: dict[RuleKey, Held] = {}
        self._del: set[RuleKey] = set()
        self._all: dict[RuleKey, Held] | None = None
        self._row_dirty = False
        self._last_status = core.status
        self._last_seen: tuple = ()
        self._recovering = True  # log the first convergence, and the one after any trouble
        self._denied: tuple[float, list[DeniedEntry]] | None = None  # the last denied listing (clock, entries)
        self._denied_turn = asyncio.Lock()
        self._denied_joins: tuple[float, list[DeniedJoinEntry]] | None = None  # the same for RECV_DENIED
        self._joins_turn = asyncio.Lock()

    @property
    def fleet(self):
        return self.mediator.fleet

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        core, name = self.core, self.core.name
        log.info("router=%s managing %s", name, self.link.address)
        try:
            while True:
                self.wakeup.clear()
                action = core.next_action(self.fleet.desired, self.fleet.mode, self.clock())
                if isinstance(action, Wait):
                    self._status_changed()
                    self._flush()
                    delay = max(0.0, action.until - self.clock())
                    try:
                        await asyncio.wait_for(self.wakeup.wait(), delay)
                    except TimeoutError:
                        pass
                    continue
                try:
                    await self._do(action)
                except RouterUnreachable as exc:
                    self._unreachable(str(exc))
                except _Answer as exc:
                    self._unreachable(f"router {name} answered {exc}")
                except OSError as exc:
                    self._unreachable(f"router {name} ({self.link.address}): {exc.strerror or exc}")
                self._status_changed()
                if len(self._put) + len(self._del) >= FLUSH_EVERY:
                    self._flush()
        finally:
            self.link.close()
            try:
                self._flush()
            except Exception:  # the daemon is stopping; the next start verifies with LIST anyway
                log.debug("router=%s final flush failed", name, exc_info=True)

    # -- doing one action --------------------------------------------------------

    async def _do(self, action) -> None:
        core = self.core
        if isinstance(action, Probe):
            counters = (await self.link.call(v2.GetCounters())).body
            assert isinstance(counters, Counters)  # v2 decodes an OK reply by its command
            self._feed_hello()
            for note in core.on_probe(counters, self.clock()):
                log.warning("router=%s %s", core.name, note)
                self._recovering = True
        elif isinstance(action, ReadRules):
            before = self.link.client.hello
            entries = await self.link.list_all()
            if self.link.client.hello is not before:
                # The client core had to say HELLO again while paging: the router restarted (or
                # forgot us) in the middle of the listing, which may mix two tables. List again.
                self._feed_hello()
                return
            core.on_listed(entries, self.fleet.desired, self.clock())
            self._all = dict(core.applied)
            self._put.clear()
            self._del.clear()
            self._row_dirty = True
            pending = core.pending(self.fleet.desired)
            if pending:
                self._recovering = True
            log.log(logging.INFO if pending or core.counters["lists"] == 1 else logging.DEBUG,
                    "router=%s verified: it holds %d rules, %d to change", core.name, len(entries), pending)
        elif isinstance(action, SetMode):
            reply = await self.link.call(v2.ModeRequest(action.mode))
            assert isinstance(reply.body, v2.ModeReply)  # v2 decodes an OK reply by its command
            self._feed_hello()
            core.on_mode(reply.body.mode, self.clock())
            self._row_dirty = True
            log.info("router=%s mode set to %s", core.name, reply.body.mode)
        elif isinstance(action, RearmRule):
            await self._rearm(action.key)
        elif isinstance(action, Apply):
            await self._apply(action.op)
        elif isinstance(action, ReadReceivers):
            await self._read_receivers()
        elif isinstance(action, ApplyReceiver):
            await self._apply_receiver(action)
        elif isinstance(action, SetPolicy):
            await self._set_policy(action)
        else:  # pragma: no cover - a bug
            raise TypeError(f"unknown action {action!r}")

    async def _apply(self, op) -> None:
        core = self.core
        try:
            if isinstance(op, Install):
                await self.link.call(v2.Replace(op.rule))
            else:
                await self.link.call(v2.Remove(op.key))
        except _Answer as exc:
            self._feed_hello()
            if isinstance(op, Uninstall) and exc.status == ReplyCode.NOT_FOUND:
                pass  # already gone
            elif exc.status in _FINAL:
                core.on_refused(op, str(exc), self.clock())
                log.warning("router=%s refused %s: %s", core.name,
                            op.rule if isinstance(op, Install) else op.key, exc)
                self._row_dirty = True
                return
            else:
                raise
        else:
            self._feed_hello()
        core.on_done(op, self.clock())
        if isinstance(op, Install):
            self._put[op.key] = held(op.rule)
            self._del.discard(op.key)
        else:
            self._del.add(op.key)
            self._put.pop(op.key, None)

    async def _rearm(self, key: RuleKey) -> None:
        """REARM: the router forgets the (interface, MAC) its learning rule pinned. NOT_FOUND (it holds no
        such rule any more) and the final refusals end the request like an answer: asking again would not
        change them."""
        core = self.core
        try:
            await self.link.call(v2.Rearm(key))
        except _Answer as exc:
            self._feed_hello()
            if exc.status not in _FINAL and exc.status != ReplyCode.NOT_FOUND:
                raise
            core.on_rearmed(key, self.clock(), refused=str(exc))
            log.warning("router=%s refused to re-arm %s: %s", core.name, key, exc)
            self._row_dirty = True
            return
        self._feed_hello()
        core.on_rearmed(key, self.clock())
        log.info("router=%s re-armed %s: it learns its sender afresh", core.name, key)

    async def _read_receivers(self) -> None:
        """RECV_LIST and RECV_POLICY: what the router holds, diffed by the core with the desired receivers.
        UNSUPPORTED or UNKNOWN_COMMAND means the router holds none (every rule is refused there)."""
        core = self.core
        before = self.link.client.hello
        try:
            entries = await self.link.list_receivers()
            ifaces = await self.link.receiver_policy()
        except _Answer as exc:
            self._feed_hello()
            if exc.status not in _NO_RECEIVERS:
                raise
            if core.recv_unsupported != str(exc):
                log.warning("router=%s holds no receiver rules: %s", core.name, exc)
            core.on_receivers_unsupported(str(exc), self.clock())
            return
        if self.link.client.hello is not before:  # restarted mid-listing: list again (see ReadRules)
            self._feed_hello()
            return
        core.on_receivers_listed(entries, ifaces, self.clock())
        pending = sum(1 for r in core.recv_dirty if (r in self.fleet.receivers) != (r in core.recv_applied))
        log.log(logging.INFO if pending else logging.DEBUG, "router=%s verified: it holds %d receiver rules,"
                " %d to change, on %d guarded interfaces", core.name, len(entries), pending, len(ifaces))

    async def _apply_receiver(self, op: ApplyReceiver) -> None:
        """RECV_ADD or RECV_REMOVE; EXISTS on an add and NOT_FOUND on a removal are what was wanted, the final
        refusals (INVALID_ARGUMENT: an interface the router does not guard) are remembered for the rule."""
        core = self.core
        try:
            await self.link.call(v2.RecvAdd(op.rule) if op.add else v2.RecvRemove(op.rule))
        except _Answer as exc:
            self._feed_hello()
            done = ReplyCode.EXISTS if op.add else ReplyCode.NOT_FOUND
            if exc.status in _FINAL:
                core.on_receiver_refused(op, str(exc), self.clock())
                log.warning("router=%s refused receiver rule %s: %s", core.name, op.rule, exc)
                return
            if exc.status != done:
                raise
        else:
            self._feed_hello()
        core.on_receiver_done(op, self.clock())

    async def _set_policy(self, action: SetPolicy) -> None:
        core = self.core
        try:
            ifaces = await self.link.receiver_policy(action.policy)
        except _Answer as exc:
            self._feed_hello()
            if exc.status not in _FINAL:
                raise
            core.on_policy_refused(action.policy, str(exc), self.clock())
            log.warning("router=%s refused receiver policy %s: %s", core.name, action.policy, exc)
            return
        self._feed_hello()
        core.on_policy(ifaces, self.clock())
        log.info("router=%s receiver policy set: %s", core.name, action.policy)

    def _feed_hello(self) -> None:
        """Tell the core about a HELLO answer the client core got (periodic or after a restart)."""
        info = self.link.client.hello
        if info is None or info is self._hello_seen:
            return
        self._hello_seen = info
        before = (self.core.epoch, self.core.state_id)
        notes = self.core.on_hello(info.epoch, info.state_id, info.rule_count, info.mode, info.backend,
                                   self.clock())
        for note in notes:
            log.warning("router=%s %s", self.core.name, note)
            self._recovering = True
        if notes or before != (self.core.epoch, self.core.state_id):
            self._row_dirty = True
            if self.core.state_id != before[1]:
                self._all = dict(self.core.applied)
                self._put.clear()
                self._del.clear()

    def _unreachable(self, reason: str) -> None:
        was = self.core.status
        self.core.on_unreachable(reason, self.clock())
        self._row_dirty = True
        self._recovering = True
        if was != DOWN:
            log.warning("router=%s unreachable: %s; retrying with back-off", self.core.name, reason)
        else:
            log.debug("router=%s still unreachable: %s", self.core.name, reason)

    # -- reads for others (the denied watch, the API), on this task's session ---------

    async def list_denied(self, max_age: float = 0.0) -> list[DeniedEntry]:
        """The router's denied table; a listing younger than `max_age` seconds is shared, not repeated."""
        async with self._denied_turn:
            if self._denied is not None and self.clock() - self._denied[0] < max_age:
                return self._denied[1]
            entries = await self.link.list_denied()
            self._denied = (self.clock(), entries)
            return entries

    async def list_denied_joins(self, max_age: float = 0.0) -> list[DeniedJoinEntry]:
        """The router's refused joins (RECV_DENIED); a listing younger than `max_age` seconds is shared."""
        async with self._joins_turn:
            if self._denied_joins is not None and self.clock() - self._denied_joins[0] < max_age:
                return self._denied_joins[1]
            entries = await self.link.list_denied_joins()
            self._denied_joins = (self.clock(), entries)
            return entries

    async def read_receivers(self, what: str, max_age: float = 0.0) -> dict:
        """One receiver listing of this router for the API: "denied" (RECV_DENIED), "joined" (RECV_JOINED) or
        "policy" (RECV_POLICY get), as {"ok": True, "entries": [...]}, or {"ok": False, "error": sentence}."""
        core = self.core
        if core.status == DOWN:
            return {"ok": False, "error": core.last_error or f"router {core.name} is down"}
        try:
            if what == "denied":
                entries: list = await self.list_denied_joins(max_age)
            elif what == "joined":
                entries = await self.link.list_joined()
            else:
                entries = await self.link.receiver_policy()
        except (RouterUnreachable, _Answer, OSError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "entries": [e.as_json() for e in entries]}

    async def read_traffic(self, max_age: float = 0.0) -> dict:
        """The router's per-rule counters (a LIST) and denied pairs, with its mode, rule count and
        filter counters as the reconciler's last probe read them; JSON-ready."""
        core = self.core
        if core.status == DOWN:
            return {"ok": False, "error": core.last_error or f"router {core.name} is down"}
        try:
            rules = await self.link.list_all()
            denied = await self.list_denied(max_age)
        except (RouterUnreachable, _Answer, OSError) as exc:
            return {"ok": False, "error": str(exc)}
        reasons = core.filter.reasons if core.filter is not None else ()
        return {
            "ok": True,
            "at": self.wall(),
            "mode": str(core.mode) if core.mode is not None else None,
            "rule_count": len(rules),
            "filter": {str(c.reason): {"packets": c.packets, "bytes": c.octets} for c in reasons},
            "rules": [e.as_json() for e in rules],
            "denied": [d.as_json() for d in denied],
        }

    # -- reporting and persistence --------------------------------------------------

    def _status_changed(self) -> None:
        """Log convergence and publish `router.changed` when something an operator cares about moved.

        Going "converging" for the few milliseconds a command takes is not
        news: events are published when the router goes up or down, or its
        epoch, state_id or mode change; convergence is logged at INFO after a
        recovery (verification, restart, outage) and at DEBUG otherwise.
        """
        core = self.core
        status = core.refresh_status(self.fleet.desired, self.fleet.mode)
        major = UP if status in (UP, CONVERGING) else status
        seen = (major, core.epoch, core.state_id, core.mode)
        if status == UP and self._last_status != UP:
            log.log(logging.INFO if self._recovering else logging.DEBUG, "router=%s converged: %d rules",
                    core.name, len(core.applied))
            self._recovering = False
        self._last_status = status
        if seen != self._last_seen:
            self._last_seen = seen
            self.bus.publish(EventKind.ROUTER_CHANGED, self.mediator.router_view(core), self.wall())

    def _flush(self) -> None:
        if not (self._row_dirty or self._put or self._del or self._all is not None):
            return
        core = self.core
        last = None if core.last_contact is None else self.wall() - (self.clock() - core.last_contact)
        self.store.save_router(core.name, epoch=core.epoch, state_id=core.state_id,
                               mode=None if core.mode is None else str(core.mode), rule_count=core.rule_count,
                               last_contact=last, last_error=core.last_error or None,
                               applied_put=dict(self._put), applied_del=list(self._del),
                               applied_all=self._all, now=self.wall())
        self._put.clear()
        self._del.clear()
        self._all = None
        self._row_dirty = False


class FanOut:
    """Every router's task, the one `wake()` the mediator calls after a commit, and the routers'
    traffic read for the API."""

    def __init__(self, mediator, store: Store, bus: EventBus, keys: KeyRing | None, policy: RetryPolicy, *,
                 max_age: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, fence: Callable[[], None] | None = None) -> None:
        self.max_age = max_age
        self.clock, self.wall = clock, wall
        self._traffic: tuple[float, dict] | None = None
        self._traffic_turn = asyncio.Lock()
        self.traffic_reads = 0
        self.tasks: dict[str, RouterTask] = {}
        for name, core in mediator.fleet.routers.items():
            if keys is None:  # cli refuses routers without a key file; keep the invariant here too
                raise ValueError("managing routers needs the v2 key file")
            link = RouterLink(name, core.host, core.port, keys, policy, fence=fence)
            self.tasks[name] = RouterTask(core, link, mediator, store, bus)
        mediator.wake = self.wake
        self._running: list[asyncio.Task] = []

    def wake(self) -> None:
        for task in self.tasks.values():
            task.wake()

    async def traffic(self) -> dict:
        """Every router's counters and denied pairs (`RouterTask.read_traffic`), read on each router's one
        session. One read runs at a time, and an answer younger than `max_age` seconds is shared by every
        client asking meanwhile, so several dashboards cost the routers no more than one."""
        async with self._traffic_turn:
            if self._traffic is not None and self.clock() - self._traffic[0] < self.max_age:
                return self._traffic[1]
            names = sorted(self.tasks)
            results = await asyncio.gather(*(self.tasks[n].read_traffic(self.max_age) for n in names))
            data = {"at": self.wall(), "routers": dict(zip(names, results))}
            self.traffic_reads += 1
            self._traffic = (self.clock(), data)
            return data

    async def receivers(self, what: str) -> dict[str, dict]:
        """Every router's receiver listing `what` (`RouterTask.read_receivers`), by router name."""
        names = sorted(self.tasks)
        results = await asyncio.gather(*(self.tasks[n].read_receivers(what, self.max_age) for n in names))
        return dict(zip(names, results))

    def start(self, on_crash: Callable[[asyncio.Task], None]) -> None:
        for name, task in self.tasks.items():
            t = asyncio.get_running_loop().create_task(task.run(), name=f"router-{name}")
            t.add_done_callback(on_crash)
            self._running.append(t)

    async def stop(self) -> None:
        await cancel_all(self._running)

    def close(self) -> None:
        """Close every router's session (a read the API still makes opens it again)."""
        for task in self.tasks.values():
            task.link.close()


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel `tasks` and wait for each to end, whatever it ends with (its crash was reported already).

    Python 3.11's asyncio.wait_for() loses a cancellation that arrives just as
    the awaitable it waits for completes: the task then carries on with its
    loop as if nothing happened, and awaiting it would never end (seen once: a
    test's stop of the fan-out waited until the test's timeout). So a task
    still running a moment after its cancellation is cancelled again.
    """
    for t in tasks:
        t.cancel()
    for t in tasks:
        while not t.done():
            await asyncio.wait([t], timeout=0.1)
            if not t.done():
                t.cancel()
        if not t.cancelled():
            t.exception()  # retrieved, so that asyncio does not report it again


def jitter() -> float:
    return random.random()


__all__ = ["FanOut", "RouterLink", "RouterTask", "jitter", "Mode"]
