"""The HTTP API in-process (aiohttp test server on 127.0.0.1), and mauthctl's client against it."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mauthclient.api import ApiClient, ApiError
from mauthserver.api import ROUTES, make_app
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, encode
from tests.support.sessions import ASM

TOKEN = "s3cret-token-for-tests-0123456789"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


SSM = b"""v=0\r
o=- 78 1 IN IP4 192.0.2.56\r
s=Declared\r
c=IN IP4 232.1.1.1/16\r
t=0 0\r
a=source-filter: incl IN IP4 232.1.1.1 192.0.2.10\r
m=video 5004 RTP/AVP 33\r
"""


@pytest.fixture
def mediator(tmp_path):
    store = Store.open(tmp_path / "m.db", now=1.0)
    m = Mediator(store, Directory(allow_missing_ttl=True), EventBus(), [])
    m.on_sap_packet(encode(announcement("198.51.100.2", ASM)), ("198.51.100.2", 9875))
    m.on_sap_packet(encode(announcement("198.51.100.2", SSM)), ("198.51.100.2", 9875))
    yield m
    store.close()


def serve(mediator, test):
    """Run `await test(client, fatal)` against the app on a local test server."""
    fatal = []

    async def main():
        app = make_app(mediator, TOKEN, lambda: fatal.append(True))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await test(client, fatal)

    asyncio.run(main())
    return fatal


def test_every_endpoint_but_health_needs_the_token(mediator):
    async def test(c, fatal):
        assert (await c.get("/api/v1/health")).status == 200
        assert (await c.get("/api/v1/openapi.json")).status == 200
        for method, path, _ in ROUTES:
            if path in ("/health", "/openapi.json"):
                continue
            url = "/api/v1" + path.replace("{source}", "192.0.2.10").replace("{group}", "239.1.1.1")
            url = url.replace("{id}", "x")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = await c.request(method, url, headers=headers)
                assert r.status == 401, (method, url, headers)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["code"] == "unauthorized"
        assert mediator.fleet.desired == {}

    serve(mediator, test)


def test_rules_commands_and_errors(mediator):
    async def test(c, fatal):
        r = await c.post("/api/v1/rules", headers=AUTH, json={"source": "192.0.2.10", "group": "239.1.1.1",
                                                               "max_ttl": 8})
        assert r.status == 201 and (await r.json())["result"] == "added"
        r = await c.post("/api/v1/rules", headers=AUTH, json={"source": "192.0.2.10", "group": "239.1.1.1",
                                                               "max_ttl": 8})
        assert r.status == 200 and (await r.json())["result"] == "unchanged"
        r = await c.post("/api/v1/rules", headers=AUTH, json={"source": "192.0.2.10", "group": "239.1.1.1",
                                                               "max_ttl": 9})
        assert r.status == 409 and (await r.json())["code"] == "exists"
        for body, status in [({"source": "192.0.2.10", "group": "10.0.0.1", "max_ttl": 8}, 400),
                             ({"source": "192.0.2.10", "group": "239.1.1.1"}, 400),
                             ({"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8, "x": 1}, 400),
                             ({"source": 5, "group": "239.1.1.1", "max_ttl": 8}, 400),
                             ({"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": True}, 400)]:
            r = await c.post("/api/v1/rules", headers=AUTH, json=body)
            assert r.status == status, body
            assert "\n" not in (await r.json())["error"]
        r = await c.post("/api/v1/rules", headers=AUTH, data=b"{not json")
        assert r.status == 400
        r = await c.get("/api/v1/rules/192.0.2.10/239.1.1.1", headers=AUTH)
        assert (await r.json())["max_ttl"] == 8
        r = await c.delete("/api/v1/rules/192.0.2.10/239.1.1.1", headers=AUTH)
        assert r.status == 200
        r = await c.delete("/api/v1/rules/192.0.2.10/239.1.1.1", headers=AUTH)
        assert r.status == 404
        r = await c.get("/api/v1/nope", headers=AUTH)
        assert r.status == 404 and (await r.json())["code"] == "http"
        assert fatal == []

    serve(mediator, test)
    actions = [e["action"] for e in mediator.store.audit_log()]
    assert actions[:2] == ["del-sender", "add-sender"]


def test_sessions_authorize_revoke(mediator):
    asm = next(s for s in mediator.directory.sessions() if s.name == "Lobby camera")
    ssm = next(s for s in mediator.directory.sessions() if s.name == "Declared")

    async def test(c, fatal):
        sessions = await (await c.get("/api/v1/sessions", headers=AUTH)).json()
        assert {s["name"] for s in sessions} == {"Lobby camera", "Declared"}
        r = await c.post(f"/api/v1/sessions/{asm.id}/authorize", headers=AUTH, json={})
        body = await r.json()
        assert r.status == 422 and body["suggestions"] == ["192.0.2.55", "198.51.100.2"]
        r = await c.post(f"/api/v1/sessions/{asm.id[:5]}/authorize", headers=AUTH,
                         json={"senders": ["192.0.2.55"], "expire_with_session": True})
        body = await r.json()
        assert r.status == 200, body
        assert [(x["source"], x["group"], x["max_ttl"]) for x in body["rules"]] == [
            ("192.0.2.55", "239.255.12.42", 32)]
        r = await c.post(f"/api/v1/sessions/{ssm.id}/authorize", headers=AUTH, json={"max_ttl": 4})
        assert [(x["source"], x["max_ttl"]) for x in (await r.json())["rules"]] == [("192.0.2.10", 4)]
        s = await (await c.get(f"/api/v1/sessions/{asm.id}", headers=AUTH)).json()
        assert s["rules"] == [{"source": "192.0.2.55", "group": "239.255.12.42", "max_ttl": 32,
                               "expire_with_session": True}]
        r = await c.post(f"/api/v1/sessions/{asm.id}/revoke", headers=AUTH)
        assert r.status == 200 and len((await r.json())["rules"]) == 1
        r = await c.post(f"/api/v1/sessions/{asm.id}/revoke", headers=AUTH)
        assert r.status == 404
        r = await c.post("/api/v1/sessions/0000000000000000/authorize", headers=AUTH, json={})
        assert r.status == 404

    serve(mediator, test)
    assert [(str(r.rule.source), r.session_id) for r in mediator.fleet.desired.values()] == [("192.0.2.10", ssm.id)]


def test_event_stream_and_resume(mediator):
    async def test(c, fatal):
        resp = await c.get("/api/v1/events", headers=AUTH)
        assert resp.headers["Content-Type"].startswith("text/event-stream")

        async def next_event():
            lines = {}
            while True:
                line = (await resp.content.readline()).decode().rstrip("\n")
                if not line:
                    if lines:
                        return lines
                    continue
                if line.startswith(":"):
                    continue
                k, _, v = line.partition(": ")
                lines[k] = v

        hello = await next_event()
        assert hello["event"] == "hello"
        await c.post("/api/v1/rules", headers=AUTH, json={"source": "192.0.2.10", "group": "239.1.1.1",
                                                           "max_ttl": 8})
        ev = await next_event()
        assert ev["event"] == "rule.added"
        data = json.loads(ev["data"])
        assert data["rule"]["source"] == "192.0.2.10" and "api" in data["actor"]
        resp.close()
        await c.delete("/api/v1/rules/192.0.2.10/239.1.1.1", headers=AUTH)
        # Resume after the event we saw: the removal is replayed from the history.
        resp = await c.get("/api/v1/events", headers={**AUTH, "Last-Event-ID": ev["id"]})
        assert (await next_event())["event"] == "hello"
        assert (await next_event())["event"] == "rule.removed"
        resp.close()
        # An id from before a restart (another boot) asks the client to re-read everything.
        resp = await c.get("/api/v1/events", headers={**AUTH, "Last-Event-ID": "deadbeef-3"})
        assert (await next_event())["event"] == "hello"
        assert (await next_event())["event"] == "resync"
        resp.close()

    serve(mediator, test)


def test_unexpected_errors_answer_500_and_stop_the_daemon(mediator, monkeypatch):
    def boom():
        raise RuntimeError("bug")

    monkeypatch.setattr(mediator, "rules_view", boom)

    async def test(c, fatal):
        r = await c.get("/api/v1/rules", headers=AUTH)
        assert r.status == 500 and (await r.json())["code"] == "internal"

    assert serve(mediator, test) == [True]


def test_mauthctl_client_against_the_server(mediator):
    async def test(c, fatal):
        base = str(c.make_url("/"))
        api = ApiClient(base, TOKEN, timeout=5, user="alice")
        loop = asyncio.get_running_loop()

        def calls():
            out = api.add_rule("192.0.2.10", "239.1.1.1", 8)
            assert out["result"] == "added"
            assert [r["source"] for r in api.rules()] == ["192.0.2.10"]
            with pytest.raises(ApiError) as info:
                api.add_rule("192.0.2.10", "239.1.1.1", 9)
            assert info.value.status == 409 and "already exists" in info.value.message
            asm = next(s for s in api.sessions() if s["name"] == "Lobby camera")
            with pytest.raises(ApiError) as info:
                api.authorize(asm["id"])
            assert info.value.status == 422 and info.value.details["suggestions"]
            api.remove_rule("192.0.2.10", "239.1.1.1")
            assert api.stats()["rules"] == 0
            bad = ApiClient(base, "wrong-token-wrong-token", timeout=5)
            with pytest.raises(ApiError) as info:
                bad.rules()
            assert info.value.status == 401
            return api.audit(5)

        audit = await loop.run_in_executor(None, calls)
        assert audit[0]["actor"].startswith("alice (api 127.0.0.1")

    serve(mediator, test)


def test_traffic_reads_every_router_on_the_fan_outs_session(tmp_path):
    """GET /traffic: per-rule counters and denied pairs as each router's own listing says, shared for 1 s,
    read on the one session the fan-out holds with each router; with every rule's view."""
    import time

    from tests.support.loopback_fleet import TOKEN as FLEET_TOKEN
    from tests.support.loopback_fleet import LoopbackFleet

    with LoopbackFleet(tmp_path, routers=("r1", "r2")) as fleet:
        fleet.call(fleet.mediator.add_rule, "192.0.2.10", "239.1.1.1", 8, actor="test")
        deadline = time.monotonic() + 10
        while not (fleet.held("r1") and fleet.held("r2")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fleet.set_traffic("r1", "192.0.2.10", "239.1.1.1", 42, 4200)
        fleet.set_denied("r2", [("192.0.2.66", "239.9.9.9", "unauthorized", 7, 700, 3)])
        api = ApiClient(fleet.url, FLEET_TOKEN, timeout=5)
        out = api.traffic()
        assert set(out["routers"]) == {"r1", "r2"}
        r1, r2 = out["routers"]["r1"], out["routers"]["r2"]
        assert r1["ok"] and r2["ok"] and r1["mode"] == "enforce" and r1["rule_count"] == 1
        assert [(e["source"], e["group"], e["max_ttl"], e["packets"], e["bytes"]) for e in r1["rules"]] == [
            ("192.0.2.10", "239.1.1.1", 8, 42, 4200)]
        assert r1["denied"] == []
        assert [(d["source"], d["group"], d["reason"], d["packets"], d["last_ttl"]) for d in r2["denied"]] == [
            ("192.0.2.66", "239.9.9.9", "unauthorized", 7, 3)]
        assert [(r["source"], r["state"], sorted(r["routers"])) for r in out["rules"]] == [
            ("192.0.2.10", "applied", ["r1", "r2"])]
        # A second client within a second gets the same read; the routers are not asked again.
        # (Only GET /traffic lists denied pairs in this fleet: it has no denied watch.)
        def denied_reads():
            return fleet.call(lambda: sum(op == "denied" for b in fleet.backends.values() for op, _ in b.log))

        before = denied_reads()
        assert before == 2
        assert api.traffic()["at"] == out["at"]
        assert denied_reads() == before
        time.sleep(1.1)
        assert api.traffic()["at"] > out["at"] and denied_reads() == before + 2
        # Every router was talked to on one session: the fan-out's.
        assert fleet.call(lambda: [e.core.session_count for _, e in sorted(fleet.endpoints.items())]) == [1, 1]
        with pytest.raises(ApiError) as info:
            ApiClient(fleet.url, "wrong-token-wrong-token", timeout=5).traffic()
        assert info.value.status == 401


def test_the_denied_watch_and_get_traffic_share_one_listing_on_one_session(tmp_path):
    """A denied listing GET /traffic made is the watch's too, within half its interval; one session each."""
    import time

    from tests.support.loopback_fleet import TOKEN as FLEET_TOKEN
    from tests.support.loopback_fleet import LoopbackFleet

    with LoopbackFleet(tmp_path, routers=("r1",), denied_interval=60.0) as fleet:
        deadline = time.monotonic() + 10
        while fleet.call(lambda: fleet.mediator.fleet.routers["r1"].status) not in ("up", "converging"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fleet.set_denied("r1", [("192.0.2.66", "239.9.9.9", "unauthorized", 7, 700, 3)])
        sub = fleet.call(fleet.mediator.bus.subscribe, None, time.time())
        backend = fleet.backends["r1"]

        def denied_reads():
            return fleet.call(lambda: sum(op == "denied" for op, _ in backend.log))

        api = ApiClient(fleet.url, FLEET_TOKEN, timeout=5)
        out = api.traffic()
        assert [(d["source"], d["reported"]) for d in out["routers"]["r1"]["denied"]] == [("192.0.2.66", None)]
        assert denied_reads() == 1
        assert asyncio.run_coroutine_threadsafe(fleet.denied.poll("r1"), fleet.loop).result(10)
        assert denied_reads() == 1  # the watch took the listing GET /traffic made
        events = fleet.call(lambda: [sub.queue.get_nowait() for _ in range(sub.queue.qsize())])
        (report,) = [e for e in events if e.kind == "denied"]
        assert report.data["source"] == "192.0.2.66"
        # GET /traffic says when the server reported each pair (a dashboard opened later shows it).
        time.sleep(1.05)
        assert [d["reported"] for d in api.traffic()["routers"]["r1"]["denied"]] == [report.at]
        assert fleet.call(lambda: fleet.endpoints["r1"].core.session_count) == 1


def test_a_lost_database_is_a_503_that_stops_only_for_a_command(mediator, monkeypatch):
    """PostgreSQL gone: a read is answered 503 and the daemon carries on; a command, whose transaction may
    or may not have committed, is answered 503 and the daemon stops to restart from what the store holds."""
    from mauthserver.store import StoreError

    def lost(*args, **kwargs):
        raise StoreError("lost the connection to PostgreSQL at db/mauth: server closed the connection")

    monkeypatch.setattr(mediator.store, "audit_log", lost)
    monkeypatch.setattr(mediator.store, "commit", lost)

    async def test(client, fatal):
        r = await client.get("/api/v1/audit", headers=AUTH)
        body = await r.json()
        assert r.status == 503 and body["code"] == "database" and "try again" in body["error"]
        assert not fatal
        r = await client.post("/api/v1/rules", headers=AUTH,
                              json={"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8})
        body = await r.json()
        assert r.status == 503 and "may or may not have been carried out" in body["error"]
        assert fatal == [True]

    serve(mediator, test)


def test_health_names_the_role(mediator):
    async def test(client, fatal):
        r = await client.get("/api/v1/health")
        assert await r.json() == {"ok": True, "role": "leader"}

    serve(mediator, test)
