"""mauthserver's daemon shell: one asyncio event loop running every part.

Strategy: one thread, one loop, so the mediator, the store and the cores
never see two callers at once and need no locks. In the loop:

* the HTTP API (aiohttp) and its event streams;
* the router protocol for the whole fleet (`FleetServer`, a datagram endpoint);
* the SAP listener (datagram endpoints), feeding the mediator;
* one fan-out task per router;
* with `--metrics`, a second aiohttp site serving /metrics (mauthserver/metrics.py);
* one task per router listing its denied senders (mauthserver/denied.py);
* a housekeeping task: session expiry at the directory's next deadline,
  persisting when sessions were last heard, joining SAP groups on new
  interfaces, and the audit log's retention (`--audit-max-age`,
  `--audit-max-rows`): a pruning pass at start-up and every hour, each
  deleting at most `PRUNE_BATCH` rows (mauthserver/store.py) in one short
  transaction; a pass cut short by that bound is followed by another a
  second later, so a large backlog is worked off in small steps between
  the other work.

SQLite calls run in the loop: they are short (a commit is well under a
millisecond) and keeping them there keeps "committed, then acknowledged"
trivially true.

Roles: with SQLite the one instance leads from the start. With a shared
PostgreSQL database (mauthserver/leader.py) an instance starts as a standby:
it serves the API (reads from views it re-reads from the database as the
leader's events arrive, mauthserver/relay.py; commands forwarded to the
leader, mauthserver/standby.py), hears SAP without acting on it, and runs
the election; once elected it fences the store with its term and runs
`_lead`: the routers, the reconcilers, the router protocol and housekeeping,
from the desired state read afresh. A leader that loses its lease exits
(status 1) for the service manager to restart it as a standby.

Start-up: open the store (refusing a database it does not understand),
mirror the routers of the command line into it, rebuild the session
directory from the stored announcements, bind every socket (any failure is
a `StartupError`: one sentence, exit status 2), then start the fan-out.
Signals: SIGTERM/SIGINT stop cleanly (exit 0); SIGHUP re-reads the token
file and the key file, keeping the old ones if the new ones are bad. An
unexpected exception anywhere (a task, a protocol callback, an HTTP handler)
is logged and stops the daemon with exit status 1, so that systemd restarts
it (docs/design.md: fail closed, never limp on in an unknown state).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import signal
import socket
import time

from aiohttp import web

from mauthcore.events import EventKind
from mauthcore.protocol.client import RetryPolicy
from mauthcore.protocol.errors import LocalProtocolError
from mauthcore.protocol.server import legacy_checker
from sap.directory import DEFAULT_MAX_BYTES, DEFAULT_MAX_SESSIONS, Directory

from . import api, metrics
from .config import ConfigError, Options, load_key_file, load_token, parse_advertise
from .core import RouterCore, Timers
from .denied import DeniedWatch
from .events import EventBus
from .fanout import FanOut
from .fleet_backend import FleetServer
from .leader import Leadership, holder_id
from .relay import CHANNEL, Listener, notify_payload, parse_payload
from .sapl import SapListener
from .service import Mediator
from .standby import Forwarder
from .store import PRUNE_BATCH, Store, StoreError, open_store

log = logging.getLogger("mauthserver")

HOUSEKEEPING = 30.0  # seconds between last-heard flushes and interface rescans
BIND_PATIENCE = 10.0  # seconds a new leader waits for the router protocol's port to be free
FOLLOW_DELAY = 0.1  # a standby re-reads its views at most this often while the leader's events arrive
AUDIT_PRUNE_INTERVAL = 3600.0  # seconds between audit retention passes
AUDIT_PRUNE_AGAIN = 1.0  # seconds before the next pass when the batch bound cut one short


class StartupError(Exception):
    """mauthserver cannot start; the message says why in one sentence."""


class Notifier:
    """sd_notify(3) through the sdnotify package; silent when not under systemd."""

    def __init__(self) -> None:
        self._n = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._n = sdnotify.SystemdNotifier()
        # WatchdogSec= in the unit: ping twice per period from the event loop, so a
        # wedged loop stops the pings and systemd restarts the daemon.
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, state: str) -> None:
        if self._n is not None:
            self._n.notify(state)


class Daemon:
    audit_prune_batch = PRUNE_BATCH  # audit rows deleted per retention pass at most

    def __init__(self, opts: Options, token: str, keys) -> None:
        self.opts = opts
        self.token = token
        self.keys = keys
        self.exit_code = 0
        self.store: Store | None = None
        self.mediator: Mediator | None = None
        self.fanout: FanOut | None = None
        self.sap: SapListener | None = None
        self.fleet_server: FleetServer | None = None
        self._fleet_transport: asyncio.DatagramTransport | None = None
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self._stop: asyncio.Event | None = None
        self._sap_heard: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.notifier = Notifier()
        self.denied: DeniedWatch | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.leadership: Leadership | None = None  # a shared (PostgreSQL) database only
        self.relay: Listener | None = None
        self.forwarder: Forwarder | None = None
        self.role = api.Role()
        self.leading = False
        self._follow_pending = False
        self.standby_sap = 0  # SAP packets heard while a standby (not acted upon)
        self.relay_failures = 0  # events the leader could not relay to the standbys
        self.audit_pruned = 0  # audit rows deleted by retention since start-up
        self.audit_rows: int | None = None  # audit rows after the last retention pass (None: before the first)

    # -- start -------------------------------------------------------------------

    async def start(self) -> None:
        o = self.opts
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        self._sap_heard = asyncio.Event()
        loop.set_exception_handler(self._on_loop_exception)
        try:
            self.store = open_store(o.db, now=time.time(), password_file=o.db_password_file)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        shared = self.store.kind == "postgresql"
        self.timers = Timers(probe_interval=o.probe_interval, verify_interval=o.verify_interval,
                             retry_max=o.retry_max)
        try:
            self.policy = RetryPolicy(timeout=o.router_timeout, tries=o.router_tries,
                                      max_timeout=max(o.router_timeout, 1.0))
        except LocalProtocolError as exc:
            raise StartupError(f"--router-timeout/--router-tries: {exc}") from None
        bus = EventBus()
        # Until it leads, an instance's views come from the store (a standby re-reads them as the leader
        # changes it); `_lead` makes them the leader's.
        self.mediator = Mediator(self.store, self._directory(), bus, self._cores())
        if shared:
            assert self.store.conninfo is not None  # a PostgreSQL store has one
            self.store.fencing = True  # no writes until elected (Store.fence)
            self.store.fence(None, None)
            self.mediator.follow_store(self._directory())
            self.forwarder = Forwarder(api.PREFIX, self._leader_api, self._last_leader)
        self.role = api.Role(forwarder=self.forwarder)

        # The client API.
        self._app = api.make_app(self.mediator, self.token, self.fatal, role=self.role)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        host, port = o.api
        try:
            await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        except OSError as exc:
            raise StartupError(f"cannot serve the API on {host}:{port}: {exc.strerror or exc}") from None

        # Prometheus metrics, on a listener of their own (no bearer token).
        if o.metrics is not None:
            try:
                self._metrics_runner, bound = await metrics.serve(o.metrics, metrics.make_registry(self))
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {o.metrics[0]}:{o.metrics[1]}:"
                                   f" {exc.strerror or exc}") from None
            log.info("metrics on http://%s:%d/metrics", f"[{bound[0]}]" if ":" in bound[0] else bound[0], bound[1])

        # SAP: heard by every instance; stored, and so acted upon, by the leader only.
        if o.sap:
            self.sap = SapListener(o.sap_groups, self._on_sap, port=o.sap_port, ifaces=o.sap_ifaces)
            try:
                await self.sap.start()
            except OSError as exc:
                raise StartupError(exc.strerror or str(exc)) from None

        if not shared:
            await self._lead()
        else:
            assert self.store.conninfo is not None  # a PostgreSQL store has one
            advertise = o.advertise or parse_advertise(None, self._runner.addresses[0][:2])
            if advertise is None:  # a wildcard API address: this host's name, which the others may resolve
                advertise = f"http://{socket.gethostname()}:{self._runner.addresses[0][1]}"
                log.warning("--api %s is a wildcard address: standbys will forward commands to %s while this"
                            " instance leads; give --advertise if they cannot reach it by that name", o.api[0],
                            advertise)
            self.leadership = Leadership(
                self.store.conninfo, holder_id(o.instance), advertise, lease=o.lease,
                on_elected=lambda term: loop.call_soon_threadsafe(self._on_elected, term),
                on_lost=lambda why: loop.call_soon_threadsafe(self._on_lost, why))
            self.relay = Listener(self.store.conninfo,
                                  lambda payload: loop.call_soon_threadsafe(self._on_relayed, payload))
            self.relay.start()
            # The first attempt before "ready": a standby then knows the leader it forwards to.
            await loop.run_in_executor(None, self.leadership.start, o.lease)
        log.info("ready: API on %s:%d, %s, %d routers (%s), %d rules, %d sessions (at most %d), database %s",
                 o.api[0], o.api[1], "leader" if self.leading else "standby until elected (reads answered here,"
                 " commands forwarded to the leader)", len(o.routers),
                 ", ".join(f"{r.name}={r.host}:{r.port}" for r in o.routers) or "none",
                 len(self.mediator.fleet.desired), len(self.mediator.directory), o.max_sessions,
                 self.store.describe())

    def _directory(self) -> Directory:
        o = self.opts
        # The stored descriptions are bounded too, at the defaults' share per session (about 8 KiB), so
        # that --max-sessions, not the byte bound, is what limits sessions of any usual size.
        bounds = {"max_sessions": o.max_sessions,
                  "max_bytes": max(DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES * o.max_sessions // DEFAULT_MAX_SESSIONS)}
        if o.sap_timeout is None:  # RFC 2974 §4: ten announcement periods or one hour, whichever is greater
            return Directory(allow_missing_ttl=True, **bounds)
        return Directory(min_timeout=o.sap_timeout, timeout_factor=0.0, allow_missing_ttl=True, **bounds)

    def _cores(self) -> list[RouterCore]:
        assert self.store is not None
        applied = self.store.applied()
        return [RouterCore(r.name, r.host, r.port, self.timers, jitter=random.random, applied=applied.get(r.name))
                for r in self.opts.routers]

    async def _lead(self) -> None:
        """Take on the leader's work: routers, reconcilers, SAP, the router protocol, housekeeping.

        With a shared database this runs once the lease is held and the store fenced with its term: the
        desired state, the routers' applied rules and the sessions are read afresh (a previous leader
        may have written up to its last moment), then every router is reconciled from scratch."""
        o, loop = self.opts, asyncio.get_running_loop()
        assert self.store is not None and self.mediator is not None
        changed = self.store.sync_routers([(r.name, r.host, r.port) for r in o.routers], now=time.time())
        for what, names in changed.items():
            if names:
                log.info("routers %s since the last start: %s", what, ", ".join(names))
        self.mediator.lead(self._directory(), self._cores())
        fence = self.leadership.check if self.leadership is not None else None
        self.fanout = FanOut(self.mediator, self.store, self.mediator.bus, self.keys, self.policy, fence=fence)
        if o.denied_interval > 0 and self.fanout.tasks:
            self.denied = DeniedWatch(self.fanout, self.mediator.bus, interval=o.denied_interval)
        self.role.fanout, self.role.denied, self.role.forwarder = self.fanout, self.denied, None

        # The router protocol for the whole fleet.
        if o.listen is not None:
            host, port = o.listen
            fleet_server = self.fleet_server = FleetServer(self.mediator, self.keys, legacy_checker(o.legacy_allow))
            # A new leader on the host of the previous one may find the port still held for a moment by
            # that leader on its way out (it stopped sending at its deadline and is exiting): try again
            # for a few seconds before giving up.
            patience = time.monotonic() + (BIND_PATIENCE if self.leadership is not None else 0.0)
            while True:
                try:
                    self._fleet_transport, _ = await loop.create_datagram_endpoint(
                        lambda: fleet_server, local_addr=(host, port))
                    break
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE and time.monotonic() < patience:
                        await asyncio.sleep(0.2)
                        continue
                    raise StartupError(f"cannot listen for the router protocol on {host}:{port}:"
                                       f" {exc.strerror or exc}") from None
        if self.leadership is not None:
            term = self.leadership.term
            self.mediator.bus.hooks.append(
                lambda ev: self._relay_out(term, ev))
        self.leading = True
        self.fanout.start(self._on_task_done)
        if self.denied is not None:
            self.denied.start(self._on_task_done)
        task = loop.create_task(self._housekeeping(), name="housekeeping")
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)
        log.info("leading%s: %d routers, %d rules, %d sessions; router protocol %s",
                 f" (term {self.leadership.term})" if self.leadership is not None else "", len(o.routers),
                 len(self.mediator.fleet.desired), len(self.mediator.directory),
                 f"on {o.listen[0]}:{o.listen[1]}" if o.listen else "off")

    # -- leadership (a shared PostgreSQL database only) -----------------------------------

    def _on_elected(self, term: int) -> None:
        assert self.store is not None and self.leadership is not None
        if self._stop is None or self._stop.is_set():
            return
        self.store.fence(self.leadership.holder, term, lease=self.opts.lease)
        if self.relay is not None:
            self.relay.stop_soon()
        task = asyncio.get_running_loop().create_task(self._lead(), name="take-over")
        task.add_done_callback(self._on_lead_done)

    def _on_lead_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, StartupError):
            log.error("cannot take over as the leader: %s", exc)
            self.fatal()
        elif exc is not None:
            self._on_task_done(task)

    def _on_lost(self, reason: str) -> None:
        if self.leading:
            log.error("leadership lost (%s): stopped sending to routers; exiting so that the service manager"
                      " restarts this mauthserver as a standby", reason)
            self.fatal()

    def _leader_api(self) -> str | None:
        return self.leadership.leader_api() if self.leadership is not None else None

    def _last_leader(self) -> str | None:
        cur = self.leadership.current if self.leadership is not None else None
        return cur.api if cur is not None else None

    def _relay_out(self, term: int, event) -> None:
        """The leader: each published event to the standbys (mauthserver/relay.py)."""
        assert self.store is not None and self.leadership is not None
        try:
            self.store.notify(CHANNEL, notify_payload(self.leadership.holder, term, event.kind, event.at, event.data))
        except StoreError as exc:  # the standbys resync when their own connection comes back
            self.relay_failures += 1
            log.warning("cannot relay a %s event to the standbys: %s", event.kind, exc)

    def _on_relayed(self, payload: str | None) -> None:
        """A standby: an event the leader published (None: the relay reconnected and may have missed some)."""
        if self.leading or self.mediator is None:
            return
        bus = self.mediator.bus
        if payload is None:
            bus.publish(EventKind.RESYNC, {"message": "events may have been missed; re-read sessions, rules and"
                                                      " routers"}, time.time())
        else:
            parsed = parse_payload(payload)
            if parsed is None:
                return
            holder, _term, kind, at, data = parsed
            if self.leadership is not None and holder == self.leadership.holder:
                return
            bus.publish(kind, data, at)
        self._schedule_follow()

    def _schedule_follow(self) -> None:
        """Re-read the standby's views from the store, at most every FOLLOW_DELAY seconds."""
        if self._follow_pending:
            return
        self._follow_pending = True

        def follow() -> None:
            self._follow_pending = False
            if self.leading or self.mediator is None:
                return
            try:
                self.mediator.follow_store(self._directory())
            except StoreError as exc:
                log.warning("standby: cannot re-read the database (%s); the views are as of the last read", exc)

        asyncio.get_running_loop().call_later(FOLLOW_DELAY, follow)

    # -- run ---------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            await self.start()
            assert self._stop is not None  # start() made it
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            self.notifier.notify(f"READY=1\nSTATUS=managing {len(self.opts.routers)} routers")
            if self.notifier.watchdog_interval:
                task = loop.create_task(self._watchdog(self.notifier.watchdog_interval), name="watchdog")
                task.add_done_callback(self._on_task_done)
                self._tasks.append(task)
            await self._stop.wait()
        finally:
            self.notifier.notify("STOPPING=1")
            await self.close()
        return self.exit_code

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _on_stop_signal(self, sig: int) -> None:
        log.info("%s received, stopping", signal.Signals(sig).name)
        assert self._stop is not None  # the handler is installed after start() made it
        self._stop.set()

    def fatal(self) -> None:
        self.exit_code = 1
        if self._stop is not None:
            self._stop.set()

    def _on_task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed; stopping so that the service manager restarts us", task.get_name(),
                      exc_info=exc)
            self.fatal()

    def _on_loop_exception(self, loop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            log.debug("connection error: %s", context.get("message"))
            return
        log.error("unexpected error: %s; stopping so that the service manager restarts us",
                  context.get("message"), exc_info=exc)
        self.fatal()

    def reload(self) -> None:
        """SIGHUP: re-read the token file and the key file; keep the old ones on any error."""
        # The handler is installed after start() made the app (a standby has no fan-out yet).
        assert self._app is not None
        try:
            token = load_token(self.opts.token_file)
        except ConfigError as exc:
            log.error("reload: %s; keeping the current token", exc)
        else:
            self.token = token
            self._app[api.TOKEN].value = token
            log.info("reload: token file %s loaded", self.opts.token_file)
        if self.opts.key_file:
            try:
                keys = load_key_file(self.opts.key_file)
            except ConfigError as exc:
                log.error("reload: %s; keeping the current keys", exc)
                return
            self.keys = keys
            if self.fleet_server is not None:
                self.fleet_server.core.set_keys(keys)
            for task in self.fanout.tasks.values() if self.fanout is not None else ():
                task.link.client.keys = keys
            log.info("reload: key file %s loaded (%d keys)", self.opts.key_file, len(keys))

    # -- SAP and housekeeping ---------------------------------------------------------

    def _on_sap(self, data: bytes, peer: tuple) -> None:
        # The SAP listener starts after start() made the mediator and the event.
        assert self.mediator is not None and self._sap_heard is not None
        if not self.leading:  # a standby: the leader stores the sessions, and this one reads them
            self.standby_sap += 1
            return
        self.mediator.on_sap_packet(data, peer, time.time())
        self._sap_heard.set()

    async def _housekeeping(self) -> None:
        m, heard = self.mediator, self._sap_heard
        assert m is not None and heard is not None  # start() made them before this task
        next_slow = time.time() + HOUSEKEEPING
        next_prune = time.time()  # the first pass at start-up
        while True:
            heard.clear()
            now = time.time()
            m.expire(now)
            if now >= next_slow:
                m.flush_heard()
                if self.sap is not None:
                    self.sap.rescan()
                next_slow = now + HOUSEKEEPING
            if now >= next_prune:
                next_prune = now + self.prune_audit(now)
            due = m.directory.next_expiry()
            until = min(next_slow, next_prune) if due is None else min(next_slow, next_prune, due)
            delay = min(max(0.01, until - time.time()), HOUSEKEEPING)
            try:
                await asyncio.wait_for(heard.wait(), delay)
            except TimeoutError:
                pass

    def prune_audit(self, now: float) -> float:
        """One audit retention pass (Store.prune_audit); returns the seconds until the next one is due."""
        assert self.store is not None  # start() opened it before the housekeeping task
        o = self.opts
        result = self.store.prune_audit(now=now, max_age=o.audit_max_age * 86400.0, max_rows=o.audit_max_rows,
                                        batch=self.audit_prune_batch)
        self.audit_rows = result.rows
        if result.removed:
            self.audit_pruned += result.removed
            log.info("audit log: %d oldest rows removed (%s), %d kept%s", result.removed,
                     "--audit-max-age" if result.by == "age" else "--audit-max-rows", result.rows,
                     "; more to remove" if result.more else "")
        return AUDIT_PRUNE_AGAIN if result.more else AUDIT_PRUNE_INTERVAL

    # -- stop ---------------------------------------------------------------------

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.denied is not None:
            await self.denied.stop()
        if self.fanout is not None:
            await self.fanout.stop()
        if self._metrics_runner is not None:
            try:
                await self._metrics_runner.cleanup()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("metrics listener shutdown failed", exc_info=True)
        if self.sap is not None:
            self.sap.close()
        if self._fleet_transport is not None:
            self._fleet_transport.close()
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except Exception:  # pragma: no cover - best effort on the way out
                log.debug("API shutdown failed", exc_info=True)
        if self.relay is not None:
            self.relay.stop_soon()
        if self.store is not None and self.mediator is not None and self.leading:
            try:
                self.mediator.flush_heard()
            except Exception:
                log.debug("last-heard flush failed", exc_info=True)
        if self.leadership is not None:  # after the fan-out stopped: then a standby may take over at once
            await asyncio.get_running_loop().run_in_executor(None, self.leadership.stop)
        if self.store is not None:
            self.store.close()
