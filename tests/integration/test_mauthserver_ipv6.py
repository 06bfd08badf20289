"""mauthserver end to end over IPv6: announced IPv6 sessions become IPv6 rules that decide forwarding.

The lab carries IPv6 (`Lab(ipv6=True)`): sender host s1 -> router (smcrouted
with IPv6 (S,G) routes, musersd's XDP filter on in0, mauthserver) ->
receiver r1. Sessions are announced with real SAP over IPv6, authorized
with mauthctl through the server, and every assertion about traffic is
about what r1 actually received.
"""

from __future__ import annotations

import json
import socket

import pytest

from lab.netns import inside
from lab.topology import Lab, Route, twin6
from tests.conftest import routed
from tests.integration.mauthserver_lab import (
    MauthserverProc, MusersdProc, announce, heard_from, make_secrets, sap_local,
)

pytestmark = pytest.mark.integration

AUTH = twin6("192.0.2.10")  # 2001:db8::a
ROGUE = twin6("192.0.2.12")
ANNOUNCER = twin6("192.0.2.20")
SSM_GROUPS = ["ff3e::8000:11", "ff3e::8000:12"]
SAP6_GLOBAL = "ff0e::2:7ffe"
N = 30

SSM6_SDP = f"""v=0
o=alice 3900000011 3900000011 IN IP6 2001:db8:1:1::2
s=Lab IPv6 SSM feed
t=0 0
m=video 5004 RTP/AVP 33
c=IN IP6 {SSM_GROUPS[0]}
a=source-filter: incl IN IP6 {SSM_GROUPS[0]} {AUTH}
m=audio 5006 RTP/AVP 96
c=IN IP6 {SSM_GROUPS[1]}
a=source-filter: incl IN IP6 {SSM_GROUPS[1]} {AUTH}
a=rtpmap:96 opus/48000/2
"""


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def fleet6(pin_dir, request):
    sources = ["192.0.2.10", "192.0.2.12", "192.0.2.20"]
    routes = [Route(g, s) for s in (AUTH, ROGUE) for g in SSM_GROUPS] + [Route(SAP6_GLOBAL, ANNOUNCER)]
    with Lab(senders={"s1": sources}, routes=routes, ipv6=True, forwarding=routed(request)) as lab:
        key, token = make_secrets(lab.workdir)
        musersd = MusersdProc(lab, pin_dir, key).start()
        server = MauthserverProc(lab, key, token, routers={"r1": "127.0.0.1:7575"}).start()
        yield lab, musersd, server


def test_an_announced_ipv6_session_authorized_and_revoked(fleet6, tmp_path):
    lab, musersd, server = fleet6
    r1 = lab.receivers["r1"]
    (tmp_path / "ssm6.sdp").write_text(SSM6_SDP)
    # Announced over IPv6 from the receiver's (unguarded) network.
    announce(lab, r1.ns, tmp_path / "ssm6.sdp", "--source", r1.addrs6[0], "--count", "1")
    sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
    s = sessions[0]
    assert s["announcer"] == r1.addrs6[0] and s["origin"] == "2001:db8:1:1::2"
    assert [g["address"] for g in s["groups"]] == SSM_GROUPS
    assert s["sources"] == [AUTH]

    rx = lab.receiver(SSM_GROUPS)
    auth, rogue = lab.sender(AUTH), lab.sender(ROGUE)
    for g in SSM_GROUPS:  # nothing is authorized yet
        auth.send(g, N, ttl=16)
    rx.drain()
    assert [rx.got(AUTH, g) for g in SSM_GROUPS] == [0, 0]

    out = _json(server.ctl("--json", "authorize", s["id"][:6], "--max-ttl", "16"))
    assert sorted((r["source"], r["group"], r["max_ttl"]) for r in out["rules"]) == [
        (AUTH, SSM_GROUPS[0], 16), (AUTH, SSM_GROUPS[1], 16)]
    server.converged()
    assert musersd.rules() == {(AUTH, g): 16 for g in SSM_GROUPS}
    rx.reset()
    for g in SSM_GROUPS:
        auth.send(g, N, ttl=16)
    auth.send(SSM_GROUPS[0], N, ttl=17)  # above the hop limit the rule allows
    rogue.send(SSM_GROUPS[0], N, ttl=4)
    rx.drain()
    assert [rx.got(AUTH, g) for g in SSM_GROUPS] == [N, N]
    assert rx.ttls(AUTH, SSM_GROUPS[0]) == {16: N}  # at the router, as sent: the ones at 17 were dropped
    assert rx.got(ROGUE, SSM_GROUPS[0]) == 0
    # The router saw who tried, by IPv6 address, through the server's denied view.
    denied = {(d["source"], d["group"], d["reason"]) for d in _json(server.ctl("--json", "denied"))}
    assert (ROGUE, SSM_GROUPS[0], "unauthorized") in denied
    assert (AUTH, SSM_GROUPS[0], "ttl") in denied

    assert server.ctl("revoke", s["id"]).returncode == 0
    server.converged()
    assert musersd.rules() == {}
    rx.reset()
    for g in SSM_GROUPS:
        auth.send(g, N, ttl=16)
    rx.drain()
    assert [rx.got(AUTH, g) for g in SSM_GROUPS] == [0, 0]


@pytest.mark.router  # its subject is forwarding: runs where the kernel routes multicast
def test_ipv6_sap_from_a_guarded_network_is_heard_but_not_forwarded(fleet6, tmp_path):
    """An IPv6 announcer without a rule reaches the router's mauthserver (hop limit set to 1) and no
    further, although the router has a forwarding route for its SAP flow; authorizing it lets its
    announcements through."""
    lab, musersd, server = fleet6
    r1 = lab.receivers["r1"]
    (tmp_path / "ssm6.sdp").write_text(SSM6_SDP)
    outside = _sap6_listener(r1.ns, SAP6_GLOBAL)
    try:
        before = sap_local(musersd)
        for _ in range(3):
            announce(lab, lab.senders["s1"].ns, tmp_path / "ssm6.sdp", "--source", ANNOUNCER,
                     "--group", SAP6_GLOBAL, "--count", "1")
        sessions = server.wait_for(lambda: server.call("sessions"), lambda s: len(s) == 1)
        assert sessions[0]["announcer"] == ANNOUNCER
        assert heard_from(outside, ANNOUNCER) == 0
        assert sap_local(musersd) - before == 3

        out = server.ctl("add-sender", ANNOUNCER, SAP6_GLOBAL, "--max-ttl", "255")
        assert out.returncode == 0, out.stderr
        server.converged()
        for _ in range(3):
            announce(lab, lab.senders["s1"].ns, tmp_path / "ssm6.sdp", "--source", ANNOUNCER,
                     "--group", SAP6_GLOBAL, "--count", "1")
        assert heard_from(outside, ANNOUNCER) == 3
        assert sap_local(musersd) - before == 3
    finally:
        outside.close()


def _sap6_listener(ns: str, group: str) -> socket.socket:
    """A SAP listener beyond the router, joined on the receiver host's eth0: what it hears was forwarded."""
    with inside(ns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        index = socket.if_nametoindex("eth0")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, 9875))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, group)
                 + index.to_bytes(4, "little"))
    s.settimeout(1.0)
    return s
