"""Every IGMP and MLD version a Linux host speaks, joined for real and judged by musersd's filter.

The receiver host is the lab's sender namespace s1 on the router's guarded
interface in0 (closed). Its kernel is told which version to speak
(`force_igmp_version`, `force_mld_version` on its link) and a socket joins
one group a receiver rule allows and one it does not; the kernel sends the
reports (IGMPv1, v2, v3; MLDv1, v2: the v3 and MLDv2 ones with a record per
group). The router's view, through the protocol client mauthctl --router
uses, must then hold the allowed group as joined and the other as refused,
with the version of the report that asked for it. Delivery through a
routing daemon is the router tier's (tests/integration/test_receiver_lab.py);
this file needs no multicast routing, so it runs on every kernel.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from lab.daemons import Musersd, write_key_file
from lab.netns import inside, patience, sh
from mauthcore.protocol.model import Reason
from tests.integration.conftest import AUTH
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FILE = (f"{AUTH} 239.1.1.1 8\n"
        "receiver 192.0.2.0/26 239.5.0.0/16 iface=in0\n"
        "receiver fe80::/10 ff0e::5:0/112 iface=in0\n"
        "interface in0 closed\n")

# (family, version, allowed group, refused group): a pair of groups of its own per version
VERSIONS = [
    (4, 1, "239.5.1.1", "239.6.1.1"),
    (4, 2, "239.5.2.1", "239.6.2.1"),
    (4, 3, "239.5.3.1", "239.6.3.1"),
    (6, 1, "ff0e::5:1", "ff0e::6:1"),
    (6, 2, "ff0e::5:2", "ff0e::6:2"),
]


def _join(ns: str, group: str) -> socket.socket:
    """A socket in `ns` joined to `group` on its eth0: the host's kernel reports the join."""
    with inside(ns):
        if ipaddress.ip_address(group).version == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            mreq = struct.pack("4s4s", ipaddress.IPv4Address(group).packed, ipaddress.IPv4Address(AUTH).packed)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            mreq = ipaddress.IPv6Address(group).packed + struct.pack("@I", socket.if_nametoindex("eth0"))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    return sock


@pytest.mark.parametrize("family, version, allowed, refused", VERSIONS,
                         ids=[f"{'IGMP' if f == 4 else 'MLD'}v{v}" for f, v, _, _ in VERSIONS])
def test_each_version_joins_the_allowed_group_and_is_refused_the_other(lab6, pin_dir, family, version, allowed,
                                                                      refused):
    ns = lab6.senders["s1"].ns
    knob = (f"net.ipv4.conf.eth0.force_igmp_version={version}" if family == 4
            else f"net.ipv6.conf.eth0.force_mld_version={version}")
    sh("sysctl", "-qw", knob, ns=ns)
    conf = lab6.workdir / "mauth.conf"
    conf.write_text(FILE)
    d = Musersd(lab6, pin_dir, key_file=write_key_file(lab6.workdir / "router.key"),
                extra=["--config", str(conf)]).start()
    c = d.client()
    sockets = []
    try:
        sockets += [_join(ns, allowed), _join(ns, refused)]
        with inside(lab6.router.ns):
            joined = wait_until(lambda: [j for j in c.joined() if str(j.group) == allowed], patience(10),
                                f"{allowed} joined on in0")
            denied = wait_until(lambda: [j for j in c.denied_joins() if str(j.group) == refused], patience(10),
                                f"the join of {refused} refused")
            assert joined[0].iface == "in0" and joined[0].reporter.version == family
            if family == 6:
                assert joined[0].reporter.is_link_local  # MLD reports come from the host's link-local address
            assert (denied[0].iface, denied[0].reason, denied[0].source, denied[0].version) == (
                "in0", Reason.JOIN_REFUSED, None, version)
            assert refused not in {str(j.group) for j in c.joined()}  # a refused group holds no place
            (policy,) = c.receiver_policy()
            assert policy.counters["kept"] >= 1 and policy.counters["refused"] >= 1
            # A v1/v2 report names one group: the refused one is dropped whole. Linux's v3/MLDv2 state-change
            # reports carry the groups joined since the last one: a report of the refused group alone is
            # dropped, one with both groups is rewritten to the allowed one.
            many_records = (family, version) in ((4, 3), (6, 2))
            assert policy.counters["dropped"] + policy.counters["rewritten"] * many_records >= 1
        assert d.proc.poll() is None
    finally:
        for sock in sockets:
            sock.close()
        c.close()
        d.stop()
