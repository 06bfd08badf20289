"""mauthserver's metrics and denied-sender events.

`DeniedTracker` and the rate limit are driven with a fake clock; the whole
daemon runs in-process (SQLite in tmp_path, the API and /metrics on
127.0.0.1, a "router" served by the real ServerCore on a MemoryBackend over
real UDP), and the assertions are about what a scrape and the event stream
show. tests/integration/test_metrics.py does the same with the real daemons
and real traffic in the lab.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import DeniedEntry, Reason
from mauthcore.protocol.server import ServerCore
from mauthserver.config import Options, RouterSpec
from mauthserver.daemon import Daemon
from mauthserver.denied import DeniedTracker, DeniedWatch
from mauthserver.events import EventBus

KEYS = KeyRing([Key(1, bytes(range(32)))])
A = ipaddress.IPv4Address


def entry(source: str, group: str, packets: int, reason: Reason = Reason.UNAUTHORIZED) -> DeniedEntry:
    return DeniedEntry(A(source), A(group), reason, packets, packets * 100, 7, 1_700_000_000_000)


# -- the tracker ------------------------------------------------------------------


def test_new_pairs_growth_and_resets_are_news_and_nothing_else_is():
    t = DeniedTracker()
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(str(r.entry.source), r.entry.packets, r.new_packets, r.first) for r in news] == [
        ("192.0.2.13", 30, 30, True), ("192.0.2.12", 10, 10, True)]  # biggest first
    event = news[0].to_dict()
    assert (event["last_seen"], event["last_ttl"], event["bytes"]) == (1_700_000_000.0, 7, 3000)
    for r in news:
        t.reported(r)
    assert t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10), entry("192.0.2.13", "239.1.1.1", 30)]) == []
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 25), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(str(r.entry.source), r.entry.packets, r.new_packets, r.first) for r in news] == [("192.0.2.12", 25, 15, False)]
    t.reported(news[0])
    # Fewer packets than reported: the pair left the router's table and came back.
    news = t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 4), entry("192.0.2.13", "239.1.1.1", 30)])
    assert [(r.entry.packets, r.new_packets, r.first) for r in news] == [(4, 4, True)]
    # The same pair denied for another reason is another report.
    news = t.observe("r1", [entry("192.0.2.13", "239.1.1.1", 30, Reason.TTL)])
    assert [(str(r.entry.source), str(r.entry.reason), r.first) for r in news] == [("192.0.2.13", "ttl", True)]
    assert t.pairs["r1"] == 1 and t.packets["r1"] == {"ttl": 30}


def test_a_pair_gone_from_the_table_is_forgotten_and_routers_are_separate():
    t = DeniedTracker()
    for r in t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10)]):
        t.reported(r)
    assert t.observe("r2", [entry("192.0.2.12", "239.1.1.1", 10)])[0].first  # another router: news
    assert t.observe("r1", []) == []
    assert t.observe("r1", [entry("192.0.2.12", "239.1.1.1", 10)])[0].first


# -- the rate limit ---------------------------------------------------------------------


class _Fanout:
    tasks: dict = {}


def test_a_flood_of_pairs_is_reported_within_the_rate_and_summarised(caplog):
    now = [100.0]
    bus = EventBus()
    w = DeniedWatch(_Fanout(), bus, rate=1.0, burst=3, clock=lambda: now[0], wall=lambda: 5000.0)
    sub = bus.subscribe(None, 0.0)
    flood = [entry(f"192.0.2.{20 + i}", "239.1.1.1", 100 + i) for i in range(10)]
    with caplog.at_level(logging.INFO, logger="mauthserver.denied"):
        published = w.process("r1", flood)
    assert [r.entry.packets for r in published] == [109, 108, 107]  # the biggest first
    events = drain(sub)
    assert [k for k, _ in events] == ["denied"] * 3 + ["denied.suppressed"]
    assert events[0][1] == {"router": "r1", "source": "192.0.2.29", "group": "239.1.1.1", "reason": "unauthorized",
                            "packets": 109, "bytes": 10900, "new_packets": 109, "first": True, "last_ttl": 7,
                            "last_seen": 1_700_000_000.0}
    assert events[-1][1] == {"router": "r1", "suppressed": 7, "pairs": 10}
    assert len(caplog.records) == 4 and "7 more denied-sender reports suppressed" in caplog.records[-1].message
    assert w.counters == {"published_new": 3, "published_growing": 0, "suppressed": 7}

    # Two seconds later: two tokens. What was held back is offered again, biggest first.
    now[0] += 2.0
    published = w.process("r1", flood)
    assert [r.entry.packets for r in published] == [106, 105]
    assert [d["suppressed"] for k, d in drain(sub) if k == "denied.suppressed"] == [5]
    # The bucket refills up to its burst only: three more, then the last two.
    now[0] += 100.0
    assert [r.entry.packets for r in w.process("r1", flood)] == [104, 103, 102]
    now[0] += 100.0
    assert [r.entry.packets for r in w.process("r1", flood)] == [101, 100]
    # Nothing new and nothing grown: no report at all, and no summary.
    now[0] += 100.0
    assert w.process("r1", flood) == []
    events = drain(sub)
    assert [k for k, _ in events] == ["denied"] * 3 + ["denied.suppressed"] + ["denied"] * 2
    assert w.counters == {"published_new": 10, "published_growing": 0, "suppressed": 7 + 5 + 2}
    # A reported pair that keeps sending is reported again, as growing.
    flood[0] = entry("192.0.2.20", "239.1.1.1", 180)
    assert [(r.new_packets, r.first) for r in w.process("r1", flood)] == [(80, False)]


def drain(sub) -> list[tuple[str, dict]]:
    out = []
    while not sub.queue.empty():
        e = sub.queue.get_nowait()
        if e is not None and e.kind not in ("hello",):
            out.append((e.kind, e.data))
    return out


# -- the daemon, its /metrics and the denied events -------------------------------------------


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


async def until(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


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


def test_the_event_shape_is_documented_in_the_openapi_description():
    from mauthserver.openapi import spec

    doc = spec()
    props = doc["components"]["schemas"]["DeniedEvent"]["properties"]
    assert set(props) == {"at", "router", "source", "group", "reason", "packets", "bytes", "new_packets", "first",
                          "last_ttl", "last_seen"}
    report = DeniedTracker().observe("r1", [entry("192.0.2.12", "239.1.1.1", 1)])[0]
    assert set(report.to_dict()) | {"at"} == set(props)
    assert "denied" in json.dumps(doc["paths"]["/events"])
