"""mauthserver's HTTP API (on 127.0.0.1) takes any spelling of an IPv6 address and answers canonical text.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mauthcore.rules import RuleKey
from mauthserver.api import make_app
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, encode
from tests.unit.test_mauthserver_ipv6 import SSM6

TOKEN = "s3cret-token-for-tests-0123456789"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def mediator(tmp_path):
    store = Store.open(tmp_path / "m.db", now=1.0)
    m = Mediator(store, Directory(allow_missing_ttl=True), EventBus(), [])
    m.on_sap_packet(encode(announcement("2001:db8:10::20", SSM6)), ("2001:db8:10::20", 9875, 0, 0))
    yield m
    store.close()


def test_api_takes_any_spelling_and_answers_canonical_text(mediator):
    sid = next(iter(mediator.directory.sessions())).id

    async def test(c):
        r = await c.post("/api/v1/rules", headers=AUTH, json={"source": "2001:DB8:0:1:0::/64",
                                                               "group": "FF0E:0::DB8:1", "max_ttl": 8})
        assert r.status == 201
        rule = (await r.json())["rule"]
        assert (rule["source"], rule["group"], rule["max_ttl"]) == ("2001:db8:0:1::/64", "ff0e::db8:1", 8)
        r = await c.get("/api/v1/rules/2001:db8:0:1::%2F64/ff0e::db8:1", headers=AUTH)
        assert r.status == 200 and (await r.json())["source"] == "2001:db8:0:1::/64"
        for body, needle in [({"source": "fe80::1", "group": "ff0e::1", "max_ttl": 8}, "link-local"),
                             ({"source": "2001:db8::1", "group": "ff02::1", "max_ttl": 8}, "link-scope group"),
                             ({"source": "2001:db8::1", "group": "239.1.1.1", "max_ttl": 8}, "address families")]:
            r = await c.post("/api/v1/rules", headers=AUTH, json=body)
            error = (await r.json())["error"]
            assert r.status == 400 and needle in error and "\n" not in error
        r = await c.post(f"/api/v1/sessions/{sid}/authorize", headers=AUTH, json={})
        out = await r.json()
        assert r.status == 200, out
        assert sorted((x["source"], x["group"], x["max_ttl"]) for x in out["rules"]) == [
            ("2001:db8:10::20", "ff3e::8000:1", 255), ("2001:db8:10::21", "ff3e::8000:2", 255)]
        view = await (await c.get(f"/api/v1/sessions/{sid}", headers=AUTH)).json()
        assert view["origin"] == "2001:db8:10::20" and view["groups"][0] == {"address": "ff3e::8000:1", "ttl": None}
        assert len(view["rules"]) == 2
        r = await c.delete("/api/v1/rules/2001:DB8:0:1::%2F64/FF0E::DB8:1", headers=AUTH)
        assert r.status == 200

    async def main():
        app = make_app(mediator, TOKEN, lambda: None)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await test(client)

    asyncio.run(main())
    assert set(mediator.fleet.desired) == {RuleKey.make("2001:db8:10::20", "ff3e::8000:1"),
                                           RuleKey.make("2001:db8:10::21", "ff3e::8000:2")}
    audit = mediator.store.audit_log()
    assert audit[0]["action"] == "del-sender" and audit[0]["detail"] == {"source": "2001:db8:0:1::/64",
                                                                         "group": "ff0e::db8:1"}
