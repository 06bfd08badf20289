"""mauthserver in miniature on 127.0.0.1, for tests of its clients (mauthctl, the dashboard).

The real mediator, store (SQLite in a temporary directory), fan-out, denied
watch (mauthserver/denied.py, when a `denied_interval` is given) and HTTP
API run in an event loop of their own, in a thread, exactly as in the
daemon; the routers are the real protocol server core (`ServerCore`, the
state machine musersd runs) on a `MemoryBackend`, answering on 127.0.0.1
UDP. Tests set a router's per-rule counters and denied pairs on its backend
and feed SAP announcements to the mediator directly (no multicast leaves
the process). The client under test talks HTTP to `url` like any other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from aiohttp import web

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.client import RetryPolicy
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import DeniedEntry, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.rules import RuleKey
from mauthserver.api import make_app
from mauthserver.core import RouterCore, Timers
from mauthserver.denied import DeniedWatch
from mauthserver.events import EventBus
from mauthserver.fanout import FanOut
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap import announcer as ann
from sap.directory import Directory
from sap.sap import announcement, encode
from tests.support.waiting import wait_until

KEYS = KeyRing([Key(1, bytes(range(32)))])
TOKEN = "loopback-fleet-token-0123456789"


class RouterEndpoint(asyncio.DatagramProtocol):
    """A router: the real v2 server core on a memory backend."""

    def __init__(self, backend: MemoryBackend, epoch: int) -> None:
        self.backend = backend
        self.core = ServerCore(backend, KEYS, epoch=epoch, state_id=epoch * 10)
        self.transport = None
        self.datagrams: list[bytes] = []  # every request as it arrived, for tests of the wire encoding

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.datagrams.append(data)
        reply = self.core.receive(data, addr, time.monotonic())
        if reply is not None:
            self.transport.sendto(reply, addr)


class LoopbackFleet:
    def __init__(self, workdir: Path, routers: tuple[str, ...] = ("r1",), *,
                 denied_interval: float | None = None) -> None:
        self.workdir = workdir
        self.denied_interval = denied_interval  # the denied watch's (None: no watch, no `denied` events)
        self.denied: DeniedWatch | None = None
        self.names = routers
        self.backends = {name: MemoryBackend() for name in routers}
        self.endpoints: dict[str, RouterEndpoint] = {}
        self.url = ""
        self.mediator: Mediator | None = None
        self.app: web.Application | None = None  # the API's application
        self.subscriptions = 0  # clients that subscribed to the event stream so far
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loopback-fleet", daemon=True)

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> LoopbackFleet:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            raise RuntimeError(f"the loopback fleet did not start: {self._error}")
        return self

    def __exit__(self, *exc) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        transports, cores = [], []
        for i, name in enumerate(self.names):
            backend = self.backends[name]
            transport, endpoint = await self.loop.create_datagram_endpoint(
                lambda b=backend, e=i + 1: RouterEndpoint(b, e), local_addr=("127.0.0.1", 0))
            transports.append(transport)
            self.endpoints[name] = endpoint
            port = transport.get_extra_info("sockname")[1]
            cores.append(RouterCore(name, "127.0.0.1", port, Timers(probe_interval=0.2, verify_interval=2.0,
                                                                    retry_base=0.05, retry_max=0.2)))
        store = Store.open(self.workdir / "mauthserver.db", now=time.time())
        store.sync_routers([(c.name, c.host, c.port) for c in cores], now=time.time())
        bus = EventBus()
        subscribe = bus.subscribe

        def counted(*args, **kwargs):  # the server side of GET /events: counted for once_subscribed()
            sub = subscribe(*args, **kwargs)
            self.subscriptions += 1
            return sub

        bus.subscribe = counted
        self.mediator = Mediator(store, Directory(allow_missing_ttl=True), bus, cores)
        fanout = FanOut(self.mediator, store, bus, KEYS, RetryPolicy(timeout=0.05, tries=4, max_timeout=0.2))
        if self.denied_interval is not None:
            self.denied = DeniedWatch(fanout, bus, interval=self.denied_interval)
        app = self.app = make_app(self.mediator, TOKEN, fanout=fanout, denied=self.denied)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        fanout.start(lambda task: None)
        if self.denied is not None:
            self.denied.start(lambda task: None)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            if self.denied is not None:
                await self.denied.stop()
            await fanout.stop()
            await runner.cleanup()
            for t in transports:
                t.close()
            store.close()

    # -- doing things in the fleet's loop -----------------------------------------------

    def call(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` in the fleet's event loop; return its result."""
        async def run():
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def announce(self, sdp: bytes, announcer: str = "198.51.100.2") -> None:
        packet = encode(announcement(announcer, sdp))
        self.call(self.mediator.on_sap_packet, packet, (announcer, 9875))

    def withdraw(self, sdp: bytes, announcer: str = "198.51.100.2") -> None:
        packet = ann.plan(sdp, origin=announcer).deletion
        self.call(self.mediator.on_sap_packet, packet, (announcer, 9875))

    def once_subscribed(self, fn, *args, **kwargs) -> list[BaseException]:
        """In a thread: wait for the next client to subscribe to the event stream, then run
        `fn(*args, **kwargs)` in the fleet's loop (for a test whose own thread is about to block
        reading the stream). `fn` runs even if the wait times out, so that the reader is not left
        waiting; the returned list then holds the wait's AssertionError, for the test to check."""
        before = self.subscriptions
        errors: list[BaseException] = []

        def later():
            try:
                wait_until(lambda: self.subscriptions > before, 10, "a client to subscribe to the event stream")
            except AssertionError as exc:
                errors.append(exc)
            finally:
                self.call(fn, *args, **kwargs)

        threading.Thread(target=later, daemon=True).start()
        return errors

    def requests(self, router: str = "r1") -> list[bytes]:
        """The datagrams `router` received so far, as they came off the wire."""
        endpoint = self.endpoints[router]
        return self.call(lambda: list(endpoint.datagrams))

    def held(self, router: str = "r1") -> dict[tuple[str, str], int]:
        """What a router's table holds: (source, group) -> max TTL."""
        backend = self.backends[router]
        return self.call(lambda: {(str(k.source), str(k.group)): r.max_ttl for k, r in backend.rules.items()})

    def set_traffic(self, router: str, source: str, group: str, packets: int, octets: int) -> None:
        backend = self.backends[router]
        key = RuleKey.make(source, group)
        self.call(backend.traffic.__setitem__, key, (packets, octets, int(time.time() * 1000)))

    def set_denied(self, router: str, entries: list[tuple[str, str, str, int, int, int]]) -> None:
        """The router's denied pairs: (source, group, reason, packets, bytes, last TTL), seen just now."""
        import ipaddress

        now = int(time.time() * 1000)
        backend = self.backends[router]
        items = [DeniedEntry(ipaddress.ip_address(s), ipaddress.ip_address(g), Reason[r.upper()], p, b, ttl, now)
                 for s, g, r, p, b, ttl in entries]
        self.call(setattr, backend, "denied_entries", items)
