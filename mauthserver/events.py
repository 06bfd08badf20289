"""The event stream: what changed, in order, for the dashboard and `mauthctl events`.

Strategy: a bounded in-memory history and one bounded queue per subscriber.
`publish()` is synchronous (called by the mediator right after it committed a
change) and never blocks: a subscriber whose queue is full is cut off with a
final `overflow` event rather than slowing the daemon down; it reconnects
with `Last-Event-ID` and gets what it missed from the history, or `resync`
(re-read the lists) when that is older than the history.

Event ids are `<boot>-<n>`: `boot` is random per daemon start, so an id from
before a restart is recognised as unknown (-> `resync`) instead of being
taken for a recent one. The kinds and the shape of their data are
`mauthcore.events.EventKind` (mauthcore/events.py): sessions, rules,
routers, the mode, denied senders, and the stream's own `hello`, `resync`,
`overflow`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mauthcore.events import EventKind


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    kind: EventKind
    at: float
    data: Mapping[str, Any]

    def to_dict(self) -> dict:
        return {"id": self.id, "event": self.kind, "at": self.at, "data": self.data}


class Subscriber:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.closed = False


class EventBus:
    def __init__(self, *, history: int = 2048, queue_size: int = 10000) -> None:
        self.boot = secrets.token_hex(4)
        self._seq = 0
        self._history: deque[Event] = deque(maxlen=history)
        self._subs: set[Subscriber] = set()
        self._queue_size = queue_size
        self.counters = {"published": 0, "overflows": 0}
        # Called with each event published (the leader's relay to standbys, mauthserver/relay.py).
        self.hooks: list[Callable[[Event], None]] = []

    def publish(self, kind: EventKind, data: Mapping[str, Any], now: float) -> Event:
        self._seq += 1
        event = Event(f"{self.boot}-{self._seq}", self._seq, kind, now, data)
        self._history.append(event)
        self.counters["published"] += 1
        for sub in list(self._subs):
            self._offer(sub, event)
        for hook in self.hooks:
            hook(event)
        return event

    def _offer(self, sub: Subscriber, event: Event) -> None:
        if sub.closed:
            return
        if sub.queue.qsize() >= self._queue_size - 1:  # keep one slot for the overflow notice
            self.counters["overflows"] += 1
            sub.closed = True
            sub.queue.put_nowait(Event(f"{self.boot}-{self._seq}", self._seq, EventKind.OVERFLOW, event.at,
                                       {"message": "this client fell behind; reconnect with Last-Event-ID"}))
            sub.queue.put_nowait(None)
            self._subs.discard(sub)
            return
        sub.queue.put_nowait(event)

    def subscribe(self, last_id: str | None, now: float) -> Subscriber:
        """A new subscriber; events after `last_id` are replayed when the history still has them."""
        sub = Subscriber(self._queue_size)
        sub.queue.put_nowait(Event(f"{self.boot}-{self._seq}", self._seq, EventKind.HELLO, now,
                                   {"boot": self.boot, "last": self._seq}))
        if last_id:
            boot, _, n = last_id.partition("-")
            first = self._history[0].seq if self._history else self._seq + 1
            if boot == self.boot and n.isdigit() and int(n) + 1 >= first:
                for event in self._history:
                    if event.seq > int(n):
                        self._offer(sub, event)
            else:
                sub.queue.put_nowait(Event(f"{self.boot}-{self._seq}", self._seq, EventKind.RESYNC, now,
                                           {"message": "events were missed; re-read sessions, rules and routers"}))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)
        sub.closed = True

    def close_all(self) -> None:
        for sub in list(self._subs):
            sub.closed = True
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._subs.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subs)
