"""The mediator's session handling with a fake clock: timeouts, deletions, rules expiring, restarts."""

from __future__ import annotations

import pytest

from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, deletion, encode, make_msg_id_hash
from sap.sdp import deletion_payload, parse_sdp, unix_to_ntp

T0 = 1_700_000_000.0
HOUR = 3600.0


def sdp(sess_id: int, name: str, *, stop: float | None = None, group: str = "232.1.1.1/16") -> bytes:
    stop_ntp = 0 if stop is None else unix_to_ntp(stop)
    return (f"v=0\r\no=- {sess_id} 1 IN IP4 192.0.2.{sess_id}\r\ns={name}\r\nc=IN IP4 {group}\r\n"
            f"t=0 {stop_ntp}\r\na=source-filter: incl IN IP4 * 192.0.2.10\r\nm=video 5004 RTP/AVP 33\r\n").encode()


def ann(payload: bytes) -> bytes:
    return encode(announcement("198.51.100.2", payload))


def dele(payload: bytes) -> bytes:
    return encode(deletion("198.51.100.2", deletion_payload(parse_sdp(payload).origin),
                           msg_id_hash=make_msg_id_hash(payload)))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path):
    clock = Clock(T0)
    stores = []

    def mediator(**directory) -> Mediator:
        store = Store.open(tmp_path / "m.db", now=clock())
        stores.append(store)
        return Mediator(store, Directory(**directory), EventBus(), [], clock=clock)

    yield clock, mediator, stores
    for s in stores:
        try:
            s.close()
        except Exception:
            pass


def test_timeout_removes_the_session_and_its_expiring_rules(env):
    clock, make, stores = env
    m = make()
    a, b = sdp(1, "A"), sdp(2, "B", group="232.2.2.2/16")
    m.on_sap_packet(ann(a), ("198.51.100.2", 9875))
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))
    sa = next(s for s in m.directory.sessions() if s.name == "A")
    sb = next(s for s in m.directory.sessions() if s.name == "B")
    m.authorize(sa.id, expire_with_session=True, actor="t")
    m.authorize(sb.id, expire_with_session=False, actor="t")
    assert len(m.fleet.desired) == 2

    # B keeps being announced every 20 minutes; A falls silent.
    for k in range(1, 9):
        clock.t = T0 + k * 1200
        m.on_sap_packet(ann(b), ("198.51.100.2", 9875))
        m.expire(clock.t)
    names = [s.name for s in m.directory.sessions()]
    assert names == ["B"]  # A timed out after the RFC 2974 implicit timeout (>= 1 hour)
    assert [str(r.rule.group) for r in m.fleet.desired.values()] == ["232.2.2.2"]
    ended = [e for e in m.store.audit_log() if e["action"] == "session-ended"]
    assert ended[0]["detail"]["session"] == sa.id and ended[0]["detail"]["reason"] == "timeout"
    assert [r.id for r in m.store.sessions()] == [sb.id]


def test_deletion_and_stop_time(env):
    clock, make, stores = env
    m = make()
    a = sdp(1, "A")
    b = sdp(2, "B", stop=T0 + 600)
    m.on_sap_packet(ann(a), ("198.51.100.2", 9875))
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))
    assert m.directory.next_expiry() == T0 + 600
    m.on_sap_packet(dele(a), ("198.51.100.2", 9875))
    assert [s.name for s in m.directory.sessions()] == ["B"]
    clock.t = T0 + 600
    m.expire(clock.t)
    assert m.directory.sessions() == [] and m.store.sessions() == []
    assert m.directory.counters["removed_deleted"] == 1 and m.directory.counters["removed_stopped"] == 1


def test_eviction_does_not_end_the_rules(env):
    clock, make, stores = env
    m = make(max_sessions=1)
    a, b = sdp(1, "A"), sdp(2, "B", group="232.2.2.2/16")
    m.on_sap_packet(ann(a), ("198.51.100.2", 9875))
    m.authorize(m.directory.sessions()[0].id, expire_with_session=True, actor="t")
    clock.t += 5
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))  # evicts A: a memory bound, not the end of A
    assert [s.name for s in m.directory.sessions()] == ["B"]
    assert len(m.fleet.desired) == 1


def test_restart_restores_sessions_and_expires_what_timed_out_meanwhile(env):
    clock, make, stores = env
    m = make()
    a, b = sdp(1, "A"), sdp(2, "B", group="232.2.2.2/16")
    m.on_sap_packet(ann(a), ("198.51.100.2", 9875))
    clock.t += 1800
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))
    sa = next(s for s in m.directory.sessions() if s.name == "A")
    sb = next(s for s in m.directory.sessions() if s.name == "B")
    m.authorize(sa.id, expire_with_session=True, actor="t")
    clock.t += 600
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))  # a refresh: no event, flushed periodically
    assert m.flush_heard() == 1
    stores.pop().close()  # the mediator "crashes"

    # Back 10 minutes later: both sessions are still within their timeout.
    clock.t += 600
    m2 = make()
    m2.restore_sessions()
    got = {s.name: s for s in m2.directory.sessions()}
    assert set(got) == {"A", "B"}
    assert got["A"].id == sa.id and got["B"].last_heard == clock.t - 600
    assert m2.session_view(got["B"])["first_heard"] == sb.first_heard
    assert len(m2.fleet.desired) == 1
    stores.pop().close()

    # Back much later: A (and its expiring rule) timed out while we were down.
    clock.t += 10 * HOUR
    m3 = make()
    m3.restore_sessions()
    assert m3.directory.sessions() == []
    assert m3.fleet.desired == {}
    assert m3.store.sessions() == []


def test_garbage_is_counted_not_fatal(env):
    clock, make, stores = env
    m = make()
    m.on_sap_packet(b"\x20\x00", ("198.51.100.2", 9875))
    m.on_sap_packet(encode(announcement("198.51.100.2", b"v=0\r\nnot sdp\r\n")), ("198.51.100.2", 9875))
    assert m.counters["sap_rejected"] == 2 and m.directory.sessions() == []
