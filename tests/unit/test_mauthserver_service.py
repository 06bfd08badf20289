"""The mediator's session handling with a fake clock: timeouts, deletions, rules expiring, restarts."""

from __future__ import annotations

import pytest

from mauthcore.events import EventKind
from mauthcore.protocol.model import RuleEntry
from mauthserver.core import Install, RouterCore, held
from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory
from sap.sap import announcement, deletion, encode, make_msg_id_hash
from sap.sdp import deletion_payload, parse_sdp, unix_to_ntp
from tests.support.mediators import T0, Clock, mediator_env

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


@pytest.fixture
def env(tmp_path):
    with mediator_env(tmp_path) as e:
        yield e


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


def test_session_view_lists_the_sessions_own_rules_through_adds_replaces_and_removals(env):
    clock, make, stores = env
    m = make()
    a, b = sdp(1, "A"), sdp(2, "B", group="232.2.2.2/16")
    m.on_sap_packet(ann(a), ("198.51.100.2", 9875))
    m.on_sap_packet(ann(b), ("198.51.100.2", 9875))
    sa = next(s for s in m.directory.sessions() if s.name == "A")
    sb = next(s for s in m.directory.sessions() if s.name == "B")
    for i in range(50):  # rules of no session around them
        m.add_rule(f"192.0.2.{100 + i}", "232.9.9.9", 4, actor="t")

    def view(s) -> list[tuple]:
        return [(r["source"], r["group"], r["max_ttl"], r["expire_with_session"])
                for r in m.session_view(s)["rules"]]

    assert view(sa) == [] and view(sb) == []
    m.authorize(sa.id, senders=["192.0.2.30", "192.0.2.20"], expire_with_session=True, actor="t")
    m.authorize(sb.id, actor="t")
    assert view(sa) == [("192.0.2.20", "232.1.1.1", 16, True), ("192.0.2.30", "232.1.1.1", 16, True)]
    assert view(sb) == [("192.0.2.10", "232.2.2.2", 16, False)]
    # A plain add-sender replacing one of A's rules takes it out of A's view.
    m.add_rule("192.0.2.20", "232.1.1.1", 3, replace=True, actor="t")
    assert view(sa) == [("192.0.2.30", "232.1.1.1", 16, True)]
    # The view published with a session event is the same view.
    seen = []
    m.bus.publish = lambda kind, data, now: seen.append((kind, data))
    m.on_sap_packet(dele(a), ("198.51.100.2", 9875))  # A ends: its expiring rule goes with it
    assert [k for k, _ in seen][:1] == ["session.removed"]
    assert [r["source"] for r in seen[0][1]["session"]["rules"]] == ["192.0.2.30"]
    assert ("192.0.2.20", "232.1.1.1") in {(str(r.rule.source), str(r.rule.group)) for r in m.fleet.desired.values()}
    assert m.fleet.session_rules(sa.id) == {}
    m.revoke(sb.id[:6], actor="t")  # by id prefix
    assert view(sb) == [] and len(m.fleet.desired) == 51


def test_a_full_directory_warns_once_and_a_smaller_one_after_restart_keeps_the_rules(env, caplog):
    clock, make, stores = env
    m = make(max_sessions=2)
    caplog.set_level("INFO", logger="mauthserver")
    m.on_sap_packet(ann(sdp(1, "A")), ("198.51.100.2", 9875))
    m.authorize(m.directory.sessions()[0].id, expire_with_session=True, actor="t")
    for i in range(2, 6):
        clock.t += 10
        m.on_sap_packet(ann(sdp(i, f"S{i}", group=f"232.{i}.{i}.{i}/16")), ("198.51.100.2", 9875))
    assert [s.name for s in m.directory.sessions()] == ["S4", "S5"]
    assert m.directory.counters["evicted"] == 3 and len(m.fleet.desired) == 1
    assert sum("session directory is full" in r.message for r in caplog.records) == 1
    assert m.stats()["sessions_max"] == 2
    # A session that ends makes room; the next time the directory fills, the operator is warned again.
    m.on_sap_packet(dele(sdp(5, "S5")), ("198.51.100.2", 9875))
    for i in range(6, 8):
        clock.t += 10
        m.on_sap_packet(ann(sdp(i, f"S{i}", group=f"232.{i}.{i}.{i}/16")), ("198.51.100.2", 9875))
        if i == 6:
            m.authorize(next(s.id for s in m.directory.sessions() if s.name == "S6"), expire_with_session=True,
                        actor="t")
    assert sum("session directory is full" in r.message for r in caplog.records) == 2
    assert [s.name for s in m.directory.sessions()] == ["S6", "S7"] and len(m.fleet.desired) == 2
    stores.pop().close()

    # Restarted with room for one: the most recently heard is restored, the other is dropped as
    # evicted (not ended), so the rule that expires with session S6 stays.
    m2 = make(max_sessions=1)
    m2.restore_sessions()
    assert [s.name for s in m2.directory.sessions()] == ["S7"]
    assert [r.id for r in m2.store.sessions()] == [m2.directory.sessions()[0].id]
    assert len(m2.fleet.desired) == 2
    assert any("1 stored sessions did not fit" in r.message for r in caplog.records)
    assert not [e for e in m2.store.audit_log() if e["action"] == "session-ended"]


def test_rule_events_carry_each_routers_state_as_the_server_decides_it(tmp_path):
    """After a change of rate alone, a router still holding the old terms is pending: in the rule's
    view (GET /rules, mauthctl list) and in the rule.changed event the dashboard renders."""
    store = Store.open(tmp_path / "m.db", now=T0)
    r1, r2 = RouterCore("r1", "192.0.2.1", 7575), RouterCore("r2", "192.0.2.2", 7575)
    m = Mediator(store, Directory(), EventBus(), [r1, r2], clock=Clock(T0))
    sub = m.bus.subscribe(None, T0)
    try:
        m.add_rule("192.0.2.10", "239.1.1.1", 8, actor="test")
        (rule,) = [d.rule for d in m.fleet.desired.values()]
        for r in (r1, r2):  # both routers list what they hold: the rule as it is
            r.on_listed([RuleEntry(rule, 0, 0, 0)], m.fleet.desired, 1.0)
        assert m.get_rule("192.0.2.10", "239.1.1.1")["state"] == "applied"
        m.add_rule("192.0.2.10", "239.1.1.1", 8, pps=100, replace=True, actor="test")
        new = m.fleet.desired[rule.key].rule
        r1.on_done(Install(new), 2.0)  # r1 took the new terms; r2 still holds the old ones
        view = m.get_rule("192.0.2.10", "239.1.1.1")
        assert {n: s["state"] for n, s in view["routers"].items()} == {"r1": "applied", "r2": "pending"}
        assert view["state"] == "pending"
        events = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        kinds = [e.kind for e in events]
        assert kinds == [EventKind.HELLO, EventKind.RULE_ADDED, EventKind.RULE_CHANGED]
        added, changed = events[1].data, events[2].data
        assert added["state"] == "pending" and set(added["routers"]) == {"r1", "r2"}
        # Published right after the commit: neither router holds the new terms yet.
        assert {n: s["state"] for n, s in changed["routers"].items()} == {"r1": "pending", "r2": "pending"}
        assert changed["state"] == "pending" and changed["previous"]["pps"] == 0 and changed["rule"]["pps"] == 100
    finally:
        store.close()


def test_a_standby_follows_the_store_the_leader_writes(env, tmp_path):
    """follow_store: a standby's views (rules, mode, applied rules, sessions) re-read from the leader's store,
    writing nothing. Both mediators share one store here, as two instances share one PostgreSQL database."""
    from mauthcore.protocol.model import Mode

    clock, make, stores = env
    leader = make()
    store = stores[0]
    standby = Mediator(store, Directory(), EventBus(), [RouterCore("r1", "127.0.0.1", 7575)], clock=clock)
    leader.add_rule("192.0.2.10", "232.1.1.1", 8, actor="t")
    leader.add_rule("192.0.2.11", "232.1.1.2", 9, actor="t")
    leader.set_mode(Mode.MONITOR, actor="t")
    leader.on_sap_packet(ann(sdp(7, "seven")), ("198.51.100.2", 9875))
    store.sync_routers([("r1", "127.0.0.1", 7575)], now=clock())
    rule = leader.fleet.desired[next(iter(leader.fleet.desired))].rule
    store.save_router("r1", epoch=1, state_id=2, mode="monitor", rule_count=1, last_contact=clock(), last_error=None,
                      applied_put={rule.key: held(rule)}, now=clock())
    commits = store.commits
    standby.follow_store(Directory())
    assert store.commits == commits  # nothing written
    assert {str(k.group) for k in standby.fleet.desired} == {"232.1.1.1", "232.1.1.2"}
    assert standby.fleet.mode is Mode.MONITOR
    assert [s["name"] for s in standby.sessions_view()] == ["seven"]
    states = {v["group"]: v["routers"]["r1"]["state"] for v in standby.rules_view()}
    assert sorted(states.values()) == ["applied", "pending"]
    # A removal and a change reach the standby's next reading as well.
    leader.remove_rule("192.0.2.11", "232.1.1.2", actor="t")
    leader.add_rule("192.0.2.10", "232.1.1.1", 12, replace=True, actor="t")
    standby.follow_store(Directory())
    assert [(str(k.group), r.rule.max_ttl) for k, r in standby.fleet.desired.items()] == [("232.1.1.1", 12)]


def test_a_new_leader_reads_everything_again(env):
    clock, make, stores = env
    old = make()
    old.add_rule("192.0.2.10", "232.1.1.1", 8, actor="t")
    old.on_sap_packet(ann(sdp(7, "seven", group="232.1.1.7/16")), ("198.51.100.2", 9875))
    new = Mediator(stores[0], Directory(), EventBus(), [], clock=clock)
    old.add_rule("192.0.2.10", "232.1.1.3", 5, actor="t")  # written after the new one was made
    (session,) = old.directory.sessions()
    old.authorize(session.id, actor="t")  # so is this authorization, which the new leader must follow
    new.lead(Directory(), [RouterCore("r1", "127.0.0.1", 7575)])
    assert set(new.authorizations) == {session.id}
    assert {str(k.group) for k in new.fleet.desired} == {"232.1.1.1", "232.1.1.3", "232.1.1.7"}
    assert [s["name"] for s in new.sessions_view()] == ["seven"]
    assert set(new.fleet.routers) == {"r1"} and new.fleet.routers["r1"].pending(new.fleet.desired) == 3
