"""musersd's receiver commands and rule-file lines, the real daemon on the real XDP filter, with real joins.

The receiver host is the lab's sender namespace s1, on the router's guarded
interface in0: its kernel sends the membership reports (IGMPv3, as Linux
does by default) when a socket there joins a group, and the filter judges
them on their way into the router. Commands go through the protocol
library's blocking client (the one mauthctl --router and mauthserver use),
from the router namespace. The protocol itself is tested without a kernel in
tests/unit/test_protocol_receivers.py and tests/unit/test_dataplane_backend_receivers.py.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import struct

import pytest

from lab.daemons import Musersd, write_key_file
from lab.netns import LabError, inside, patience
from mauthcore.protocol.errors import RouterExists, RouterNotFound, RouterRejected
from mauthcore.protocol.model import Reason
from mauthcore.receivers import IfacePolicy, ReceiverRule
from tests.integration.conftest import AUTH
from tests.integration.test_metrics import get, scrape
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ALLOWED = "239.5.1.1"  # a group the file's receiver rule allows
REFUSED = "239.6.1.1"  # a group no rule allows
METRICS = "127.0.0.1:9577"
RULE = ReceiverRule.make("192.0.2.0/26", "239.5.0.0/16", iface="in0")
FILE = f"{AUTH} 239.1.1.1 8\nreceiver 192.0.2.0/26 239.5.0.0/16 iface=in0\ninterface in0 closed limit=4\n"


@pytest.fixture
def key(lab):
    return write_key_file(lab.workdir / "router.key")


def join(lab, group: str) -> socket.socket:
    """A socket in s1 that joins `group` on its link to the router: s1's kernel reports the join."""
    with inside(lab.senders["s1"].ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mreq = struct.pack("4s4s", ipaddress.IPv4Address(group).packed, ipaddress.IPv4Address(AUTH).packed)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    return sock


def test_receiver_commands_rule_file_and_real_joins(lab, pin_dir, key):
    conf = lab.workdir / "mauth.conf"
    conf.write_text(FILE)
    d = Musersd(lab, pin_dir, key_file=key, extra=["--config", str(conf), "--leave-grace", "0.5",
                                                 "--metrics", METRICS]).start()
    c = d.client()
    sockets = []
    try:
        with inside(lab.router.ns):
            (policy,) = c.receiver_policy()
            assert policy.policy == IfacePolicy.make("in0", "closed", 4) and policy.groups == 0
            assert [e.rule for e in c.list_receivers()] == [RULE]

            other = ReceiverRule.make("0.0.0.0/0", "239.7.0.0/16")
            c.add_receiver(other)
            with pytest.raises(RouterExists):
                c.add_receiver(other)
            with pytest.raises(RouterRejected, match="INVALID_ARGUMENT"):
                c.add_receiver(ReceiverRule.make("0.0.0.0/0", "239.7.0.0/16", iface="out0"))  # not guarded
            with pytest.raises(RouterRejected, match="INVALID_ARGUMENT"):
                c.receiver_policy(IfacePolicy.make("out0", "closed"))
            assert [e.rule for e in c.list_receivers()] == sorted([RULE, other])
            c.remove_receiver(other)
            with pytest.raises(RouterNotFound):
                c.remove_receiver(other)

        sockets += [join(lab, ALLOWED), join(lab, REFUSED)]
        with inside(lab.router.ns):
            joined = wait_until(lambda: [j for j in c.joined() if str(j.group) == ALLOWED],
                                patience(10), f"{ALLOWED} joined on in0")
            assert joined[0].iface == "in0" and str(joined[0].reporter) == AUTH and joined[0].reports >= 1
            denied = wait_until(lambda: [j for j in c.denied_joins() if str(j.group) == REFUSED],
                                patience(10), f"the join of {REFUSED} refused")
            assert (denied[0].iface, str(denied[0].receiver), denied[0].reason, denied[0].source) == (
                "in0", AUTH, Reason.JOIN_REFUSED, None)
            assert {str(j.group) for j in c.joined()} == {ALLOWED}  # the refused group is not counted
            (policy,) = c.receiver_policy()
            assert policy.groups == 1 and policy.counters["reports"] >= 1 and policy.counters["refused"] >= 1
            (rule_entry,) = c.list_receivers()
            assert rule_entry.matched >= 1 and rule_entry.last_seen_ms > 0
        samples = scrape(lab, METRICS)
        assert get(samples, "musersd_receiver_groups", iface="in0") == 1
        assert get(samples, "musersd_receiver_group_limit", iface="in0") == 4
        assert get(samples, "musersd_receiver_mode", iface="in0", mode="closed") == 1
        # s1's kernel repeats its state-change reports (RFC 3376 8.1): the count may have grown since.
        assert get(samples, "musersd_receiver_reports_total", iface="in0", outcome="refused") >= policy.counters[
            "refused"] >= 1
        assert get(samples, "musersd_denied_joins", reason="join_refused") == 1
        assert get(samples, "musersd_receiver_rules") == 1

        # s1 leaves: its kernel reports the leave, the filter marks the group left, and musersd's sweep
        # forgets it after the leave grace, freeing its place of the limit.
        sockets.pop(0).close()
        with inside(lab.router.ns):
            wait_until(lambda: not c.joined(), patience(10), f"{ALLOWED} forgotten after its leave")
            (policy,) = c.receiver_policy()
            assert policy.groups == 0 and policy.counters["leaves"] >= 1

        # SIGHUP with a file that names no interface: in0 goes back to open without a limit.
        conf.write_text(f"{AUTH} 239.1.1.1 8\nreceiver 192.0.2.10 239.8.0.0/16\n")
        mark = len(d.log())
        d.signal(signal.SIGHUP)
        assert "1 rules added, 1 removed" in d.wait_log("receivers of", mark)
        with inside(lab.router.ns):
            (policy,) = c.receiver_policy()
            assert policy.policy == IfacePolicy("in0")
            assert [e.rule for e in c.list_receivers()] == [ReceiverRule.make("192.0.2.10", "239.8.0.0/16")]
        assert d.proc.poll() is None
    finally:
        for sock in sockets:
            sock.close()
        c.close()
        d.stop()


def test_an_unguarded_interface_in_the_file_is_one_clear_sentence(lab, pin_dir, key):
    conf = lab.workdir / "bad.conf"
    conf.write_text("interface out0 closed\n")
    d = Musersd(lab, pin_dir, key_file=key, extra=["--config", str(conf)])
    with pytest.raises(LabError):
        d.start(timeout=30)
    assert d.proc.wait(10) == 2
    assert "the interface line for out0 names interface out0, which musersd does not guard (--iface)" in d.log()
