"""Events across instances: the leader's event stream, heard by every standby (PostgreSQL LISTEN/NOTIFY).

On a shared PostgreSQL database, the leader's `EventBus` (mauthserver/events.py)
sends each event it publishes as a NOTIFY on channel `mauth_events`
(`notify_payload`), after the change it describes has committed. Each
standby LISTENs on a connection of its own (`Listener`, a thread), and its
daemon publishes what it hears on its own bus, so a dashboard or `mauthctl
events` connected to a standby sees the same kinds and data as one connected
to the leader, a few milliseconds later; the standby also re-reads its
views from the database (rules, sessions, routers' applied rules) so that its
`GET` answers agree with the events.

* A NOTIFY payload is at most 8000 bytes. An event whose JSON is larger (a
  session with a very long description) is sent as a `resync` notice
  instead, which tells the standby's clients to re-read the lists: nothing
  is silently lost.
* A listener that lost its connection cannot know what it missed: after a
  reconnect it publishes `resync` too.
* Notifications are sent by the leader only; a standby that becomes leader
  stops relaying (its own bus is then the source).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from mauthcore.events import EventKind

log = logging.getLogger("mauthserver.relay")

CHANNEL = "mauth_events"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes


def notify_payload(holder: str, term: int, kind: EventKind, at: float, data: Any) -> str:
    """The NOTIFY payload for one event (or a resync notice when it would not fit)."""
    text = json.dumps({"h": holder, "t": term, "k": str(kind), "a": at, "d": data}, sort_keys=True,
                      separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD:
        text = json.dumps({"h": holder, "t": term, "k": str(EventKind.RESYNC), "a": at,
                           "d": {"message": f"a {kind} event was too large to relay; re-read sessions, rules"
                                            " and routers"}}, sort_keys=True, separators=(",", ":"))
    return text


def parse_payload(text: str) -> tuple[str, int, EventKind, float, dict] | None:
    """(holder, term, kind, at, data) from a payload; None for anything else (logged, ignored)."""
    try:
        obj = json.loads(text)
        kind = EventKind(obj["k"])
        data = obj["d"]
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        return str(obj["h"]), int(obj["t"]), kind, float(obj["a"]), data
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("relay: ignoring a notification that is not a mauthserver event (%s)", exc)
        return None


class Listener:
    """LISTEN on the channel on a thread; hand each payload (and each reconnect) to `deliver`."""

    def __init__(self, conninfo: str, deliver: Callable[[str | None], object], *, retry: float = 1.0) -> None:
        self.conninfo = conninfo
        self.deliver = deliver  # called on the thread: payload text, or None after a reconnect
        self.retry = retry
        self.counters = {"notifications": 0, "reconnects": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-relay", daemon=True)
        self._thread.start()

    def stop_soon(self) -> None:
        """Stop listening within half a second, without waiting for the thread."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        first = True
        while not self._stop.is_set():
            try:
                # The store's conninfo already carries its timeouts and keepalives (mauthserver/pgstore.py).
                with psycopg.connect(self.conninfo, autocommit=True, application_name="mauthserver-relay") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self.counters["reconnects"] += 1
                        self.deliver(None)
                    first = False
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self.counters["notifications"] += 1
                            self.deliver(n.payload)
            except Exception as exc:  # psycopg.Error, OSError: try again
                if self._stop.is_set():
                    return
                log.warning("relay: lost the database connection (%s); listening again in %g s",
                            " ".join(str(exc).split())[:200], self.retry)
                first = False
                self._stop.wait(self.retry)
