"""mauthserver's HTTP API (on 127.0.0.1) takes prefix rules and rate limits and shows them.
"""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from mauthcore.rules import RuleKey
from mauthserver.api import make_app
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory

TOKEN = "s3cret-token-for-tests-0123456789"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_api_takes_prefixes_and_limits_and_shows_them(tmp_path):
    store = Store.open(tmp_path / "m.db", now=1.0)
    m = Mediator(store, Directory(allow_missing_ttl=True), EventBus(), [])

    async def main():
        app = make_app(m, TOKEN, lambda: None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as c:
            r = await c.post("/api/v1/rules", headers=AUTH,
                             json={"source": "192.0.2.0/24", "group": "239.1.1.1", "max_ttl": 8, "pps": "500"})
            assert r.status == 201, await r.text()
            body = await r.json()
            assert (body["rule"]["source"], body["rule"]["pps"], body["rule"]["bps"]) == ("192.0.2.0/24", 500, 0)
            r = await c.post("/api/v1/rules", headers=AUTH,
                             json={"source": "192.0.2.10", "group": "239.192.0.0/14", "max_ttl": 16, "bps": "2M"})
            assert r.status == 201
            r = await c.post("/api/v1/rules", headers=AUTH,
                             json={"source": "192.0.2.0/24", "group": "239.0.0.0/8", "max_ttl": 8})
            assert r.status == 400 and "a source prefix and a group prefix" in (await r.json())["error"]
            r = await c.post("/api/v1/rules", headers=AUTH,
                             json={"source": "192.0.2.10", "group": "239.1.1.2", "max_ttl": 8, "pps": -5})
            assert r.status == 400 and "negative" in (await r.json())["error"]
            rules = await (await c.get("/api/v1/rules", headers=AUTH)).json()
            assert {(x["source"], x["group"], x["pps"], x["bps"]) for x in rules} == {
                ("192.0.2.0/24", "239.1.1.1", 500, 0), ("192.0.2.10", "239.192.0.0/14", 0, 2_000_000)}
            one = await c.get("/api/v1/rules/192.0.2.10/239.192.0.0%2F14", headers=AUTH)
            assert one.status == 200 and (await one.json())["bps"] == 2_000_000
            r = await c.delete("/api/v1/rules/192.0.2.0%2F24/239.1.1.1", headers=AUTH)
            assert r.status == 200, await r.text()
            assert set(m.fleet.desired) == {RuleKey.make("192.0.2.10", "239.192.0.0/14")}

    try:
        asyncio.run(main())
    finally:
        store.close()
