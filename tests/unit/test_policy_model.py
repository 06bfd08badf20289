"""The pure-Python policy model against the shared case table."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musersd.maps import REASONS, Mode
from musersd.policy import DROP, PASS, decide
from tests.policy_cases import CASES, RULES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_enforce_verdict(case):
    v = decide(case.frame, RULES, Mode.ENFORCE)
    assert (v.action, v.reason, v.new_ttl) == (case.action, case.reason, case.new_ttl)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_monitor_passes_everything_with_the_same_reason(case):
    v = decide(case.frame, RULES, Mode.MONITOR)
    assert v.action == PASS
    assert v.reason == case.reason
    assert v.new_ttl is None  # monitor mode never rewrites a packet


def test_table_covers_every_reason_the_program_can_give_today():
    covered = {c.reason for c in CASES}
    assert covered == set(REASONS.values()) - {"rate"}


def test_empty_rule_table_drops_every_routable_group():
    v = decide(CASES[0].frame, {}, Mode.ENFORCE)
    assert (v.action, v.reason) == (DROP, "unauthorized")


@settings(derandomize=True, max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_always_give_a_verdict(frame):
    v = decide(frame, RULES)
    assert v.reason in REASONS.values()
    assert v.action in (PASS, DROP)
    assert (v.action == DROP) == v.would_drop


def test_sap_exception_follows_the_configured_groups():
    frame = next(c.frame for c in CASES if c.name.startswith("SAP global scope"))
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=()).reason == "unauthorized"
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=("224.2.127.254",)).reason == "sap_local"
    assert decide(frame, {}, Mode.ENFORCE, sap_groups=("239.255.255.255",)).action == DROP
