"""How musersd writes receiver rules into the filter's maps and sweeps its joined groups (musersd/xdp_receivers.py).

The kernel side of the same encoding is tested on the compiled program
(tests/integration/test_xdp_receivers.py); these are the pure parts: a
rule's entry and back, the generation word, which joined groups a sweep
removes, and the report frames the tests build (lab/reports.py).
"""

from __future__ import annotations

import ipaddress

import pytest

from lab import reports
from mauthcore.receivers import ReceiverRule
from musersd import maps
from musersd.xdp_receivers import decode_receiver, encode_receiver, gen_half, gen_word, sweep_due


@pytest.mark.parametrize("rule", [
    ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16"),
    ReceiverRule.make("10.1.0.7", "232.1.1.1", source="192.0.2.1", iface="eth1"),
    ReceiverRule.make("0.0.0.0/0", "224.0.0.0/4"),
    ReceiverRule.make("fe80::/10", "ff0e::1:0/112", iface="eth2"),
    ReceiverRule.make("::/0", "ff3e::1", source="2001:db8::1"),
])
def test_a_rule_survives_its_entry(rule):
    entry = encode_receiver(rule, 7 if rule.iface else 0, 41)
    assert (entry.ifindex, entry.slot, entry.family) == ((7 if rule.iface else 0), 41, rule.family)
    assert decode_receiver(maps.RecvRule.from_buffer_copy(bytes(entry)), rule.iface) == rule


def test_an_entry_holds_masked_addresses_and_masks_in_packet_order_ipv4_in_the_first_word():
    e = encode_receiver(ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", source="192.0.2.1"), 0, 0)
    assert bytes(e.rcv) == bytes([10, 1, 0, 0]) + bytes(12)
    assert bytes(e.rcv_mask) == bytes([255, 255, 255, 0]) + bytes(12)
    assert bytes(e.grp_mask) == bytes([255, 255, 0, 0]) + bytes(12)
    assert bytes(e.src) == bytes([192, 0, 2, 1]) + bytes(12)
    assert e.flags == maps.RECV_F_SOURCE
    e6 = encode_receiver(ReceiverRule.make("fe80::/10", "ff0e::/16"), 0, 0)
    assert bytes(e6.rcv_mask) == bytes([0xFF, 0xC0]) + bytes(14)
    assert e6.flags == 0 and bytes(e6.src) == bytes(16)


def _matches(entry: maps.RecvRule, receiver: str, group: str) -> bool:
    """The program's compare (mauth_rule_cb), word for word."""
    r, g = (ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in (receiver, group))
    return all((r[i] & entry.rcv_mask[i]) == entry.rcv[i] and (g[i] & entry.grp_mask[i]) == entry.grp[i]
               for i in range(16))


def test_the_masks_select_what_the_rule_allows():
    rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
    entry = encode_receiver(rule, 0, 0)
    for receiver, group in [("10.1.0.9", "239.1.200.1"), ("10.1.1.9", "239.1.200.1"), ("10.1.0.9", "239.2.0.1")]:
        want = rule.allows(ipaddress.ip_address(receiver), ipaddress.ip_address(group), None, "eth0")
        assert _matches(entry, receiver, group) == want


def test_the_generation_word_holds_the_half_and_the_count():
    assert gen_half(gen_word(1, 512)) == (1, 512)
    assert gen_half(gen_word(0, 0)) == (0, 0)
    assert gen_word(1, 3) == maps.RECV_GEN_HALF | 3
    with pytest.raises(ValueError):
        gen_word(0, maps.MAX_RECV_RULES + 1)


def test_a_sweep_removes_silent_groups_and_groups_left_long_enough():
    s = 1_000_000_000

    def group(last: int, left: int = 0) -> maps.RecvGroup:
        return maps.RecvGroup(first_seen=1, last_seen=last, left=left)

    now = 1000 * s
    assert sweep_due(group(now - 261 * s), now, 260 * s, 3 * s)
    assert not sweep_due(group(now - 259 * s), now, 260 * s, 3 * s)
    assert sweep_due(group(now - 10 * s, left=now - 4 * s), now, 260 * s, 3 * s)
    assert not sweep_due(group(now - 10 * s, left=now - 2 * s), now, 260 * s, 3 * s)
    assert not sweep_due(group(now - 10 * s), now, 260 * s, 3 * s)  # never left


def test_report_frames_carry_correct_checksums_and_read_back():
    v3 = reports.igmp_v3("10.1.0.5", reports.records((reports.TO_EX, "239.1.1.1"),
                                                     (reports.ALLOW, "232.1.1.1", ["192.0.2.1", "192.0.2.2"])))
    got = reports.parse(v3)
    assert (got.family, got.dst, got.mtype) == (4, reports.IGMPV3_ROUTERS, reports.IGMP_V3_REPORT)
    assert got.records[1].sources == ("192.0.2.1", "192.0.2.2")
    mld = reports.mld_v2("fe80::5", [reports.Record(reports.IS_EX, "ff0e::1")])
    assert reports.parse(mld).records == (reports.Record(reports.IS_EX, "ff0e::1"),)
    with pytest.raises(ValueError, match="checksum"):
        reports.parse(reports.igmp_v2("10.1.0.5", "239.1.1.1", csum=0x1234))
    with pytest.raises(ValueError, match="checksum"):
        reports.parse(reports.mld_v1("fe80::5", "ff0e::1", csum=0x1234))
    assert reports.checksum(b"\x45\x00\x00\x1c") == (~0x451C) & 0xFFFF


def test_the_nfqueue_filter_refuses_every_receiver_call_with_one_sentence(tmp_path):
    from mauthcore.receivers import IfacePolicy
    from musersd.filter import ReceiversUnsupported
    from musersd.nfqueue import NfqueueFilter

    f = NfqueueFilter(tmp_path)
    assert f.receives is False
    rule = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
    for call in (lambda: f.add_receiver(rule), lambda: f.remove_receiver(rule), f.receiver_rules,
                 lambda: f.apply_receivers([rule]), lambda: f.set_receiver_policy(IfacePolicy.make("eth0", "closed")),
                 f.receiver_policies, f.denied_joins, f.clear_denied_joins, f.joined_groups,
                 lambda: f.sweep_groups(1, 1)):
        with pytest.raises(ReceiversUnsupported, match="^the nfqueue backend does not judge membership reports"):
            call()
