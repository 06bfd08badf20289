"""mauthserver's metrics and denied-sender events, the whole daemon in-process.

SQLite in tmp_path, the API and /metrics on 127.0.0.1, a "router" served by
the real ServerCore on a MemoryBackend over real UDP; the assertions are
about what a scrape and the event stream show. `DeniedTracker` on a fake
clock is tests/unit/test_mauthserver_metrics.py; the real daemons with real
traffic in the lab, tests/integration/test_metrics.py.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.server import ServerCore
from mauthserver.config import Options, RouterSpec
from mauthserver.daemon import Daemon
from tests.support import waiting
from tests.unit.test_mauthserver_metrics import A, entry  # noqa: F401

KEYS = KeyRing([Key(1, bytes(range(32)))])


class FakeRouter(asyncio.DatagramProtocol):
    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        reply = self.core.receive(data, addr, time.monotonic())
        if reply is not None:
            self.transport.sendto(reply, addr)


def until(predicate):
    """The predicates here are coroutine functions (a scrape, an event read); 15 s for the daemon's timers."""
    return waiting.until(predicate, 15.0)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_move_and_denied_senders_reach_the_event_stream(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        backend = MemoryBackend()
        router = FakeRouter(ServerCore(backend, KEYS, epoch=1, state_id=10))
        transport, _ = await loop.create_datagram_endpoint(lambda: router, local_addr=("127.0.0.1", 0))
        rport = transport.get_extra_info("sockname")[1]
        opts = Options(db=str(tmp_path / "m.db"), api=("127.0.0.1", 0), sap=False, listen=None,
                       routers=[RouterSpec("r1", "127.0.0.1", rport)], probe_interval=0.1, router_timeout=0.05,
                       router_tries=3, retry_max=0.5, metrics=("127.0.0.1", 0), denied_interval=0.1)
        daemon = Daemon(opts, "t" * 20, KEYS)
        run = loop.create_task(daemon.run())
        try:
            await until(_started(daemon))
            mhost, mport = daemon._metrics_runner.addresses[0][:2]
            ahost, aport = daemon._runner.addresses[0][:2]
            async with aiohttp.ClientSession() as http:
                async def scrape():
                    async with http.get(f"http://{mhost}:{mport}/metrics") as resp:
                        assert resp.status == 200  # no token needed
                        return samples(await resp.text())

                s0 = await scrape()
                assert s0[("mauthserver_rules", ())] == 0
                assert s0[("mauthserver_api_requests_total", ())] == 0

                # A rule through the API: desired, fanned out, applied; the API counter moves.
                headers = {"Authorization": "Bearer " + "t" * 20}
                async with http.post(f"http://{ahost}:{aport}/api/v1/rules", headers=headers,
                                     json={"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8}) as resp:
                    assert resp.status == 201
                async with http.get(f"http://{ahost}:{aport}/api/v1/rules") as resp:
                    assert resp.status == 401

                async def applied():
                    s = await scrape()
                    return s if s.get(("mauthserver_router_rules_applied", (("router", "r1"),))) == 1 else None

                s1 = await until(applied)
                assert s1[("mauthserver_rules", ())] == 1
                assert s1[("mauthserver_router_up", (("router", "r1"),))] == 1
                assert s1[("mauthserver_router_calls_total", (("call", "install"), ("router", "r1")))] == 1
                assert s1[("mauthserver_router_rules_pending", (("router", "r1"),))] == 0
                assert s1[("mauthserver_api_requests_total", ())] == 2
                assert s1[("mauthserver_api_rejected_total", (("cause", "unauthorized"),))] == 1
                assert s1[("mauthserver_router_last_contact_timestamp_seconds", (("router", "r1"),))] > 0
                assert s1[("mauthserver_events_published_total", ())] >= 1

                # A sender without a rule shows up in the router's denied table: one `denied` event.
                sub = daemon.mediator.bus.subscribe(None, time.time())
                backend.denied_entries = [entry("192.0.2.12", "239.1.1.1", 40)]

                async def denied_event():
                    return next((e for e in drain_events(sub) if e.kind == "denied"), None)

                event = await until(denied_event)
                assert event.data["router"] == "r1" and event.data["source"] == "192.0.2.12"
                assert event.data["packets"] == 40 and event.data["first"] is True
                backend.denied_entries = [entry("192.0.2.12", "239.1.1.1", 55)]
                event = await until(denied_event)
                assert (event.data["packets"], event.data["new_packets"], event.data["first"]) == (55, 15, False)

                s2 = await scrape()
                assert s2[("mauthserver_denied_reports_total", (("kind", "new"),))] == 1
                assert s2[("mauthserver_denied_reports_total", (("kind", "growing"),))] == 1
                assert s2[("mauthserver_denied_pairs", (("router", "r1"),))] == 1
                assert s2[("mauthserver_denied_packets", (("reason", "unauthorized"), ("router", "r1")))] == 55
                assert s2[("mauthserver_denied_polls_total", (("router", "r1"),))] >= 2

                # The router goes silent: it is reported down and its denied table is no longer polled.
                transport.close()

                async def down():
                    s = await scrape()
                    return s if s[("mauthserver_router_up", (("router", "r1"),))] == 0 else None

                s3 = await until(down)
                assert s3[("mauthserver_router_failures_total", (("router", "r1"),))] >= 1
                assert s3[("mauthserver_router_state", (("router", "r1"), ("state", "down")))] == 1
        finally:
            daemon._stop.set()
            assert await asyncio.wait_for(run, 10) == 0

    asyncio.run(main())


def _started(daemon):
    async def check():
        return daemon._metrics_runner is not None and daemon.fanout is not None and daemon._stop is not None \
            and daemon.denied is not None and daemon.denied._running
    return check


def drain_events(sub):
    out = []
    while not sub.queue.empty():
        e = sub.queue.get_nowait()
        if e is not None:
            out.append(e)
    return out
