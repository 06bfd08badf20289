"""A standby forwarding (mauthserver/standby.py) to a leader's API on 127.0.0.1: what goes, what comes back."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request

from mauthserver.standby import Forwarder


async def _leader() -> tuple[TestServer, list[dict]]:
    seen: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path_qs, "body": await request.text(),
                     "auth": request.headers.get("Authorization"), "user": request.headers.get("X-Mauth-User"),
                     "mark": request.headers.get("X-Mauth-Forwarded")})
        return web.json_response({"result": "added"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, seen


@pytest.mark.asyncio
async def test_a_command_is_forwarded_as_it_came_and_the_answer_names_the_leader():
    server, seen = await _leader()
    url = f"http://127.0.0.1:{server.port}"
    f = Forwarder("/api/v1", lambda: url, lambda: url)
    try:
        body = json.dumps({"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8}).encode()
        req = make_mocked_request("POST", "/api/v1/rules?x=1", headers={
            "Authorization": "Bearer tok", "X-Mauth-User": "alice", "Content-Type": "application/json",
            "Cookie": "not-forwarded"})
        req._read_bytes = body  # the body as aiohttp would have read it
        resp = await f.forward(req)
        assert resp.status == 201 and json.loads(resp.body) == {"result": "added"}
        assert resp.headers["X-Mauth-Leader"] == url
        assert seen == [{"method": "POST", "path": "/api/v1/rules?x=1", "body": body.decode(), "auth": "Bearer tok",
                         "user": "alice", "mark": "1"}]
        assert f.counters == {"forwarded": 1, "no_leader": 0}
    finally:
        await f.close()
        await server.close()


@pytest.mark.asyncio
async def test_an_unreachable_leader_is_a_503_that_says_so():
    server, _seen = await _leader()
    url = f"http://127.0.0.1:{server.port}"
    await server.close()  # nothing listens there any more
    f = Forwarder("/api/v1", lambda: url, lambda: url)
    try:
        resp = await f.forward(make_mocked_request("DELETE", "/api/v1/rules/192.0.2.10/239.1.1.1"))
        body = json.loads(resp.body)
        assert resp.status == 503 and body["code"] == "no-leader" and body["leader"] == url
        assert f"cannot reach the leader at {url}" in body["error"]
    finally:
        await f.close()
