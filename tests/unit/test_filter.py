"""What both filters share (musersd/filter.py): the interface, the bounds and apply()'s difference."""

from __future__ import annotations

import inspect

import pytest

from mauthcore.protocol.errors import TableFull
from mauthcore.rules import Rule, RuleKey
from musersd import filter as flt
from musersd.dataplane import DataPlane
from musersd.nfqueue import NfqueueFilter


@pytest.mark.parametrize("impl", [DataPlane, NfqueueFilter])
def test_both_filters_implement_the_whole_interface_with_its_signatures(impl, tmp_path):
    instance = impl(tmp_path)  # neither loads nor opens anything yet
    wanted = {n for n in vars(flt.Filter) if not n.startswith("_")} | set(flt.Filter.__annotations__)
    assert wanted - set(dir(instance)) == set()
    for name in wanted:
        declared = getattr(flt.Filter, name, None)
        if callable(declared) and not isinstance(declared, property):
            got = inspect.signature(getattr(impl, name))
            assert list(got.parameters) == list(inspect.signature(declared).parameters), name


def test_the_filters_say_which_families_they_hold():
    assert DataPlane.families == (4, 6)
    assert NfqueueFilter.families == (4,)
    assert flt.family_name(NfqueueFilter.families) == "IPv4"


R1 = Rule.make("10.0.0.1", "239.1.1.1", 5)
R2 = Rule.make("10.0.0.2", "239.1.1.1", 5)
R3 = Rule.make("10.0.0.0/24", "239.1.1.2", 8)


def test_plan_adds_replaces_and_removes_only_the_difference():
    current = {R1.key: R1, R2.key: R2}
    changed = Rule.make("10.0.0.2", "239.1.1.1", 9)
    diff = flt.plan(current, [R1, changed, R3], capacity=10)
    assert diff.add == [R3]
    assert diff.replace == [changed]
    assert diff.remove == []
    diff = flt.plan(current, [R3], capacity=10)
    assert diff.add == [R3] and diff.replace == [] and sorted(diff.remove) == sorted([R1.key, R2.key])
    assert flt.plan(current, [R1, R2], capacity=2) == flt.Plan([], [], [])


def test_plan_validates_everything_before_anything_changes():
    with pytest.raises(TableFull, match=r"the rule table is full \(2 rules\)"):
        flt.plan({}, [R1, R2, R3], capacity=2)
    with pytest.raises(flt.DataPlaneError, match="TTL|ttl"):
        flt.plan({}, [R1, ("10.0.0.3", "239.1.1.1", 300)], capacity=10)
    with pytest.raises(flt.DataPlaneError, match="is not a"):
        flt.plan({}, [("10.0.0.3",)], capacity=10)


def test_plan_keys_by_the_filters_own_key():
    pair = lambda k: (k.source, k.group)  # noqa: E731  (NfqueueFilter's key)
    diff = flt.plan({pair(R1.key): R1}, [R2], capacity=5, key=pair)
    assert diff.add == [R2] and diff.remove == [pair(R1.key)]


@pytest.mark.parametrize("rules,denied,message", [
    (0, None, "max rules 0 is outside 1-16777216"),
    (16 * 1024 * 1024 + 1, None, "is outside 1-16777216"),
    (None, 15, "denied table size 15 is outside 16-1048576"),
    (None, 1024 * 1024 + 1, "is outside 16-1048576"),
])
def test_sizes_outside_the_bounds_are_refused_alike_by_both(rules, denied, message, tmp_path):
    with pytest.raises(flt.DataPlaneError, match=message):
        flt.check_sizes(rules, denied)
    with pytest.raises(flt.DataPlaneError, match=message):
        DataPlane(tmp_path, max_rules=rules, max_denied=denied)
    with pytest.raises(flt.DataPlaneError, match=message):
        NfqueueFilter(tmp_path, max_rules=rules, max_denied=denied)


def test_keys_and_rules_from_arguments():
    assert flt.as_rule(("10.0.0.1", "239.1.1.1", 5)) == R1
    assert flt.as_key(R1) == R1.key
    assert flt.as_key(("10.0.0.1", "239.1.1.1")) == R1.key
    assert isinstance(flt.as_key(R1.key), RuleKey)
    with pytest.raises(flt.DataPlaneError):
        flt.as_key(("not an address", "239.1.1.1"))
