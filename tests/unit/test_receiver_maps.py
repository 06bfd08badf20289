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


class FakeMap:
    """A map in a dict, with bpfsys.Map's interface (keys and values are ctypes objects; bytes inside)."""

    def __init__(self, ktype, vtype, ncpus: int = 0, entries: int = 0):
        self.key_type, self.value_type = ktype, vtype
        self.slot_type = vtype * ncpus if ncpus else vtype
        self.data: dict[bytes, bytes] = {bytes(ktype(i)): bytes(self.slot_type()) for i in range(entries)}

    def lookup(self, key):
        raw = self.data.get(bytes(key))
        return None if raw is None else self.slot_type.from_buffer_copy(raw)

    def update(self, key, value, flags: int = 0) -> None:
        self.data[bytes(key)] = bytes(value)

    def try_update(self, key, value, flags: int) -> int:
        if flags == 1 and bytes(key) in self.data:
            return 17
        self.update(key, value)
        return 0

    def delete(self, key) -> bool:
        return self.data.pop(bytes(key), None) is not None

    def keys(self):
        return [self.key_type.from_buffer_copy(k) for k in list(self.data)]

    def items(self):
        return [(k, self.lookup(k)) for k in self.keys()]


@pytest.fixture
def fake(monkeypatch):
    import ctypes

    from musersd import xdp_receivers

    names = {1: "eth1", 2: "eth2"}
    monkeypatch.setattr(xdp_receivers, "iface_name", lambda i: names.get(i, f"#{i}"))
    monkeypatch.setattr(xdp_receivers.socket, "if_nametoindex",
                        lambda n: next(i for i, m in names.items() if m == n))
    u32 = ctypes.c_uint32
    tables = {
        "mauth_recv_gen": FakeMap(u32, maps.RecvGen, entries=1),
        "mauth_recv_rules": FakeMap(u32, maps.RecvRule, entries=2 * maps.MAX_RECV_RULES),
        "mauth_recv_hits": FakeMap(u32, maps.RecvHits, ncpus=2, entries=maps.MAX_RECV_RULES),
        "mauth_recv_cfg": FakeMap(u32, maps.RecvCfg),
        "mauth_recv_state": FakeMap(u32, maps.RecvState),
        "mauth_recv_joined": FakeMap(maps.RecvGroupKey, maps.RecvGroup),
        "mauth_recv_denied": FakeMap(maps.RecvDeniedKey, maps.RecvDenied),
    }

    class Receivers(xdp_receivers.XdpReceivers):
        guarded = dict.fromkeys(["eth1", "eth2"])

        def _map(self, cname):
            return tables[cname]

    return Receivers(), tables


def test_a_change_rewrites_the_other_half_and_rules_keep_their_slots(fake):
    import ctypes

    from mauthcore.protocol.errors import Exists, NotFound
    from musersd.filter import InvalidReceiver

    rx, tables = fake
    a = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16", iface="eth1")
    b = ReceiverRule.make("10.2.0.0/24", "239.2.0.0/16")
    c = ReceiverRule.make("fe80::/10", "ff0e::/16", iface="eth2")
    gen = tables["mauth_recv_gen"]
    rx.add_receiver(b)
    assert gen_half(gen.lookup(ctypes.c_uint32(0)).word) == (1, 1)
    rx.add_receiver(a)
    assert gen_half(gen.lookup(ctypes.c_uint32(0)).word) == (0, 2)
    live = [tables["mauth_recv_rules"].lookup(ctypes.c_uint32(i)) for i in range(2)]
    assert [(e.ifindex, e.slot) for e in live] == [(1, 1), (0, 0)]  # in rule order, each with its own slot
    with pytest.raises(Exists):
        rx.add_receiver(a)
    with pytest.raises(InvalidReceiver):
        rx.add_receiver(ReceiverRule.make("10.3.0.0/24", "239.3.0.0/16", iface="eth9"))
    # Hits of a kept rule survive a rewrite; a slot handed out again starts at zero.
    hits = tables["mauth_recv_hits"]
    hits.update(ctypes.c_uint32(0), (maps.RecvHits * 2)(maps.RecvHits(3, 99), maps.RecvHits(4, 120)))
    assert rx.apply_receivers([a, b, c]) == (1, 0)
    assert {s.rule: (s.matched, s.last_seen) for s in rx.receiver_rules()} == {a: (0, 0), b: (7, 120), c: (0, 0)}
    hits.update(ctypes.c_uint32(2), (maps.RecvHits * 2)(maps.RecvHits(5, 1), maps.RecvHits()))
    rx.remove_receiver(c)
    with pytest.raises(NotFound):
        rx.remove_receiver(c)
    rx.add_receiver(ReceiverRule.make("::/0", "ff3e::1", source="2001:db8::1"))
    assert [s.matched for s in rx.receiver_rules()] == [0, 7, 0]
    assert rx.apply_receivers([a, b]) == (0, 1)


def test_policies_and_the_sweep_keep_the_group_count_in_two_words(fake):
    import ctypes

    from mauthcore.receivers import IfacePolicy

    rx, tables = fake
    rx.set_receiver_policy(IfacePolicy.make("eth1", "closed", 3))
    rx.set_receiver_policy(IfacePolicy.make("eth2", "open"))
    assert tables["mauth_recv_gen"].lookup(ctypes.c_uint32(0)).inspecting == 1
    # The program inserted two groups on eth1 (its count: added), one of them left long ago.
    s = 1_000_000_000
    joined = tables["mauth_recv_joined"]
    for n, left in ((1, 0), (2, 5 * s)):
        key = maps.RecvGroupKey(ifindex=1, family=4)
        key.grp[:4] = bytes([239, 1, 0, n])
        joined.update(key, maps.RecvGroup(first_seen=s, last_seen=4 * s, left=left, reports=2))
    state = tables["mauth_recv_state"]
    state.update(ctypes.c_uint32(1), maps.RecvState(added=2))
    policies = {p.policy.iface: p for p in rx.receiver_policies()}
    assert (policies["eth1"].groups, str(policies["eth1"].policy)) == (2, "eth1 closed limit 3")
    assert [(str(j.group), j.left) for j in rx.joined_groups()] == [("239.1.0.1", False), ("239.1.0.2", True)]
    assert rx._sweep(9 * s, 260 * s, 3 * s) == 1
    assert {p.policy.iface: p.groups for p in rx.receiver_policies()} == {"eth1": 1, "eth2": 0}
    # A new policy keeps what was swept; the sweep of a silent group frees its place too.
    rx.set_receiver_policy(IfacePolicy.make("eth1", "monitor", 1))
    assert rx._sweep(265 * s, 260 * s, 3 * s) == 1
    assert {p.policy.iface: p.groups for p in rx.receiver_policies()} == {"eth1": 0, "eth2": 0}
    assert tables["mauth_recv_gen"].lookup(ctypes.c_uint32(0)).inspecting == 1


def test_refused_joins_read_back_and_clear(fake):
    rx, tables = fake
    key = maps.RecvDeniedKey(ifindex=2, family=6)
    key.rcv[:] = ipaddress.ip_address("fe80::5").packed
    key.grp[:] = ipaddress.ip_address("ff3e::1").packed
    key.src[:] = ipaddress.ip_address("2001:db8::2").packed
    tables["mauth_recv_denied"].update(key, maps.RecvDenied(records=3, last_seen=7, reason=15, version=2))
    (d,) = rx.denied_joins()
    assert (d.iface, str(d.receiver), str(d.group), str(d.source), d.reason, d.records, d.version) == (
        "eth2", "fe80::5", "ff3e::1", "2001:db8::2", "join_limit", 3, 2)
    assert rx.clear_denied_joins() == 1 and rx.denied_joins() == []


def test_the_kernel_counters_are_in_the_protocols_order():
    from mauthcore.protocol.model import RECV_COUNTERS

    assert maps.RECV_COUNTERS == RECV_COUNTERS
    assert len(maps.RecvState().counters) == len(RECV_COUNTERS)
