"""The session directory, driven by packets and a fake clock (``now``)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from sap.directory import (
    ONE_HOUR,
    Directory,
    RemovalReason,
    SessionAdded,
    SessionChanged,
    SessionKey,
    SessionRemoved,
)
from sap.errors import SAPDecodeError, SDPDecodeError
from sap.sap import SAPMessage, announcement, deletion, encode, make_msg_id_hash
from sap.sdp import Group, deletion_payload, parse_sdp, unix_to_ntp

DATA = Path(__file__).resolve().parent.parent / "data" / "sdp"
T0 = 1_700_000_000.0  # a Unix time: t= stop times are compared with it
ip = ipaddress.ip_address


def sdp(
    sess_id: int = 1,
    version: int = 1,
    name: str = "Session",
    conn: str = "239.1.1.1/16",
    stop: float | None = None,
    extra: tuple[str, ...] = (),
    origin: str = "192.0.2.1",
) -> bytes:
    stop_ntp = 0 if stop is None else unix_to_ntp(stop)
    lines = [
        "v=0",
        f"o=- {sess_id} {version} IN IP4 {origin}",
        f"s={name}",
        f"c=IN IP4 {conn}",
        f"t=0 {stop_ntp}",
        *extra,
        "m=video 5004 RTP/AVP 33",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def pkt(payload: bytes, announcer: str = "192.0.2.1", **kwargs) -> bytes:
    return encode(announcement(announcer, payload, **kwargs))


def delete(payload: bytes, announcer: str = "192.0.2.1", msg_id_hash: int | None = None, **kwargs) -> bytes:
    origin = parse_sdp(payload).origin
    hash_ = make_msg_id_hash(payload) if msg_id_hash is None else msg_id_hash
    return encode(deletion(announcer, deletion_payload(origin), msg_id_hash=hash_, **kwargs))


def kinds(events) -> list[str]:
    return [e.kind if not isinstance(e, SessionRemoved) else f"removed:{e.reason.value}" for e in events]


# -- adding, refreshing, the session's fields ------------------------------------


def test_add_then_refresh_without_event():
    d = Directory()
    (ev,) = d.handle_packet(pkt(sdp()), T0)
    assert isinstance(ev, SessionAdded)
    s = ev.session
    assert s.name == "Session" and s.origin == "192.0.2.1" and s.announcer == ip("192.0.2.1")
    assert s.groups == (Group(ip("239.1.1.1"), 16),)
    assert s.sources == () and s.any_source
    assert (s.first_heard, s.last_heard, s.expires) == (T0, T0, T0 + ONE_HOUR)
    assert s.sdp == sdp() and s.version == 1 and s.stops is None
    assert d.get(s.id) == s and s.id in d and len(d) == 1
    assert d.handle_packet(pkt(sdp()), T0 + 300) == []
    s2 = d.get(s.id)
    assert (s2.first_heard, s2.last_heard, s2.expires) == (T0, T0 + 300, T0 + 300 + ONE_HOUR)
    assert d.counters["refreshed"] == 1 and d.counters["added"] == 1


def test_session_fields_from_a_real_ssm_description():
    body = (DATA / "ssm_v6.sdp").read_bytes()
    d = Directory()
    (ev,) = d.handle_packet(pkt(body, "2001:db8:10::20"), T0)
    s = ev.session
    assert s.name == "Campus radio (IPv6 SSM)"
    assert s.origin == "2001:db8:10::20" and s.announcer == ip("2001:db8:10::20")
    assert s.groups == (Group(ip("ff3e::8000:1"), None), Group(ip("ff3e::8000:2"), None))
    assert s.sources == (ip("2001:db8:10::20"), ip("2001:db8:10::21"), ip("2001:db8:10::22"))
    assert not s.any_source
    assert [(m.media, m.port, m.groups, m.sources) for m in s.media] == [
        ("audio", 5004, (Group(ip("ff3e::8000:1"), None),), (ip("2001:db8:10::20"),)),
        ("video", 5006, (Group(ip("ff3e::8000:2"), None),), (ip("2001:db8:10::21"), ip("2001:db8:10::22"))),
    ]
    as_json = json.loads(json.dumps(ev.to_dict()))
    assert as_json["event"] == "added"
    assert as_json["session"]["groups"] == [
        {"address": "ff3e::8000:1", "ttl": None},
        {"address": "ff3e::8000:2", "ttl": None},
    ]
    assert as_json["session"]["sdp"].startswith("v=0\r\n")


def test_ids_are_stable_and_distinct():
    a = Directory().handle_packet(pkt(sdp()), T0)[0].session.id
    b = Directory().handle_packet(pkt(sdp(version=7)), T0 + 5)[0].session.id
    c = Directory().handle_packet(pkt(sdp(sess_id=2)), T0)[0].session.id
    assert a == b != c and len(a) == 16


def test_same_origin_from_another_announcer_is_another_session():
    # RFC 2974 §5: a modification from another host is a new announcement.
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    (ev,) = d.handle_packet(pkt(sdp(version=2, name="Hijack"), announcer="203.0.113.66"), T0 + 1)
    assert isinstance(ev, SessionAdded) and len(d) == 2
    assert sorted(s.name for s in d.sessions()) == ["Hijack", "Session"]


def test_authenticated_and_unauthenticated_announcements_are_kept_apart():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    (ev,) = d.handle_packet(pkt(sdp(version=2), auth_data=b"\x20sig"), T0 + 1)
    assert isinstance(ev, SessionAdded) and ev.session.authenticated and len(d) == 2


# -- versions ----------------------------------------------------------------------


def test_newer_version_replaces_older_is_ignored():
    d = Directory()
    (added,) = d.handle_packet(pkt(sdp(version=5)), T0)
    (changed,) = d.handle_packet(pkt(sdp(version=6, conn="239.2.2.2/32")), T0 + 60)
    assert isinstance(changed, SessionChanged)
    assert changed.previous == added.session
    assert changed.session.id == added.session.id
    assert changed.session.groups == (Group(ip("239.2.2.2"), 32),)
    assert changed.session.first_heard == T0 and changed.session.last_heard == T0 + 60
    assert d.handle_packet(pkt(sdp(version=5)), T0 + 120) == []
    assert d.counters["stale"] == 1
    assert d.get(added.session.id).version == 6
    assert d.get(added.session.id).last_heard == T0 + 60  # a stale copy does not refresh


def test_same_version_new_content_is_a_change():
    d = Directory()
    d.handle_packet(pkt(sdp(name="Old title")), T0)
    (ev,) = d.handle_packet(pkt(sdp(name="New title")), T0 + 10)
    assert isinstance(ev, SessionChanged) and ev.session.name == "New title"


def test_known_hash_with_same_payload_is_not_reparsed(monkeypatch):
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    import sap.directory as directory

    def boom(*args, **kwargs):
        raise AssertionError("re-parsed a known announcement")

    monkeypatch.setattr(directory, "parse_sdp", boom)
    assert d.handle_packet(pkt(sdp()), T0 + 300) == []


def test_known_hash_with_other_payload_is_reparsed():
    # RFC 2974 §10: do not trust origin+hash alone.
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    (ev,) = d.handle_packet(pkt(sdp(version=2), msg_id_hash=make_msg_id_hash(sdp())), T0 + 1)
    assert isinstance(ev, SessionChanged)


# -- deletions ---------------------------------------------------------------------


def test_deletion_removes():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    (ev,) = d.handle_packet(delete(sdp()), T0 + 5)
    assert isinstance(ev, SessionRemoved) and ev.reason is RemovalReason.DELETED
    assert len(d) == 0 and d.counters["removed_deleted"] == 1
    assert ev.to_dict()["reason"] == "deleted"


def test_deletion_from_another_announcer_is_ignored():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    assert d.handle_packet(delete(sdp(), announcer="203.0.113.66"), T0 + 5) == []
    assert len(d) == 1 and d.counters["deletion_unknown"] == 1


def test_unauthenticated_deletion_of_an_authenticated_session_is_ignored():
    d = Directory()
    d.handle_packet(pkt(sdp(), auth_data=b"\x20sig"), T0)
    assert d.handle_packet(delete(sdp()), T0 + 5) == []
    assert len(d) == 1 and d.counters["deletion_unauthenticated"] == 1
    (ev,) = d.handle_packet(delete(sdp(), auth_data=b"\x20sig"), T0 + 6)
    assert ev.reason is RemovalReason.DELETED


def test_deletion_carrying_the_whole_description_or_only_the_hash():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    whole = encode(deletion("192.0.2.1", sdp(), msg_id_hash=1))
    assert kinds(d.handle_packet(whole, T0 + 1)) == ["removed:deleted"]
    d.handle_packet(pkt(sdp()), T0 + 2)
    garbage = encode(deletion("192.0.2.1", b"not an origin", msg_id_hash=make_msg_id_hash(sdp())))
    assert kinds(d.handle_packet(garbage, T0 + 3)) == ["removed:deleted"]
    with pytest.raises(SDPDecodeError):
        d.handle_packet(garbage, T0 + 4)  # matches nothing and names nothing
    assert d.counters["malformed_sdp"] == 1


# -- timeouts with a fake clock ---------------------------------------------------


def test_implicit_timeout_one_hour_minimum():
    d = Directory()
    sid = d.handle_packet(pkt(sdp()), T0)[0].session.id
    assert d.next_expiry() == T0 + ONE_HOUR
    assert d.expire(T0 + ONE_HOUR - 1) == []
    (ev,) = d.expire(T0 + ONE_HOUR)
    assert ev.reason is RemovalReason.TIMEOUT and ev.session.id == sid
    assert d.next_expiry() is None and d.counters["removed_timeout"] == 1


def test_observed_interval_stretches_the_timeout():
    # An announcer repeating every 20 minutes is timed out after ten periods,
    # not after the one-hour minimum.
    d = Directory()
    sid = d.handle_packet(pkt(sdp()), T0)[0].session.id
    for i in range(1, 4):
        assert d.handle_packet(pkt(sdp()), T0 + 1200 * i) == []
    s = d.get(sid)
    assert s.interval == 1200 and s.expires == T0 + 3600 + 12000
    assert d.expire(T0 + 3600 + 11999) == []
    assert kinds(d.expire(T0 + 3600 + 12000)) == ["removed:timeout"]


def test_duplicates_do_not_shrink_the_interval():
    d = Directory()
    sid = d.handle_packet(pkt(sdp()), T0)[0].session.id
    d.handle_packet(pkt(sdp()), T0 + 1200)
    d.handle_packet(pkt(sdp()), T0 + 1200.2)  # same packet via another path
    assert d.get(sid).interval == 1200


def test_predicted_interval_grows_with_the_cache():
    # RFC 2974 §3.1: interval = max(300, 8 * no_of_ads * ad_size / 4000).
    d = Directory()
    padding = tuple(f"a=x-pad:{'p' * 900}" for _ in range(1))
    for i in range(400):
        d.handle_packet(pkt(sdp(sess_id=i, extra=padding)), T0)
    assert d.predicted_interval() > 600
    last = d.handle_packet(pkt(sdp(sess_id=9999, extra=padding)), T0)[0].session
    assert last.expires - T0 == pytest.approx(10 * d.predicted_interval(), rel=0.01)
    assert last.expires - T0 > 6000


def test_refresh_postpones_and_expiry_events_come_first():
    d = Directory()
    d.handle_packet(pkt(sdp(sess_id=1)), T0)
    d.handle_packet(pkt(sdp(sess_id=2)), T0 + 100)
    d.handle_packet(pkt(sdp(sess_id=1)), T0 + 200)  # session 1 heard again
    events = d.handle_packet(pkt(sdp(sess_id=3)), T0 + 3700)
    assert kinds(events) == ["removed:timeout", "added"]
    assert events[0].session.description.origin.sess_id == "2"
    assert {s.description.origin.sess_id for s in d.sessions()} == {"1", "3"}
    assert d.next_expiry() == T0 + 200 + ONE_HOUR


def test_stop_time_removes_the_session():
    d = Directory()
    (ev,) = d.handle_packet(pkt(sdp(stop=T0 + 600)), T0)
    assert ev.session.stops == T0 + 600 and ev.session.expires == T0 + 600
    assert d.next_expiry() == T0 + 600
    (gone,) = d.expire(T0 + 600)
    assert gone.reason is RemovalReason.STOPPED


def test_announcement_that_already_ended_is_not_added():
    d = Directory()
    assert d.handle_packet(pkt(sdp(stop=T0 - 1)), T0) == []
    assert len(d) == 0 and d.counters["already_stopped"] == 1


def test_new_version_with_an_earlier_stop_time_is_honoured():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    d.handle_packet(pkt(sdp(version=2, stop=T0 + 60)), T0 + 10)
    assert d.next_expiry() == T0 + 60
    assert kinds(d.expire(T0 + 60)) == ["removed:stopped"]


# -- encrypted, other payloads, garbage -------------------------------------------


def test_encrypted_announcements_are_counted_and_set_aside():
    d = Directory()
    enc = SAPMessage(ip("198.51.100.7"), 0x0BAD, b"\x01ciphertext", payload_type=None, encrypted=True)
    assert d.handle_packet(encode(enc), T0) == []
    assert d.handle_packet(encode(enc), T0 + 10) == []
    (item,) = d.encrypted()
    assert (item.announcer, item.msg_id_hash, item.first_heard, item.last_heard) == (
        ip("198.51.100.7"),
        0x0BAD,
        T0,
        T0 + 10,
    )
    assert d.counters["encrypted"] == 2 and len(d) == 0
    d.expire(T0 + 10 + ONE_HOUR)
    assert d.encrypted() == [] and d.counters["encrypted_expired"] == 1
    d.handle_packet(encode(enc), T0 + 5000)
    gone = SAPMessage(
        ip("198.51.100.7"), 0x0BAD, b"\x02", payload_type=None, encrypted=True, is_deletion=True
    )
    d.handle_packet(encode(gone), T0 + 5001)
    assert d.encrypted() == [] and d.counters["encrypted_deleted"] == 1


def test_other_payload_types_are_counted_and_ignored():
    d = Directory()
    msg = SAPMessage(ip("192.0.2.1"), 5, b"<xml/>", payload_type="application/x-sd+xml")
    assert d.handle_packet(encode(msg), T0) == [] and d.counters["unsupported_payload"] == 1


def test_garbage_is_counted_and_raised():
    d = Directory()
    with pytest.raises(SAPDecodeError):
        d.handle_packet(b"\xff\x00\x00\x01" + bytes(8), T0)
    with pytest.raises(SDPDecodeError):
        d.handle_packet(pkt(sdp(conn="239.1.1.1")), T0)  # no TTL
    c = d.counters
    assert c["malformed_sap"] == 1 and c["malformed_sap:version"] == 1
    assert c["malformed_sdp"] == 1 and c["malformed_sdp:missing-ttl"] == 1
    assert c["packets"] == 2 and len(d) == 0


def test_missing_ttl_can_be_allowed():
    d = Directory(allow_missing_ttl=True)
    (ev,) = d.handle_packet(pkt((DATA / "pulseaudio_no_ttl.sdp").read_bytes(), "192.168.1.50"), T0)
    assert ev.session.groups == (Group(ip("224.0.0.56"), None),)


def test_compressed_sapv0_and_ipv6_packets():
    d = Directory()
    d.handle_packet(pkt(sdp(sess_id=1), compressed=True), T0)
    v0 = SAPMessage(ip("0.0.0.0"), 0, sdp(sess_id=2), payload_type=None, version=0)
    d.handle_packet(encode(v0), T0)
    d.handle_packet(encode(v0), T0 + 300)  # hash 0: compared by content, still one session
    d.handle_packet(pkt(sdp(sess_id=3), "2001:db8::3"), T0)
    assert len(d) == 3 and d.counters["refreshed"] == 1


# -- bounded memory -------------------------------------------------------------------


def test_flood_of_distinct_announcements_is_bounded():
    d = Directory(max_sessions=50)
    d.handle_packet(pkt(sdp(sess_id=0, name="legit")), T0)
    evicted = []
    for i in range(1, 1001):
        flood = pkt(sdp(sess_id=i, name=f"flood {i}"), f"10.9.{i // 250}.{i % 250 + 1}")
        events = d.handle_packet(flood, T0 + i * 0.01)
        evicted += [e for e in events if isinstance(e, SessionRemoved)]
    assert len(d) == 50
    assert d.counters["evicted"] == len(evicted) == 951
    assert evicted[0].session.name == "legit"  # least recently heard goes first
    assert all(e.reason is RemovalReason.EVICTED for e in evicted)
    assert {s.name for s in d.sessions()} == {f"flood {i}" for i in range(951, 1001)}
    assert len(d._heap) <= 2 * len(d) + 64 + 1000  # lazily compacted; see expire()
    d.expire(T0 + 20)
    assert len(d._heap) <= 2 * len(d) + 64


def test_recently_heard_sessions_survive_eviction():
    d = Directory(max_sessions=3)
    for i in range(3):
        d.handle_packet(pkt(sdp(sess_id=i)), T0 + i)
    d.handle_packet(pkt(sdp(sess_id=0)), T0 + 10)  # heard again: now the freshest
    events = d.handle_packet(pkt(sdp(sess_id=99)), T0 + 11)
    assert kinds(events) == ["added", "removed:evicted"]
    assert events[1].session.description.origin.sess_id == "1"


def test_byte_budget_is_bounded():
    padding = (f"a=x-pad:{'p' * 1000}",)
    d = Directory(max_bytes=10_000)
    for i in range(40):
        d.handle_packet(pkt(sdp(sess_id=i, extra=padding)), T0 + i)
    assert 0 < len(d) <= 10 and d.counters["evicted"] == 40 - len(d)


def test_refresh_flood_keeps_the_timer_heap_small():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    for i in range(1, 2000):
        d.handle_packet(pkt(sdp()), T0 + i)
    assert len(d._heap) <= 2


def test_session_key_make():
    origin = parse_sdp(sdp()).origin
    key = SessionKey.make(origin, ip("192.0.2.1"), False)
    assert (key.username, key.sess_id, key.address, key.announcer) == ("-", "1", "192.0.2.1", ip("192.0.2.1"))


def test_a_bad_packet_never_loses_expiry_events():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    with pytest.raises(SDPDecodeError):
        d.handle_packet(pkt(sdp(sess_id=2, conn="239.1.1.1/999")), T0 + ONE_HOUR + 1)
    assert len(d) == 1  # nothing was applied, not even the expiry
    assert kinds(d.expire(T0 + ONE_HOUR + 1)) == ["removed:timeout"]


def test_deletion_naming_an_unknown_origin_does_not_fall_back_on_the_hash():
    d = Directory()
    d.handle_packet(pkt(sdp()), T0)
    other = deletion("192.0.2.1", b"o=- 42 1 IN IP4 192.0.2.1\r\n", msg_id_hash=make_msg_id_hash(sdp()))
    assert d.handle_message(other, T0 + 1) == [] and len(d) == 1


def test_handle_message_takes_decoded_messages():
    d = Directory()
    (ev,) = d.handle_message(announcement("192.0.2.1", sdp()), T0)
    assert isinstance(ev, SessionAdded) and d.counters["announcements"] == 1
