"""Denied senders: every router's DENIED table, polled, reported as `denied` events and log lines.

Strategy. Each router's filter already keeps a bounded table of the
(source, group) pairs it dropped (or, in monitor mode, would have), with
their packet counts. Every `interval` seconds this module lists that table
(v2 DENIED, paged) on the router's one protocol session, the fan-out's
(`RouterTask.list_denied`, taking turns with the reconciler call by call,
and sharing a listing the API made less than half an interval ago, so the
table is not listed twice for the two). `DeniedTracker` (pure) compares
each listing with what was last reported, and a pair is news when it is new
(router, source, group, reason) or its packet count grew. News is published
on the event stream (`denied`) and logged.

Rate limit. A flood of spoofed sources makes thousands of distinct pairs;
each would be an event and a log line. One token bucket for every router
together (`rate` per second, `burst`) decides what is reported; the biggest
growth goes first. What does not get a token is not marked as reported, so
it is offered again at the next poll (with its larger count), and each poll
that held some back says so once: one `denied.suppressed` event and one log
line "N more ... suppressed". So the log and the stream carry at most
`rate` reports per second plus one summary per router per poll, whatever
arrives. Memory is bounded by the routers' own tables: a pair that leaves a
router's table is forgotten (and is news again if it comes back).

A router the reconciler knows is down (or has not reached yet) is not
polled. After a mediator restart every pair still in the routers' tables is
news once more.

Event `denied` (data, besides the stream's `at`):
    router, source, group, reason ("unauthorized", "ttl", "rate"...),
    packets and bytes (the pair's totals in the router's table),
    new_packets (since the last report of this pair; all of them when first),
    first (true: the pair was not reported before), last_ttl,
    last_seen (Unix time of its last packet, or null); for a pair a rule's
    binding dropped, iface and mac of the last packet it dropped.
Event `sender.moved`: router, source, group, reason (wrong_iif or
wrong_mac), packets, new_packets: a denied report of a pair whose rule
learns its sender (docs/operations.md, "Binding a sender") means the pinned
sender moved, or another host took its address. Published with the denied
report (so within its rate limit), at most once per pair and router every
`MOVED_EVERY` seconds; `mauthctl rearm` makes the rule pin afresh.
Event `receiver.denied`: the same for refused joins (RECV_DENIED, polled in
the same turn from routers that hold receiver rules): router, iface,
receiver, group, source (null: any source), reason (join_refused,
join_limit), records (refused join records in the router's table),
new_records, first, last_seen, version (IGMP 1..3, MLD 1..2). One join is
news like a pair: new (router, iface, receiver, group, source, reason), or
its record count grew; it shares the rate limit and the summary.
Event `denied.suppressed`: router, suppressed (reports held back by the rate
limit in this poll; they are offered again at the next one), pairs (the
router's denied pairs in this listing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mauthcore.events import (
    DeniedEvent,
    EventKind,
    ReceiverDeniedEvent,
    SenderMovedEvent,
    denied_suppressed_event,
)
from mauthcore.protocol.errors import RouterUnreachable
from mauthcore.protocol.model import DeniedEntry, DeniedJoinEntry, Reason, seconds
from mauthcore.protocol.server import TokenBucket
from mauthcore.rules import RuleKey, format_mac

from .core import CONVERGING, UP
from .events import EventBus
from .fanout import _Answer as RouterAnswer  # a router answered with an error status
from .fanout import cancel_all

log = logging.getLogger("mauthserver.denied")

DEFAULT_INTERVAL = 5.0
REPORT_RATE = 5.0  # reports per second, every router together
REPORT_BURST = 50.0
MOVED_EVERY = 60.0  # seconds between two sender.moved events of one pair on one router
_MOVED_REASONS = frozenset({Reason.WRONG_IIF, Reason.WRONG_MAC})


@dataclass(frozen=True)
class DeniedReport:
    """News of one router's denied pair: the router's own entry, the packets new since the last report,
    and whether the pair itself is new."""

    router: str
    entry: DeniedEntry
    new_packets: int
    first: bool

    @property
    def key(self) -> tuple[str, str, str]:
        """(source, group, reason) as text: a pair that changes reason is news of its own."""
        return str(self.entry.source), str(self.entry.group), str(self.entry.reason)

    def to_dict(self) -> DeniedEvent:
        e = self.entry
        out: DeniedEvent = {"router": self.router, "source": str(e.source), "group": str(e.group),
                            "reason": str(e.reason), "packets": e.packets, "bytes": e.octets,
                            "new_packets": self.new_packets, "first": self.first, "last_ttl": e.last_ttl,
                            "last_seen": seconds(e.last_seen)}
        if e.iface or e.mac:  # a binding dropped it: where its last offender came from
            out["iface"] = e.iface
            out["mac"] = format_mac(e.mac) if e.mac else ""
        return out


class DeniedTracker:
    """What each router's denied table held when last reported; pure (no clock, no I/O)."""

    def __init__(self) -> None:
        self._reported: dict[str, dict[tuple[str, str, str], int]] = {}
        self._when: dict[str, dict[tuple[str, str, str], float]] = {}  # Unix time of each pair's last report
        self.pairs: dict[str, int] = {}  # router -> pairs in its last listing
        self.packets: dict[str, dict[str, int]] = {}  # router -> reason -> packets of the pairs listed

    def observe(self, router: str, entries: Iterable[DeniedEntry]) -> list[DeniedReport]:
        """A complete listing of `router`'s table: the news in it, biggest growth first."""
        reported = self._reported.setdefault(router, {})
        when = self._when.setdefault(router, {})
        news: list[DeniedReport] = []
        seen: set[tuple[str, str, str]] = set()
        by_reason: dict[str, int] = {}
        for e in entries:
            reason = str(e.reason)
            key = (str(e.source), str(e.group), reason)
            if key in seen:
                continue
            seen.add(key)
            by_reason[reason] = by_reason.get(reason, 0) + e.packets
            before = reported.get(key)
            if before is not None and e.packets == before:
                continue
            if before is not None and e.packets < before:  # left the table and came back: counted afresh
                del reported[key]
                when.pop(key, None)
                before = None
            news.append(DeniedReport(router, e, e.packets - (before or 0), before is None))
        for key in [k for k in reported if k not in seen]:  # gone from the table: forget it
            del reported[key]
            when.pop(key, None)
        self.pairs[router] = len(seen)
        self.packets[router] = by_reason
        news.sort(key=lambda r: (-r.new_packets, not r.first, r.key))
        return news

    def reported(self, report: DeniedReport, at: float | None = None) -> None:
        """`report` was published (at Unix time `at`)."""
        self._reported.setdefault(report.router, {})[report.key] = report.entry.packets
        if at is not None:
            self._when.setdefault(report.router, {})[report.key] = at

    def reported_at(self, router: str, key: tuple[str, str, str]) -> float | None:
        """When the pair (source, group, reason) of `router` was last reported, while its router lists it."""
        return self._when.get(router, {}).get(key)

    def mark(self, traffic: dict) -> dict:
        """A `GET /traffic` answer whose denied pairs say when each was last reported ("reported")."""
        routers = {}
        for name, answer in traffic.get("routers", {}).items():
            if "denied" in answer:
                answer = {**answer, "denied": [
                    {**d, "reported": self.reported_at(name, (d["source"], d["group"], d["reason"]))}
                    for d in answer["denied"]]}
            routers[name] = answer
        return {**traffic, "routers": routers}


JoinKey = tuple[str, str, str, str, str]  # iface, receiver, group, source ('' any), reason


def join_key(e: DeniedJoinEntry) -> JoinKey:
    return e.iface, str(e.receiver), str(e.group), "" if e.source is None else str(e.source), str(e.reason)


@dataclass(frozen=True)
class JoinReport:
    """News of one router's refused join: the router's entry, the records new since the last report."""

    router: str
    entry: DeniedJoinEntry
    new_records: int
    first: bool

    def to_dict(self) -> ReceiverDeniedEvent:
        e = self.entry
        return ReceiverDeniedEvent(router=self.router, iface=e.iface, receiver=str(e.receiver), group=str(e.group),
                                   source=None if e.source is None else str(e.source), reason=str(e.reason),
                                   records=e.records, new_records=self.new_records, first=self.first,
                                   last_seen=seconds(e.last_seen), version=e.version)


class JoinTracker:
    """What each router's refused-joins table held when last reported; pure, as `DeniedTracker`."""

    def __init__(self) -> None:
        self._reported: dict[str, dict[JoinKey, int]] = {}

    def observe(self, router: str, entries: Iterable[DeniedJoinEntry]) -> list[JoinReport]:
        """A complete listing of `router`'s table: the news in it, biggest growth first."""
        reported = self._reported.setdefault(router, {})
        news, seen = [], set()
        for e in entries:
            key = join_key(e)
            if key in seen:
                continue
            seen.add(key)
            before = reported.get(key)
            if before is not None and e.records < before:  # left the table and came back: counted afresh
                del reported[key]
                before = None
            if before is None or e.records > before:
                news.append(JoinReport(router, e, e.records - (before or 0), before is None))
        for key in [k for k in reported if k not in seen]:
            del reported[key]
        news.sort(key=lambda r: (-r.new_records, not r.first, join_key(r.entry)))
        return news

    def reported(self, report: JoinReport) -> None:
        self._reported.setdefault(report.router, {})[join_key(report.entry)] = report.entry.records


class DeniedWatch:
    """Polls every router's denied table and reports the news, within the rate limit."""

    def __init__(self, fanout, bus: EventBus, *, interval: float = DEFAULT_INTERVAL, rate: float = REPORT_RATE,
                 burst: float = REPORT_BURST, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.fanout = fanout
        self.bus = bus
        self.interval = interval
        self.clock, self.wall = clock, wall
        self.tracker = DeniedTracker()
        self.joins = JoinTracker()
        self.bucket = TokenBucket(rate, burst)
        self._running: list[asyncio.Task] = []
        self.counters = {"published_new": 0, "published_growing": 0, "suppressed": 0, "sender_moved": 0,
                         "joins_new": 0, "joins_growing": 0}
        self._moved: dict[tuple[str, str, str], float] = {}  # (router, source, group) -> clock of its last event
        self.polls: dict[str, int] = dict.fromkeys(fanout.tasks, 0)
        self.poll_failures: dict[str, int] = dict.fromkeys(fanout.tasks, 0)

    # -- reporting (no I/O but the bus and the log) -----------------------------

    def process(self, router: str, entries: Iterable[DeniedEntry]) -> list[DeniedReport]:
        """Feed one complete listing; publish and log what the rate limit lets through; return that."""
        news = self.tracker.observe(router, entries)
        now = self.clock()
        published: list[DeniedReport] = []
        held = 0
        for report in news:
            if not self.bucket.take(now):
                held += 1
                continue
            at = self.wall()
            self.tracker.reported(report, at)
            published.append(report)
            self.bus.publish(EventKind.DENIED, report.to_dict(), at)
            self.counters["published_new" if report.first else "published_growing"] += 1
            self._sender_moved(report, now, at)
            if report.first:
                log.warning("router=%s denied sender %s -> %s (%s): %d packets, last TTL %d", router,
                            *report.key, report.entry.packets, report.entry.last_ttl)
            else:
                log.info("router=%s denied sender %s -> %s (%s) still sending: %d more packets, %d in all",
                         router, *report.key, report.new_packets, report.entry.packets)
        if held:
            self.counters["suppressed"] += held
            pairs = self.tracker.pairs.get(router, 0)
            self.bus.publish(EventKind.DENIED_SUPPRESSED, denied_suppressed_event(router, held, pairs), self.wall())
            log.warning("router=%s %d more denied-sender reports suppressed by the rate limit (%d denied pairs "
                        "listed); they are offered again at the next poll", router, held, pairs)
        return published

    def process_joins(self, router: str, entries: Iterable[DeniedJoinEntry]) -> list[JoinReport]:
        """Feed one complete RECV_DENIED listing; publish `receiver.denied` for what the rate limit lets
        through (the rest is offered again at the next poll, and summed up once as for senders)."""
        now = self.clock()
        published: list[JoinReport] = []
        held = 0
        for report in self.joins.observe(router, entries):
            if not self.bucket.take(now):
                held += 1
                continue
            self.joins.reported(report)
            published.append(report)
            self.bus.publish(EventKind.RECEIVER_DENIED, report.to_dict(), self.wall())
            self.counters["joins_new" if report.first else "joins_growing"] += 1
            e = report.entry
            log.log(logging.WARNING if report.first else logging.INFO,
                    "router=%s refused join of %s%s by %s on %s (%s): %d records", router,
                    f"{e.source}, " if e.source is not None else "", e.group, e.receiver, e.iface, e.reason, e.records)
        if held:
            self.counters["suppressed"] += held
            self.bus.publish(EventKind.DENIED_SUPPRESSED,
                             denied_suppressed_event(router, held, self.tracker.pairs.get(router, 0)), self.wall())
            log.warning("router=%s %d more refused-join reports suppressed by the rate limit; they are offered"
                        " again at the next poll", router, held)
        return published

    def _learns(self, router: str, source: str, group: str) -> bool:
        task = self.fanout.tasks.get(router)
        if task is None:
            return False
        try:
            held = task.mediator.fleet.desired.get(RuleKey.make(source, group))
        except ValueError:  # a pair no rule could name: a prefix rule's host, never a learning rule
            return False
        return held is not None and held.rule.binding.on(router).learn

    def _sender_moved(self, report: DeniedReport, now: float, at: float) -> None:
        e = report.entry
        if e.reason not in _MOVED_REASONS:
            return
        source, group = str(e.source), str(e.group)
        pair = (report.router, source, group)
        last = self._moved.get(pair)
        if (last is not None and now - last < MOVED_EVERY) or not self._learns(report.router, source, group):
            return
        # Bounded by the rate limit: what is older than MOVED_EVERY no longer holds anything back.
        self._moved = {k: t for k, t in self._moved.items() if now - t < MOVED_EVERY}
        self._moved[pair] = now
        event = SenderMovedEvent(router=report.router, source=source, group=group, reason=str(e.reason),
                                 packets=e.packets, new_packets=report.new_packets)
        self.bus.publish(EventKind.SENDER_MOVED, event, at)
        self.counters["sender_moved"] += 1
        log.warning("router=%s sender %s -> %s moved (%s): %d packets dropped since it was pinned; "
                    "`mauthctl rearm %s %s` pins it afresh", report.router, source, group, e.reason, e.packets,
                    source, group)

    # -- polling -----------------------------------------------------------------

    def start(self, on_crash: Callable[[asyncio.Task], None]) -> None:
        loop = asyncio.get_running_loop()
        for name in self.fanout.tasks:
            task = loop.create_task(self._run(name), name=f"denied-{name}")
            task.add_done_callback(on_crash)
            self._running.append(task)

    async def stop(self) -> None:
        await cancel_all(self._running)
        self._running.clear()

    async def _run(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll(name)

    async def poll(self, name: str) -> bool:
        """List one router's denied table and report the news; False if it was not listed."""
        task = self.fanout.tasks[name]
        rc = task.core
        if rc.status not in (UP, CONVERGING):
            return False
        try:
            entries = await task.list_denied(max_age=self.interval / 2)
        except (RouterUnreachable, RouterAnswer, OSError) as exc:
            self.poll_failures[name] = self.poll_failures.get(name, 0) + 1
            log.debug("router=%s denied table not read: %s", name, exc)
            return False
        self.polls[name] = self.polls.get(name, 0) + 1
        self.process(name, entries)
        if rc.receiver_wants is not None and rc.recv_verified and not rc.recv_unsupported:
            try:
                joins = await task.list_denied_joins(max_age=self.interval / 2)
            except (RouterUnreachable, RouterAnswer, OSError) as exc:
                self.poll_failures[name] = self.poll_failures.get(name, 0) + 1
                log.debug("router=%s refused joins not read: %s", name, exc)
                return True
            self.process_joins(name, joins)
        return True
