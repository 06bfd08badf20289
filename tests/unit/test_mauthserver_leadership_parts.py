"""The pure parts of running several mauthservers: relay payloads, what a standby answers itself, options.

The election itself needs a real PostgreSQL server: tests/loopback/test_leadership.py.
"""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import make_mocked_request

from mauthcore.events import EventKind
from mauthserver.config import ConfigError, parse_advertise
from mauthserver.leader import Leadership, holder_id
from mauthserver.relay import MAX_PAYLOAD, notify_payload, parse_payload
from mauthserver.standby import Forwarder


def test_payload_round_trip():
    text = notify_payload("a/1/x", 3, EventKind.RULE_ADDED, 12.5, {"source": "192.0.2.1", "group": "239.1.1.1"})
    assert parse_payload(text) == ("a/1/x", 3, EventKind.RULE_ADDED, 12.5,
                                   {"source": "192.0.2.1", "group": "239.1.1.1"})


def test_an_event_too_large_to_notify_becomes_a_resync_notice():
    text = notify_payload("a", 1, EventKind.SESSION_ADDED, 1.0, {"description": "x" * 10000})
    assert len(text.encode()) <= MAX_PAYLOAD
    holder, term, kind, _at, data = parse_payload(text)
    assert (holder, term, kind) == ("a", 1, EventKind.RESYNC)
    assert "too large" in data["message"]


@pytest.mark.parametrize("text", ["", "not json", "[]", json.dumps({"h": "a", "t": 1, "k": "no.such", "a": 1,
                                                                    "d": {}}),
                                  json.dumps({"h": "a", "t": 1, "k": "rule.added", "a": 1, "d": [1]})])
def test_payloads_that_are_not_events_are_ignored(text):
    assert parse_payload(text) is None


@pytest.mark.parametrize(("method", "path", "local"), [
    ("GET", "/api/v1/rules", True),
    ("GET", "/api/v1/rules/192.0.2.1/239.1.1.1", True),
    ("GET", "/api/v1/sessions/abcd", True),
    ("GET", "/api/v1/events", True),
    ("GET", "/api/v1/audit", True),
    ("GET", "/api/v1/health", True),
    ("GET", "/api/v1/traffic", False),
    ("GET", "/api/v1/routers", False),
    ("GET", "/api/v1/stats", False),
    ("POST", "/api/v1/rules", False),
    ("DELETE", "/api/v1/rules/192.0.2.1/239.1.1.1", False),
    ("PUT", "/api/v1/mode", False),
    ("POST", "/api/v1/sessions/abcd/authorize", False),
])
def test_what_a_standby_answers_itself(method, path, local):
    f = Forwarder("/api/v1", lambda: "http://127.0.0.1:7580", lambda: None)
    assert f.serves(make_mocked_request(method, path)) is local


@pytest.mark.asyncio
async def test_no_leader_is_a_503_naming_the_last_one():
    f = Forwarder("/api/v1", lambda: None, lambda: "http://192.0.2.1:7580")
    resp = await f.forward(make_mocked_request("POST", "/api/v1/rules"))
    assert resp.status == 503
    body = json.loads(resp.text)
    assert body["code"] == "no-leader" and body["leader"] == "http://192.0.2.1:7580"
    assert "not carried out" in body["error"]


@pytest.mark.asyncio
async def test_a_forwarded_request_is_never_forwarded_again():
    f = Forwarder("/api/v1", lambda: "http://127.0.0.1:7580", lambda: None)
    resp = await f.forward(make_mocked_request("POST", "/api/v1/rules", headers={"X-Mauth-Forwarded": "1"}))
    assert resp.status == 503 and f.counters["forwarded"] == 0


def test_advertise():
    assert parse_advertise(None, ("127.0.0.1", 7580)) == "http://127.0.0.1:7580"
    assert parse_advertise(None, ("::1", 7580)) == "http://[::1]:7580"
    assert parse_advertise(None, ("0.0.0.0", 7580)) is None
    assert parse_advertise("http://ctl-a.example:7580/", ("0.0.0.0", 7580)) == "http://ctl-a.example:7580"
    with pytest.raises(ConfigError, match="--advertise"):
        parse_advertise("ctl-a:7580", ("0.0.0.0", 7580))


def test_lease_bounds_and_margins():
    with pytest.raises(ValueError, match="between"):
        Leadership("", "h", None, lease=0.5)
    lead = Leadership("", "h", None, lease=3.0)
    assert lead.interval == 1.0 and 0 < lead.margin < lead.lease
    assert not lead.may_write()  # not elected


def test_may_write_ends_at_the_local_deadline():
    now = [100.0]
    lead = Leadership("", "h", "http://x", lease=3.0, clock=lambda: now[0])
    lead.leading, lead.deadline, lead.term = True, 102.5, 4
    assert lead.may_write() and lead.leader_api() == "http://x"
    now[0] = 102.5
    assert not lead.may_write()
    with pytest.raises(Exception, match="term 4"):
        lead.check()


def test_holder_ids_differ_per_process_life():
    assert holder_id("ctl-a") != holder_id("ctl-a")
    assert holder_id("ctl-a").startswith("ctl-a/")
