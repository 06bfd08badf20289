"""Real SAP in the lab: announcements from namespace hosts reach mauthserver in the router namespace.

Descriptions from tests/data/sdp (and hand-made SAP packets: compressed,
with and without payload type) are sent as real multicast to the standard
SAP groups; the sessions must appear in `mauthctl --server ... --json
sessions` with the right fields, and disappear on deletion, on timeout and
when their t= stop time passes.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from lab.netns import inside, patience
from lab.topology import Lab, Route
from mauthcore.protocol.model import Reason
from sap import announcer as ann
from sap.sap import announcement, encode
from sap.sdp import unix_to_ntp
from tests.conftest import routed
from tests.integration.mauthserver_lab import (
    MauthserverProc,
    MusersdProc,
    announce,
    heard_from,
    make_secrets,
    router_call,
    sap_local,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data" / "sdp"
ANNOUNCER = "192.0.2.20"  # on s1, behind the guarded interface
SAP_LOCAL_SCOPE = "239.255.255.255"


@pytest.fixture
def sap_lab(pin_dir, request):
    # The router has a forwarding route for the announcer's SAP flow, so only
    # the filter decides whether its announcements leave the site.
    with Lab(senders={"s1": ["192.0.2.10", ANNOUNCER]}, routes=[Route(SAP_LOCAL_SCOPE, ANNOUNCER)],
             forwarding=routed(request)) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()

        def server(*extra: str) -> MauthserverProc:
            return MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}, extra=list(extra)).start()

        yield lab, musersd, server


def send_sap(ns: str, source: str, packet: bytes, group: str = "239.255.255.255", ttl: int = 255) -> None:
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((source, 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.sendto(packet, (group, 9875))
    finally:
        s.close()


def _sessions(server: MauthserverProc) -> list[dict]:
    proc = server.ctl("--json", "sessions")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_announced_sessions_show_up_with_their_fields(sap_lab, tmp_path):
    lab, musersd, start = sap_lab
    server = start()
    r1 = lab.receivers["r1"]
    announce(lab, r1.ns, DATA / "layered_counts.sdp", "--source", r1.addrs[0], "--count", "1")
    announce(lab, r1.ns, DATA / "asm_vlc.sdp", "--source", r1.addrs[0], "--count", "1")
    announce(lab, r1.ns, DATA / "aes67_dante.sdp", "--source", r1.addrs[0], "--count", "1")
    # Hand-made packets: compressed with a payload type, and without a payload type.
    ssm = (DATA / "ssm_v4.sdp").read_bytes()
    send_sap(r1.ns, r1.addrs[0], encode(announcement(r1.addrs[0], ssm, compressed=True)), "224.2.127.254")
    pulse = (DATA / "pulseaudio_no_ttl.sdp").read_bytes()
    send_sap(r1.ns, r1.addrs[0], encode(announcement("198.51.100.99", pulse, payload_type=None)))
    send_sap(r1.ns, r1.addrs[0], b"\x20\x00\x00\x01garbage")  # malformed: counted, ignored

    sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 5)
    by_name = {s["name"]: s for s in _sessions(server)}
    assert set(by_name) == {s["name"] for s in sessions}

    layered = by_name["Layered video, RFC 4570 section 3.2.4"]
    assert layered["origin"] == "192.0.2.200"
    assert layered["announcer"] == r1.addrs[0]
    assert layered["groups"] == [{"address": "224.2.1.1", "ttl": 127}, {"address": "224.2.1.2", "ttl": 127},
                                 {"address": "224.2.1.3", "ttl": 127}, {"address": "233.252.0.1", "ttl": 15}]
    assert layered["sources"] == ["192.0.2.10", "192.0.2.42"]
    assert [m["media"] for m in layered["media"]] == ["video", "audio"]
    assert layered["last_heard"] <= time.time() < layered["expires"]

    vlc = by_name["Lobby camera"]
    assert (vlc["origin"], vlc["sources"], vlc["groups"]) == (
        "192.0.2.55", [], [{"address": "239.255.12.42", "ttl": 255}])
    assert vlc["suggested_senders"] == ["192.0.2.55", r1.addrs[0]]

    feed = by_name["Channel 4 HD (SSM)"]
    assert feed["sources"] == ["198.51.100.20", "198.51.100.21"]
    assert feed["groups"] == [{"address": "232.10.20.30", "ttl": 64}]

    pulse_s = by_name["PulseAudio RTP Stream on desk"]
    assert pulse_s["announcer"] == "198.51.100.99" and pulse_s["groups"] == [{"address": "224.0.0.56", "ttl": None}]

    for s in by_name.values():
        assert set(s) >= {"id", "name", "origin", "announcer", "groups", "sources", "media", "last_heard", "expires"}
    stats = server.call("stats")
    assert stats["directory"].get("malformed_sap", 0) >= 1
    assert stats["sessions"] == 5


def test_deletion_timeout_and_stop_remove_sessions(sap_lab):
    lab, musersd, start = sap_lab
    server = start("--sap-timeout", "8")
    r1 = lab.receivers["r1"]
    t0 = time.time()
    stop_soon = (DATA / "asm_vlc.sdp").read_bytes().replace(b"t=0 0", f"t=0 {unix_to_ntp(t0 + 4)}".encode())
    stop_soon = stop_soon.replace(b"s=Lobby camera", b"s=Stops soon")
    plans = {name: ann.plan(sdp, origin=r1.addrs[0]) for name, sdp in [
        ("ssm", (DATA / "ssm_v4.sdp").read_bytes()),
        ("layered", (DATA / "layered_counts.sdp").read_bytes()),
        ("stops", stop_soon)]}
    for p in plans.values():  # sent from the test process: three announcements within milliseconds
        send_sap(r1.ns, r1.addrs[0], p.announcement, str(p.groups[0]))
    server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 3)

    # An explicit deletion.
    p = plans["ssm"]
    send_sap(r1.ns, r1.addrs[0], p.deletion, str(p.groups[0]))
    names = {x["name"] for x in server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 2)}
    assert names == {"Layered video, RFC 4570 section 3.2.4", "Stops soon"}
    # The t= stop time passes (t0 + 4 s), then the 8 s timeout (nothing is announced again).
    left = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) < 2, timeout=20)
    if time.time() < t0 + 7.5:  # before the timeout, only the stopped session has gone
        assert [x["name"] for x in left] == ["Layered video, RFC 4570 section 3.2.4"]
    server.wait_for(lambda: server.call("sessions"), lambda s: s == [], timeout=20)
    counters = server.call("stats")["directory"]
    assert counters.get("removed_deleted") == 1
    assert counters.get("removed_stopped") == 1
    assert counters.get("removed_timeout") == 1


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_sap_from_a_guarded_network_is_heard_by_the_router_but_not_forwarded(sap_lab):
    """An announcer without a rule reaches the router's own mauthserver (TTL set to 1), never the
    networks beyond; authorizing it to the SAP group lets its announcements be forwarded as well."""
    lab, musersd, start = sap_lab
    server = start()
    s1, r1 = lab.senders["s1"], lab.receivers["r1"]
    outside = _sap_listener(r1.ns, r1.addrs[0], SAP_LOCAL_SCOPE)
    try:
        before = sap_local(musersd)
        vlc = (DATA / "asm_vlc.sdp").read_bytes()
        for _ in range(3):
            send_sap(s1.ns, ANNOUNCER, encode(announcement(ANNOUNCER, vlc)), SAP_LOCAL_SCOPE, ttl=255)
        sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
        assert sessions[0]["announcer"] == ANNOUNCER and sessions[0]["name"] == "Lobby camera"
        assert heard_from(outside, ANNOUNCER) == 0  # heard here, not forwarded
        assert sap_local(musersd) - before == 3
        denied = {(str(d.source), str(d.group)) for d in router_call(musersd, "denied_all")}
        assert (ANNOUNCER, SAP_LOCAL_SCOPE) not in denied  # announcing is not an attempt to send

        out = server.ctl("add-sender", ANNOUNCER, SAP_LOCAL_SCOPE, "--max-ttl", "255")
        assert out.returncode == 0, out.stderr
        server.converged()
        for _ in range(3):
            send_sap(s1.ns, ANNOUNCER, encode(announcement(ANNOUNCER, vlc)), SAP_LOCAL_SCOPE, ttl=255)
        assert heard_from(outside, ANNOUNCER) == 3
        assert sap_local(musersd) - before == 3
    finally:
        outside.close()


def test_sap_exception_can_be_turned_off(pin_dir):
    """With --sap-group none, SAP from a guarded network is filtered like any other multicast."""
    with Lab(senders={"s1": ["192.0.2.10", ANNOUNCER]}, routes=[]) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key)
        musersd.extra += ["--sap-group", "none"]
        musersd.start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}).start()
        s1 = lab.senders["s1"]
        vlc = (DATA / "asm_vlc.sdp").read_bytes()
        send_sap(s1.ns, ANNOUNCER, encode(announcement(ANNOUNCER, vlc)))
        # The announcement met the filter (and was dropped there): it will never reach mauthserver.
        wait_until(lambda: router_call(musersd, "counters").by_reason()[Reason.UNAUTHORIZED].packets,
                   patience(10), "the filter to drop the announcement")
        assert server.call("sessions") == []
        out = server.ctl("add-sender", ANNOUNCER, SAP_LOCAL_SCOPE, "--max-ttl", "255")
        assert out.returncode == 0, out.stderr
        server.converged()
        send_sap(s1.ns, ANNOUNCER, encode(announcement(ANNOUNCER, vlc)))
        sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
        assert sessions[0]["announcer"] == ANNOUNCER


def _sap_listener(ns: str, iface_addr: str, group: str) -> socket.socket:
    """A SAP listener on a host beyond the router: what it hears was forwarded."""
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, 9875))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(iface_addr))
    s.settimeout(1.0)
    return s


def send_sap6(ns: str, source: str, packet: bytes, group: str, iface: str = "eth0") -> None:
    with inside(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        index = socket.if_nametoindex(iface)
    try:
        s.bind((source, 0))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.sendto(packet, (group, 9875))
    finally:
        s.close()


@pytest.mark.parametrize("group", ["ff0e::2:7ffe", "ff05::2:7ffe", "ff02::2:7ffe"])
def test_ipv6_sap_from_an_ipv6_announcer(pin_dir, group):
    """SAP over IPv6 (global, site-local and link-local SAP groups; IPv6 originating source, IPv6 SDP)
    is heard on the router, and its deletion packet removes the session."""
    with Lab(senders={"s1": ["192.0.2.10"]}, routes=[], ipv6=True) as lab:
        key, token = make_secrets(lab.workdir)
        MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}).start()
        server.wait_log("listening for SAP on port 9875")
        r1 = lab.receivers["r1"]
        announcer = r1.addrs6[0]
        body = (DATA / "ssm_v6.sdp").read_bytes()
        msg = announcement(announcer, body)
        send_sap6(r1.ns, announcer, encode(msg), group)
        sessions = server.wait_for(lambda: _sessions(server), lambda s: len(s) == 1)
        s = sessions[0]
        assert s["announcer"] == announcer
        assert s["origin"] == "2001:db8:10::20"
        assert s["name"] == "Campus radio (IPv6 SSM)"
        assert {g["address"] for g in s["groups"]} == {"ff3e::8000:1", "ff3e::8000:2"}
        assert set(s["sources"]) == {"2001:db8:10::20", "2001:db8:10::21", "2001:db8:10::22"}

        from sap.sap import deletion
        send_sap6(r1.ns, announcer, encode(deletion(announcer, body, msg_id_hash=msg.msg_id_hash)), group)
        server.wait_for(lambda: _sessions(server), lambda s: s == [])
