"""SAP announcing: scope -> SAP group, packets that the directory accepts, timing with a fake sleep."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sap import announcer as ann
from sap.directory import Directory, RemovalReason, SessionRemoved
from sap.sap import decode

DATA = Path(__file__).resolve().parent.parent / "data" / "sdp"
ip = ipaddress.ip_address


@pytest.mark.parametrize("group, sap", [
    ("239.255.12.42", "239.255.255.255"),  # IPv4 local scope
    ("239.193.1.1", "239.195.255.255"),  # organization-local scope
    ("239.69.83.134", "239.255.255.255"),  # other admin scope: the smallest zone
    ("224.2.1.1", "224.2.127.254"),  # global
    ("232.10.20.30", "224.2.127.254"),  # SSM, global
    ("ff15::1", "ff05::2:7ffe"),  # IPv6 site-local
    ("ff3e::8000:1", "ff0e::2:7ffe"),  # IPv6 global, flags set
])
def test_sap_group_follows_the_session_scope(group, sap):
    assert ann.sap_group_for(ip(group)) == ip(sap)


def test_plan_builds_packets_the_directory_accepts_and_deletes_with():
    sdp = (DATA / "layered_counts.sdp").read_bytes()
    plan = ann.plan(sdp)
    assert plan.groups == (ip("224.2.127.254"),) and plan.ttl == 127
    assert plan.origin == ip("192.0.2.200")  # the o= address, no --source given
    a, d = decode(plan.announcement), decode(plan.deletion)
    assert a.payload == sdp and not a.is_deletion
    assert d.is_deletion and d.msg_id_hash == a.msg_id_hash and d.payload.startswith(b"o=layered ")
    directory = Directory()
    (added,) = directory.handle_packet(plan.announcement, 1000.0)
    assert added.session.name.startswith("Layered")
    (removed,) = directory.handle_packet(plan.deletion, 1001.0)
    assert isinstance(removed, SessionRemoved) and removed.reason == RemovalReason.DELETED
    assert plan.interval == 300.0


def test_plan_options_and_errors():
    vlc = (DATA / "asm_vlc.sdp").read_bytes()
    plan = ann.plan(vlc, origin="198.51.100.2", groups=["239.195.255.255"], ttl=4)
    assert (plan.origin, plan.groups, plan.ttl) == (ip("198.51.100.2"), (ip("239.195.255.255"),), 4)
    assert ann.plan(vlc).ttl == 255  # administratively scoped
    with pytest.raises(ann.AnnounceError, match="invalid"):
        ann.plan(b"v=0\r\ns=no origin\r\n")
    with pytest.raises(ann.AnnounceError, match="not a multicast"):
        ann.plan(vlc, groups=["192.0.2.1"])
    with pytest.raises(ann.AnnounceError, match="different address families"):
        ann.plan(vlc, origin="2001:db8::1")
    named = vlc.replace(b"IN IP4 192.0.2.55", b"IN IP4 camera.example")
    with pytest.raises(ann.AnnounceError, match="is a name"):
        ann.plan(named)
    assert ann.plan(named, origin="192.0.2.55").origin == ip("192.0.2.55")


class FakeAnnouncer:
    def __init__(self, plan) -> None:
        self.plan = plan
        self.packets: list[bytes] = []

    def send(self, packet: bytes) -> None:
        self.packets.append(packet)


def test_run_counts_sleeps_and_withdraws_on_interrupt():
    plan = ann.plan((DATA / "ssm_v4.sdp").read_bytes())
    fake = FakeAnnouncer(plan)
    sleeps: list[float] = []
    assert ann.run(fake, count=3, interval=2.0, delete=False, sleep=sleeps.append) == 3
    assert fake.packets == [plan.announcement] * 3 and sleeps == [2.0, 2.0]

    sleeps.clear()
    fake.packets.clear()
    ann.run(fake, count=2, interval=None, delete=False, sleep=sleeps.append, rand=lambda: 0.0)
    assert sleeps == [pytest.approx(200.0)]  # RFC 2974: 300 s minus a third

    def interrupt(_):
        raise KeyboardInterrupt

    fake.packets.clear()
    with pytest.raises(KeyboardInterrupt):
        ann.run(fake, count=0, interval=1.0, delete=False, sleep=interrupt)
    assert fake.packets == [plan.announcement, plan.deletion]  # a good citizen withdraws

    fake.packets.clear()
    ann.run(fake, count=1, interval=None, delete=True, sleep=sleeps.append)
    assert fake.packets == [plan.deletion]


def test_ipv6_sessions_go_to_their_scopes_sap_group_with_hop_limit_255():
    plan = ann.plan((DATA / "ssm_v6.sdp").read_bytes())
    assert plan.origin == ip("2001:db8:10::20") and plan.groups == (ip("ff0e::2:7ffe"),)
    assert plan.ttl == 255  # no c= TTL in IPv6: the group's scope bounds the session, not a hop count
    assert ann.plan((DATA / "ssm_v6.sdp").read_bytes(), ttl=8).ttl == 8
    (added,) = Directory().handle_packet(plan.announcement, 1000.0)
    assert added.session.announcer == ip("2001:db8:10::20")


DUAL = b"""v=0\r
o=- 9 1 IN IP4 192.0.2.55\r
s=Dual stack\r
t=0 0\r
m=audio 5004 RTP/AVP 0\r
c=IN IP4 224.2.1.1/32\r
c=IN IP6 ff15::db8:1\r
"""


def test_a_dual_stack_session_is_announced_on_the_sap_groups_of_the_announcers_family():
    v4 = ann.plan(DUAL)
    assert (v4.groups, v4.ttl) == ((ip("224.2.127.254"),), 32)  # the IPv4 groups' TTL, not IPv6's 255
    v6 = ann.plan(DUAL, origin="2001:db8::55")
    assert (v6.groups, v6.ttl) == ((ip("ff05::2:7ffe"),), 255)
    assert ann.default_ttl(ann.parse_sdp(DUAL)) == 255  # every group counted


