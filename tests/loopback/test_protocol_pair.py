"""The router protocol's client over real UDP on 127.0.0.1: a reply, an unreachable router, a wrong key.

The client and server cores over a hostile in-memory link are tests/unit/test_protocol_pair.py.
"""

from __future__ import annotations

import socket
import threading

import pytest

from mauthcore.protocol import v2
from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.errors import (
    LocalProtocolError,
    RouterExists,
    RouterNotFound,
    RouterRejected,
    RouterUnreachable,
)
from mauthcore.protocol.keys import Key, KeyRing
from mauthcore.protocol.model import DeniedEntry, Mode, Reason
from mauthcore.protocol.server import ServerCore
from mauthcore.protocol.udp import RouterClient, serve
from mauthcore.rules import Rule
from tests.unit.test_protocol_pair import EPOCH, KEYS


@pytest.fixture
def router():
    backend = MemoryBackend()
    core = ServerCore(backend, KEYS, EPOCH, 0xABC, legacy_allowed=lambda host: host == "127.0.0.1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(sock, core, stop), kwargs={"poll": 0.02}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], core, backend
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_router_client_over_udp(router):
    port, core, backend = router
    r1, r2 = Rule.make("10.0.0.1", "239.1.1.1", 8), Rule.make("10.0.0.2", "239.1.1.1", 8)
    backend.denied_entries = [DeniedEntry(r1.source, r1.group, Reason.TTL, 3, 300, 99, 1)]
    with RouterClient("127.0.0.1", port, KEYS, timeout=0.2, tries=5) as client:
        info = client.hello()
        assert info.epoch == EPOCH and info.state_id == 0xABC and info.rule_count == 0 and info.backend == "memory"
        client.add(r1)
        with pytest.raises(RouterExists, match="EXISTS"):
            client.add(r1)
        assert client.replace(r2) is True
        for i in range(40):
            client.add(Rule.make(f"10.0.1.{i}", "239.2.2.2", 4))
        assert len(client.list_all()) == 42  # three pages
        client.remove(r2.key)
        with pytest.raises(RouterNotFound):
            client.remove(r2.key)
        with pytest.raises(RouterRejected, match="INVALID_ARGUMENT"):
            client._v2_call(v2.ListRules(0, b"\x09bad"))
        assert client.denied_all() == backend.denied_entries
        assert client.mode() == Mode.ENFORCE and client.mode("monitor") == Mode.MONITOR
        assert client.counters().rule_count == 41
        assert client.flush() == 41
    with RouterClient("127.0.0.1", port, v1=True, timeout=0.2, tries=5) as legacy:
        legacy.add(r1)
        legacy.remove(r1.key)
        with pytest.raises(Exception, match="answered ERROR"):
            legacy.remove(r1.key)
        with pytest.raises(LocalProtocolError):
            legacy.flush()
    assert core.stats["v1_requests"] == 3 and backend.rules == {}


def test_router_client_reports_an_unreachable_router():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    with RouterClient("127.0.0.1", port, KEYS, timeout=0.05, tries=3) as client:
        with pytest.raises(RouterUnreachable) as info:
            client.hello()
    assert str(info.value).startswith(f"router 127.0.0.1:{port} did not answer after 3 tries")


def test_router_client_with_the_wrong_key_says_so(router):
    port, core, _ = router
    with RouterClient("127.0.0.1", port, KeyRing([Key(1, b"\x02" * 32)]), timeout=0.05, tries=2) as client:
        with pytest.raises(RouterUnreachable, match="BAD_AUTH.*key"):
            client.hello()
    for _ in range(200):  # the server thread may still be reading the last try
        if core.stats["bad_auth"] == 2:
            break
        threading.Event().wait(0.01)
    assert core.stats["bad_auth"] == 2 and core.stats["executed"] == 0
