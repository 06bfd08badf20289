"""The pure-Python policy model against the shared case table, and its token buckets."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol.model import Mode
from mauthcore.rules import MAX_BPS, MAX_PPS, Rule
from musersd.maps import NSEC, REASONS, bucket
from musersd.policy import DROP, PASS, RateBuckets, decide, find_rule
from tests.policy_cases import (
    CASES,
    EVERY_RULE,
    GROUP,
    IPV6_CASES,
    PREFIX_CASES,
    PREFIX_GROUP,
    RATE_GROUP,
    RULES,
    SENDER,
    SUBNET_HOST,
    TRUSTED,
    udp,
)

EVERY_CASE = CASES + PREFIX_CASES + IPV6_CASES
ALL_RULES = EVERY_RULE  # both families: every case holds under it
A, N = ipaddress.IPv4Address, ipaddress.IPv4Network


@pytest.mark.parametrize("case", EVERY_CASE, ids=lambda c: c.name)
def test_enforce_verdict(case):
    v = decide(case.frame, ALL_RULES, Mode.ENFORCE)
    assert (v.action, v.reason, v.new_ttl) == (case.action, case.reason, case.new_ttl)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_exact_cases_hold_without_the_prefix_rules(case):
    v = decide(case.frame, RULES, Mode.ENFORCE)
    assert (v.action, v.reason, v.new_ttl) == (case.action, case.reason, case.new_ttl)


@pytest.mark.parametrize("case", EVERY_CASE, ids=lambda c: c.name)
def test_monitor_passes_everything_with_the_same_reason(case):
    v = decide(case.frame, ALL_RULES, Mode.MONITOR)
    assert v.action == PASS
    assert v.reason == case.reason
    assert v.new_ttl is None  # monitor mode never rewrites a packet


def test_table_covers_every_reason_the_program_can_give_without_a_clock():
    covered = {c.reason for c in EVERY_CASE}
    # "rate" needs time: see the bucket tests below; the bindings' reasons need an ingress: BIND_CASES;
    # the receivers' need an interface policy: RECV_CASES (tests/unit/test_receiver_model.py,
    # tests/integration/test_xdp_receiver_cases.py).
    assert covered == set(REASONS.values()) - {"rate", "wrong_iif", "rpf_fail", "wrong_mac", "join_refused",
                                               "join_limit"}


def test_empty_rule_table_drops_every_routable_group():
    v = decide(CASES[0].frame, {}, Mode.ENFORCE)
    assert (v.action, v.reason) == (DROP, "unauthorized")


@given(st.binary(max_size=200))
def test_random_bytes_always_give_a_verdict(frame):
    v = decide(frame, ALL_RULES)
    assert v.reason in REASONS.values()
    assert v.action in (PASS, DROP)
    assert (v.action == DROP) == v.would_drop


def test_sap_exception_follows_the_configured_groups():
    frame = next(c.frame for c in CASES if c.name.startswith("SAP global scope"))
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=()).reason == "unauthorized"
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=("224.2.127.254",)).reason == "sap_local"
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=("239.255.255.255",)).action == DROP


# -- lookup order ------------------------------------------------------------------


def test_lookup_order_exact_then_source_prefix_then_group_prefix():
    s, g = A("192.0.2.20"), A("239.192.1.1")
    table = {(s, N("239.192.0.0/14")): 1, (N("192.0.2.0/24"), g): 2, (N("192.0.2.16/28"), g): 3, (s, g): 4}
    assert find_rule(table, s, g) == ((s, g), 4)
    del table[(s, g)]
    assert find_rule(table, s, g) == ((N("192.0.2.16/28"), g), 3)  # the longest source prefix
    del table[(N("192.0.2.16/28"), g)]
    assert find_rule(table, s, g) == ((N("192.0.2.0/24"), g), 2)
    del table[(N("192.0.2.0/24"), g)]
    assert find_rule(table, s, g) == ((s, N("239.192.0.0/14")), 1)
    assert find_rule(table, A("192.0.2.21"), g) is None


def test_verdict_names_the_rule_it_fell_under():
    v = decide(udp(SUBNET_HOST, PREFIX_GROUP, 1), ALL_RULES)
    assert v.rule == (N("192.0.2.128/25"), A(PREFIX_GROUP))
    assert v.key == (A(SUBNET_HOST), A(PREFIX_GROUP))  # the packet's own pair, for the denied table
    assert decide(udp(TRUSTED, "239.193.9.9", 1), ALL_RULES).rule == (A(TRUSTED), N("239.192.0.0/14"))


def test_decide_keeps_its_positional_signature():
    frame = udp(SENDER, GROUP, 8)
    assert decide(frame, RULES, Mode.MONITOR, ("224.2.127.254",)).reason == "passed"


# -- rate limits -------------------------------------------------------------------

FRAME_LEN = len(udp(SENDER, RATE_GROUP, 8))


def _passes(buckets: RateBuckets, rule: Rule, n: int, length: int = FRAME_LEN, step_ns: int = 0) -> int:
    key = (rule.source, rule.group)
    ok = 0
    for _ in range(n):
        ok += buckets(key, rule, length)
        buckets.advance(step_ns)
    return ok


def test_packet_bucket_holds_a_tenth_of_a_second_then_refills_at_the_rate():
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=500)
    b = RateBuckets(now=10**12)
    assert _passes(b, rule, 200) == 50  # the burst: 100 ms of 500 pps
    b.advance(NSEC)  # one second later: the bucket is full again, never fuller
    assert _passes(b, rule, 200) == 50
    b.advance(10 * NSEC)
    assert _passes(b, rule, 200) == 50
    # 2000 pps offered for 3 s: the burst, then 500 a second.
    b.advance(NSEC)
    assert _passes(b, rule, 6000, step_ns=NSEC // 2000) == pytest.approx(50 + 500 * 3, abs=2)


def test_a_slow_sender_is_never_cut():
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=500)
    assert _passes(RateBuckets(), rule, 1000, step_ns=NSEC // 400) == 1000


def test_bit_bucket_counts_the_frame_and_holds_at_least_16_kib():
    rule = Rule.make(SENDER, RATE_GROUP, 8, bps=1000)
    assert _passes(RateBuckets(), rule, 1000, length=60) == 16 * 1024 * 8 // (60 * 8)  # 273
    big = Rule.make(SENDER, RATE_GROUP, 8, bps=8_000_000)  # 1 MB/s: 100 KB of burst
    assert _passes(RateBuckets(), big, 1000, length=1000) == 100


def test_both_limits_the_tighter_one_decides_and_a_drop_costs_nothing():
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=100, bps=8_000_000)
    assert _passes(RateBuckets(), rule, 1000, length=100) == 10  # pps: 10 in the burst
    assert _passes(RateBuckets(), rule, 1000, length=50_000) == 2  # bps: 100 KB of burst
    # Dropped packets paid nothing: one second after the drops, the bucket is full again.
    b = RateBuckets()
    assert _passes(b, rule, 50, length=100) == 10
    b.advance(NSEC)
    assert _passes(b, rule, 50, length=100) == 10


def test_refill_comes_in_clock_steps_and_the_rate_holds_whatever_the_step():
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=1000)
    for tick in (1_000_000, 4_000_000, 10_000_000):  # HZ=1000, 250, 100
        b = RateBuckets()
        got = 0
        for _ in range(5000 // (tick // 1_000_000)):  # 5 s, 40 packets offered per ms
            got += _passes(b, rule, 40 * tick // 1_000_000)
            b.advance(tick)
        assert got == pytest.approx(100 + 5000, rel=0.01)


def test_new_limits_start_full_and_unchanged_ones_keep_their_buckets():
    b = RateBuckets()
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=10)
    assert _passes(b, rule, 5) == 1
    assert _passes(b, Rule.make(SENDER, RATE_GROUP, 4, pps=10), 5) == 0  # only the TTL changed
    assert _passes(b, Rule.make(SENDER, RATE_GROUP, 8, pps=20), 5) == 2  # a new limit: a new burst


def test_decide_drops_over_the_rate_and_monitor_counts_the_same():
    rule = Rule.make(SENDER, RATE_GROUP, 8, pps=10)
    table = {(A(SENDER), A(RATE_GROUP)): rule}
    frame = udp(SENDER, RATE_GROUP, 8)
    for mode, over in ((Mode.ENFORCE, DROP), (Mode.MONITOR, PASS)):
        b = RateBuckets()
        verdicts = [decide(frame, table, mode, within_rate=b) for _ in range(3)]
        assert [(v.action, v.reason) for v in verdicts] == [(PASS, "passed"), (over, "rate"), (over, "rate")]
        assert verdicts[1].would_drop
    # A packet over its TTL is not charged to the buckets.
    b = RateBuckets()
    assert decide(udp(SENDER, RATE_GROUP, 9), table, within_rate=b).reason == "ttl"
    assert decide(frame, table, within_rate=b).reason == "passed"


@given(pps=st.integers(0, MAX_PPS), bps=st.integers(0, MAX_BPS), gaps=st.lists(st.integers(0, 10**15), max_size=20),
       length=st.integers(14, 65535 + 22))
def test_bucket_arithmetic_never_leaves_u64(pps, bps, gaps, length):
    """RateBuckets asserts every product and sum the program computes fits in 64 bits."""
    rule = Rule(Rule.make(SENDER, RATE_GROUP, 8).key, 8, pps, bps)
    b = RateBuckets(now=2**62)
    for gap in gaps:
        b.advance(gap)
        b((rule.source, rule.group), rule, length)
    for rate, minimum in ((pps, 1), (bps, 16 * 1024 * 8)):
        size, fill = bucket(rate, minimum)
        assert size < 2**64 and fill * rate < 2**64 and length * 8 * NSEC < 2**64


# -- bindings ----------------------------------------------------------------------

from musersd.filter import Binding, DataPlaneError  # noqa: E402  (next to their tests)
from musersd.policy import Bindings  # noqa: E402
from tests.policy_cases import (  # noqa: E402
    BIND_CASES,
    BIND_IFACES,
    BIND_MOVED,
    BIND_RULES,
    BIND_SPECS,
    MAC_A,
    bind_routes,
    bound_udp,
)

MODEL_INDEXES = {name: 10 + i for i, name in enumerate(BIND_IFACES)}


def model_bindings(indexes=MODEL_INDEXES) -> Bindings:
    table = {k: Binding.make(indexes[s["iface"]] if "iface" in s else None,
                             **{p: v for p, v in s.items() if p != "iface"}) for k, s in BIND_SPECS.items()}
    return Bindings(table, bind_routes(indexes))


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.MONITOR])
def test_binding_rows_in_order(mode):
    b = model_bindings()
    got = [(c.name, *(lambda v: (v.action, v.reason))(decide(c.frame, BIND_RULES, mode, bindings=b,
                                                             ingress=MODEL_INDEXES[c.iface])))
           for c in BIND_CASES]
    want = [(c.name, c.action if mode is Mode.ENFORCE else PASS, c.reason) for c in BIND_CASES]
    assert got == want
    assert {k: b.moved.get(k, 0) for k in BIND_MOVED} == BIND_MOVED


def test_binding_rows_cover_every_binding_reason_and_every_binding():
    assert {c.reason for c in BIND_CASES} >= {"wrong_iif", "rpf_fail", "wrong_mac", "passed", "ttl"}
    assert {tuple(sorted(s)) for s in BIND_SPECS.values()} >= {("iface",), ("rpf",), ("mac",), ("learn",)}


def test_without_bindings_a_bound_rule_is_an_ordinary_rule():
    for c in BIND_CASES:
        if c.reason in ("wrong_iif", "rpf_fail", "wrong_mac"):
            assert decide(c.frame, BIND_RULES).reason == ("ttl" if "TTL" in c.name else "passed"), c.name


def test_clearing_the_learned_pair_rearms_learning():
    b = model_bindings()
    key = next(k for k, s in BIND_SPECS.items() if s == {"learn": True})
    frame_a = bound_udp(str(key[0]), str(key[1]), MAC_A)
    frame_b = bound_udp(str(key[0]), str(key[1]), "02:00:00:00:0b:0b")
    assert decide(frame_a, BIND_RULES, bindings=b, ingress=10).reason == "passed"
    assert decide(frame_b, BIND_RULES, bindings=b, ingress=10).reason == "wrong_mac"
    b.clear_learned(key)
    assert b.moved.get(key, 0) == 0
    assert decide(frame_b, BIND_RULES, bindings=b, ingress=11).reason == "passed"  # the sender moved; re-pinned
    assert b.learned[key] == (11, bytes.fromhex("02000000 0b0b"))


@pytest.mark.parametrize("mac, match", [
    ("02:00:00:00:0b", "not six hexadecimal bytes"), ("zz:00:00:00:00:01", "not six hexadecimal bytes"),
    ("01:00:5e:00:00:01", "multicast address"), ("00:00:00:00:00:00", "names no sender"),
])
def test_a_bad_mac_is_refused_in_one_sentence(mac, match):
    with pytest.raises(DataPlaneError, match=match) as exc:
        Binding.make(mac=mac)
    assert str(exc.value).count(". ") == 0


def test_a_prefix_rule_takes_no_mac():
    from mauthcore.rules import RuleKey

    key = RuleKey.make("198.51.100.0/24", "239.3.3.2")
    for bad in (Binding.make(mac=MAC_A), Binding.make(learn=True)):
        with pytest.raises(DataPlaneError, match="has no one MAC"):
            bad.check_for(key)
    Binding.make(7, rpf=True).check_for(key)  # iface and rpf are fine
    assert Binding.make("lo", rpf=True, mac="02-00-00-00-0B-0A", learn=True).flags == 0x0F
    assert Binding().empty and str(Binding()) == "unbound"
