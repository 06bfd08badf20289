"""Two mauthserver daemons in this process on one real PostgreSQL database (tests/support/postgres.py).

The roles as an operator sees them through the API and the metrics: one
leads (term 1), the other is a standby that answers reads, forwards a
command to the leader and shows the leader's rule; when the leader stops
cleanly it releases its lease and the standby leads at once with term 2.
The routers, the kill -9 and the cut from the database are the lab's
(tests/integration/test_mauthserver_pair.py).
"""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mauthserver.config import Options
from mauthserver.daemon import Daemon
from tests.support.waiting import until

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _daemon(url: str, name: str) -> Daemon:
    opts = Options(db=url, api=("127.0.0.1", 0), sap=False, listen=None, metrics=("127.0.0.1", 0), instance=name,
                   lease=1.0)
    return Daemon(opts, TOKEN, None)


def _url(daemon: Daemon, what: str = "api") -> str:
    runner = daemon._runner if what == "api" else daemon._metrics_runner
    assert runner is not None
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _metrics(http: aiohttp.ClientSession, daemon: Daemon) -> dict[str, float]:
    async with http.get(_url(daemon, "metrics") + "/metrics") as resp:
        text = await resp.text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_leader_and_standby_through_the_api_and_the_metrics(postgres, pg_db):
    url = postgres.url(pg_db)

    async def main():
        a, b = _daemon(url, "a"), _daemon(url, "b")
        run_a = asyncio.create_task(a.run())
        await until(lambda: a.leading, 15, "a leads")
        run_b = asyncio.create_task(b.run())
        await until(lambda: b.leadership is not None and b.leadership.current is not None and b._runner, 15,
                    "b stands by")
        try:
            async with aiohttp.ClientSession() as http:
                ma, mb = await _metrics(http, a), await _metrics(http, b)
                assert (ma["mauthserver_leader"], ma["mauthserver_leader_term"]) == (1, 1)
                assert (mb["mauthserver_leader"], mb["mauthserver_leader_term"]) == (0, 1)
                assert ma["mauthserver_last_failover_timestamp_seconds"] > 0
                assert mb["mauthserver_last_failover_timestamp_seconds"] == 0
                async with http.get(_url(b) + "/api/v1/health") as resp:
                    assert await resp.json() == {"ok": True, "role": "standby"}

                # A command through the standby is carried out by the leader, and the standby shows it.
                rule = {"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8}
                async with http.post(_url(b) + "/api/v1/rules", json=rule, headers=AUTH) as resp:
                    assert resp.status in (200, 201), await resp.text()
                    assert resp.headers["X-Mauth-Leader"] == _url(a)
                assert len(a.mediator.fleet.desired) == 1

                async def standby_rules():
                    async with http.get(_url(b) + "/api/v1/rules", headers=AUTH) as resp:
                        return [r["group"] for r in await resp.json()] == ["239.1.1.1"]

                await until(standby_rules, 10, "the rule in the standby's GET /rules")
                assert (await _metrics(http, b))["mauthserver_forwarded_requests_total"] == 1

                # A clean stop releases the lease: the standby leads with the next term, at once.
                a._stop.set()
                assert await run_a == 0
                await until(lambda: b.leading, 5, "b leads")
                mb = await _metrics(http, b)
                assert (mb["mauthserver_leader"], mb["mauthserver_leader_term"]) == (1, 2)
                assert mb["mauthserver_last_failover_timestamp_seconds"] > 0
                async with http.get(_url(b) + "/api/v1/health") as resp:
                    assert await resp.json() == {"ok": True, "role": "leader"}
                async with http.get(_url(b) + "/api/v1/rules", headers=AUTH) as resp:
                    assert [r["group"] for r in await resp.json()] == ["239.1.1.1"]
        finally:
            for d, run in ((a, run_a), (b, run_b)):
                if not run.done():
                    d._stop.set()
                    await run

    asyncio.run(main())
