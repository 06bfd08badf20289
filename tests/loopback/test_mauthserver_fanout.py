"""The fan-out shell over real UDP on 127.0.0.1: a router served by the real ServerCore on a MemoryBackend.

The "router" can be swapped for a restarted one (new epoch, new state_id,
empty tables) or silenced, while the reconciler task runs in the event loop.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.client import RetryPolicy
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.server import ServerCore
from mauthcore.rules import UNBOUND, RuleKey
from mauthserver.core import RouterCore, Timers
from mauthserver.events import EventBus
from mauthserver.fanout import FanOut
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from tests.support.waiting import until

KEYS = KeyRing([Key(1, bytes(range(32)))])


class FakeRouterEndpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.core: ServerCore | None = None
        self.transport = None
        self.unanswered = 0  # requests that arrived while the router was silent

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        if self.core is None:
            self.unanswered += 1
            return  # down: silence
        reply = self.core.receive(data, addr, time.monotonic())
        if reply is not None:
            self.transport.sendto(reply, addr)


@asynccontextmanager
async def fan_out_to(backend, tmp_path, crashed: list, *, verify_interval: float):
    """One router (a ServerCore over `backend` behind a real UDP socket) and mauthserver's fan-out to it;
    yields (endpoint, store, router core, bus, mediator). The store stays open for the caller to read."""
    loop = asyncio.get_running_loop()
    endpoint = FakeRouterEndpoint()
    endpoint.core = ServerCore(backend, KEYS, epoch=1, state_id=10)
    transport, _ = await loop.create_datagram_endpoint(lambda: endpoint, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    store = Store.open(tmp_path / "m.db", now=time.time())
    store.sync_routers([("r1", "127.0.0.1", port)], now=time.time())
    timers = Timers(probe_interval=0.1, verify_interval=verify_interval, retry_base=0.05, retry_max=0.2)
    rc = RouterCore("r1", "127.0.0.1", port, timers)
    bus = EventBus()
    m = Mediator(store, Directory(), bus, [rc])
    fanout = FanOut(m, store, bus, KEYS, RetryPolicy(timeout=0.05, tries=3, max_timeout=0.1))
    fanout.start(lambda task: crashed.append(task) if not task.cancelled() and task.exception() else None)
    try:
        yield endpoint, store, rc, bus, m
    finally:
        await fanout.stop()
        transport.close()


def test_fanout_converges_recovers_and_persists(tmp_path):
    crashed = []

    async def main():
        backend = MemoryBackend()
        async with fan_out_to(backend, tmp_path, crashed, verify_interval=0) as (endpoint, store, rc, bus, m):
            for i in range(30):
                m.add_rule("192.0.2.10", f"239.1.1.{i + 1}", 8, actor="t")
            want = {k: r.rule.terms for k, r in m.fleet.desired.items()}

            def held(b):
                return {k: r.terms for k, r in b.rules.items()}

            await until(lambda: held(backend) == want)
            await until(lambda: m.routers_view()[0]["state"] == "up")

            # The router restarts and comes back empty: re-installed without any command.
            backend2 = MemoryBackend()
            endpoint.core = ServerCore(backend2, KEYS, epoch=2, state_id=11)
            await until(lambda: held(backend2) == want)
            assert rc.counters["state_losses"] == 1

            # The router goes silent: a command is committed anyway and applied when it returns.
            endpoint.core = None
            await until(lambda: rc.status == "down")
            m.remove_rule("192.0.2.10", "239.1.1.1", actor="t")
            want.pop(RuleKey.make("192.0.2.10", "239.1.1.1"))
            assert m.rules_view()[0]["routers"]["r1"]["state"] == "applied"  # 239.1.1.2, held all along
            asked = endpoint.unanswered
            await until(lambda: endpoint.unanswered > asked, 10, "the fan-out to try the silent router again")
            assert RuleKey.make("192.0.2.10", "239.1.1.1") in backend2.rules  # not removed while silent
            endpoint.core = ServerCore(backend2, KEYS, epoch=3, state_id=11)  # restarted, tables kept
            await until(lambda: held(backend2) == want)
            await until(lambda: m.routers_view()[0]["state"] == "up")
            assert rc.counters["restarts_seen"] >= 1
            kinds = [e.kind for e in bus._history]
            assert "router.changed" in kinds
        applied = store.applied()["r1"]
        assert applied == {k: (*t, UNBOUND) for k, t in want.items()}  # what the reconciler learnt is in the store
        row = store.routers()["r1"]
        assert (row.epoch, row.state_id) == (3, 11)
        store.close()

    asyncio.run(main())
    assert crashed == []


def test_fanout_verifies_a_router_holding_pages_of_ipv4_and_ipv6_rules(tmp_path):
    """mauthserver installs 31 IPv6 and 20 IPv4 rules on a router running musersd's own backend
    (DataPlaneBackend on the unit tier's fake data plane) and verifies them with LIST, page by page."""
    from musersd.dataplane_backend import DataPlaneBackend
    from tests.support.fake_dataplane import FakeDataPlane

    crashed = []

    async def main():
        dp = FakeDataPlane()
        async with fan_out_to(DataPlaneBackend(dp), tmp_path, crashed, verify_interval=0.2) as fan:
            endpoint, store, rc, _, m = fan
            for i in range(31):
                m.add_rule(f"2001:db8::{i + 1:x}", "ff0e::db8:1", 8, actor="t")
            for i in range(20):
                m.add_rule(f"192.0.2.{i + 10}", "239.1.1.1", 8, actor="t")
            m.add_rule("2001:db8:1::/48", "ff0e::db8:1", 8, actor="t")
            await until(lambda: set(dp.rule_keys()) == set(m.fleet.desired))
            await until(lambda: rc.counters["verifications"] >= 2)
            assert m.routers_view()[0]["state"] == "up"
            assert endpoint.core.stats["internal_errors"] == 0
            assert endpoint.core.stats["replies_invalid_argument"] == 0
        store.close()

    asyncio.run(main())
    assert crashed == []
