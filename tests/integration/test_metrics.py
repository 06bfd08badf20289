"""Prometheus metrics and denied-sender events, from real traffic through the lab.

musersd and mauthserver are the real daemons with `--metrics`, in the lab's
router namespace; the endpoints are scraped from inside that namespace with
urllib, before and after real multicast is sent through the router, and
every assertion is about how far a counter moved: exactly the number of
packets sent. The denied event is read from mauthserver's real SSE stream.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.daemons import Musersd, mauthctl, write_key_file
from lab.netns import inside, patience
from lab.topology import Lab, Route
from tests.integration.conftest import AUTH, GROUP, ROGUE
from tests.integration.mauthserver_lab import MauthserverProc, MusersdProc, make_secrets
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

N = 40
PAYLOAD = 64
FRAME = 14 + 20 + 8 + PAYLOAD  # what XDP counts: Ethernet + IPv4 + UDP + payload
MUSERSD_METRICS = "127.0.0.1:9575"
MAUTHSERVER_METRICS = "127.0.0.1:9576"


def scrape(lab, address: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics from inside the router namespace; every sample, keyed by (name, sorted labels)."""
    with inside(lab.router.ns):
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def get(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before, after, name: str, **labels) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def v1_exchanges(lab, datagrams: list[bytes]) -> list[bytes]:
    """v1 requests from one client socket to musersd on the router's loopback (v1's default allow-list)."""
    with inside(lab.router.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(5)
        s.connect(("127.0.0.1", 7575))
        replies = []
        for datagram in datagrams:
            s.send(datagram)
            replies.append(s.recv(16))
        return replies
    finally:
        s.close()


def test_musersd_counters_move_by_exactly_the_packets_sent(lab, pin_dir):
    key = write_key_file(lab.workdir / "router.key")
    d = Musersd(lab, pin_dir, key_file=key, extra=["--metrics", MUSERSD_METRICS, "--metrics-denied", "5"]).start()
    try:
        assert "metrics on http://127.0.0.1:9575/metrics" in d.log()
        r = mauthctl(lab, lab.router.ns, "--router", "127.0.0.1:7575", "--key-file", str(key),
                     "add-sender", AUTH, GROUP, "--max-ttl", "8")
        assert r.returncode == 0, r.stderr
        rx = lab.receiver([GROUP])
        auth, rogue = lab.sender(AUTH), lab.sender(ROGUE)

        before = scrape(lab, MUSERSD_METRICS)
        assert get(before, "musersd_rules") == 1
        assert get(before, "musersd_mode", mode="enforce") == 1
        assert get(before, "musersd_xdp_attached", iface="in0", mode=d_mode(before)) == 1
        auth.send(GROUP, N, ttl=4, size=PAYLOAD)  # passes
        auth.send(GROUP, N, ttl=9, size=PAYLOAD)  # above the rule's max TTL
        rogue.send(GROUP, N, ttl=4, size=PAYLOAD)  # no rule
        assert rx.drain()[(AUTH, GROUP)] == N and rx.got(ROGUE, GROUP) == 0
        after = scrape(lab, MUSERSD_METRICS)

        assert moved(before, after, "musersd_filter_packets_total", reason="passed") == N
        assert moved(before, after, "musersd_filter_packets_total", reason="ttl") == N
        assert moved(before, after, "musersd_filter_packets_total", reason="unauthorized") == N
        assert moved(before, after, "musersd_filter_bytes_total", reason="passed") == N * FRAME
        rule = {"source": AUTH, "group": GROUP}
        assert moved(before, after, "musersd_rule_packets_total", **rule) == N
        assert moved(before, after, "musersd_rule_bytes_total", **rule) == N * FRAME
        assert get(after, "musersd_rule_max_ttl", **rule) == 8
        assert abs(get(after, "musersd_rule_last_seen_timestamp_seconds", **rule) - time.time()) < 60
        assert get(after, "musersd_denied_pair_packets_total", source=ROGUE, group=GROUP, reason="unauthorized") == N
        assert get(after, "musersd_denied_pair_packets_total", source=AUTH, group=GROUP, reason="ttl") == N
        assert get(after, "musersd_denied_pairs", reason="unauthorized") == 1
        assert get(after, "musersd_denied_pairs", reason="ttl") == 1

        # Protocol: a v1 request and its retransmission; the copy is answered from memory, not executed.
        request = struct.pack("!BB4s4sB", 7, 0, socket.inet_aton(ROGUE), socket.inet_aton(GROUP), 8)
        assert v1_exchanges(lab, [request, request]) == [bytes([0, 7])] * 2
        proto = scrape(lab, MUSERSD_METRICS)
        assert moved(after, proto, "musersd_protocol_executed_total") == 1
        assert moved(after, proto, "musersd_protocol_answered_from_memory_total", version="v1") == 1
        assert moved(after, proto, "musersd_protocol_requests_total", command="add") == 2
        assert moved(after, proto, "musersd_protocol_replies_total", version="v1", status="ack") == 2
        assert get(proto, "musersd_rules") == 2
        rogue.send(GROUP, N, ttl=4, size=PAYLOAD)  # now authorized by the v1 request
        assert rx.drain()[(ROGUE, GROUP)] == N
        last = scrape(lab, MUSERSD_METRICS)
        assert moved(proto, last, "musersd_rule_packets_total", source=ROGUE, group=GROUP) == N
        assert moved(proto, last, "musersd_filter_packets_total", reason="unauthorized") == 0
        assert d.stop() == 0  # the metrics thread does not hold up a clean stop
    finally:
        if d.proc.poll() is None:
            d.stop()


def d_mode(samples) -> str:
    """The XDP mode musersd reports for in0 (native or generic, whichever veth accepted)."""
    modes = [dict(lv)["mode"] for (n, lv), _ in samples.items() if n == "musersd_xdp_attached"]
    assert modes, "musersd_xdp_attached missing"
    return modes[0]


AUTH2 = "192.0.2.11"


@pytest.fixture
def fleet(pin_dir):
    sources = [AUTH, AUTH2, ROGUE]
    with Lab(senders={"s1": sources}, routes=[Route(GROUP, s) for s in sources]) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"},
                                 extra=["--no-sap", "--metrics", MAUTHSERVER_METRICS, "--denied-interval", "0.5"])
        server.start()
        yield lab, musersd, server


class EventFollower:
    """Follows mauthserver's SSE stream from inside the router namespace, in a thread."""

    def __init__(self, server: MauthserverProc) -> None:
        self.events: queue.Queue = queue.Queue()
        self.server = server
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with inside(self.server.lab.router.ns):
            try:
                for _, kind, data in self.server.api().events(timeout=60):
                    self.events.put((kind, data))
            except Exception as exc:  # the test reads this as a failure
                self.events.put(("error", {"error": repr(exc)}))

    def wait(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                kind, data = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append((kind, data))
            assert kind != "error", data
            if predicate(kind, data):
                return data
        raise AssertionError(f"no such event within {timeout} s; saw {seen[-20:]}")


def test_mauthserver_metrics_and_denied_events_from_real_traffic(fleet):
    lab, musersd, server = fleet
    server.call("add_rule", AUTH, GROUP, 8)
    server.converged()
    rx = lab.receiver([GROUP])
    auth, rogue = lab.sender(AUTH), lab.sender(ROGUE)

    before = scrape(lab, MAUTHSERVER_METRICS)
    assert get(before, "mauthserver_rules") == 1
    assert get(before, "mauthserver_router_up", router="r1") == 1
    assert get(before, "mauthserver_router_rules_applied", router="r1") == 1
    assert get(before, "mauthserver_router_rules_pending", router="r1") == 0
    assert get(before, "mauthserver_router_calls_total", router="r1", call="install") == 1
    assert get(before, "mauthserver_api_requests_total") >= 1

    follower = EventFollower(server)
    follower.wait(lambda kind, data: kind == "hello")
    auth.send(GROUP, N, ttl=4, size=PAYLOAD)
    rogue.send(GROUP, N, ttl=4, size=PAYLOAD)
    assert rx.drain()[(AUTH, GROUP)] == N and rx.got(ROGUE, GROUP) == 0

    event = follower.wait(lambda kind, data: kind == "denied" and data["source"] == ROGUE)
    assert (event["router"], event["group"], event["reason"]) == ("r1", GROUP, "unauthorized")
    assert (event["packets"], event["new_packets"], event["first"]) == (N, N, True)
    assert event["bytes"] == N * FRAME and event["last_ttl"] == 4 and event["last_seen"] > 0

    rogue.send(GROUP, N, ttl=4, size=PAYLOAD)  # the same sender keeps trying
    event = follower.wait(lambda kind, data: kind == "denied" and data["source"] == ROGUE)
    assert (event["packets"], event["new_packets"], event["first"]) == (2 * N, N, False)
    assert f"router=r1 denied sender {ROGUE} -> {GROUP} (unauthorized): {N} packets" in server.log()

    # The router's filter counters reach mauthserver with the next probe.
    def probed():
        after = scrape(lab, MAUTHSERVER_METRICS)
        counted = moved(before, after, "mauthserver_router_filter_packets_total", router="r1", reason="unauthorized")
        return after if counted == 2 * N else None

    after = wait_until(probed, patience(30), "the router's unauthorized count to reach mauthserver", interval=0.2)
    assert moved(before, after, "mauthserver_router_filter_packets_total", router="r1", reason="passed") == N
    assert moved(before, after, "mauthserver_router_filter_packets_total", router="r1",
                 reason="unauthorized") == 2 * N
    assert moved(before, after, "mauthserver_denied_reports_total", kind="new") == 1
    assert moved(before, after, "mauthserver_denied_reports_total", kind="growing") == 1
    assert get(after, "mauthserver_denied_pairs", router="r1") == 1
    assert get(after, "mauthserver_denied_packets", router="r1", reason="unauthorized") == 2 * N
    assert get(after, "mauthserver_denied_reports_suppressed_total") == 0
    assert get(after, "mauthserver_event_subscribers") == 1
    assert moved(before, after, "mauthserver_router_calls_total", router="r1", call="probe") > 0
