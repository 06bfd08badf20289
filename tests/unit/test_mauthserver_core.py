"""mauthserver's pure core: commands, authorize, and the per-router reconciler with a fake clock.

The reconciler is driven against `FakeRouter`, a fake that executes (a
`MemoryBackend` with an epoch and a state_id that a restart changes), so the
assertions are about what the router ends up holding.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mauthcore.protocol.backend import MemoryBackend
from mauthcore.protocol.errors import BackendInvalid, BackendUnsupported, Exists, NotFound, TableFull
from mauthcore.protocol.model import Mode
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import UNBOUND, Binding, Rule, RuleKey
from mauthserver import core
from mauthserver.core import (
    Apply,
    ApplyReceiver,
    DesiredPolicy,
    DesiredReceiver,
    DesiredRule,
    Fleet,
    FlowView,
    Install,
    Probe,
    Put,
    ReadReceivers,
    ReadRules,
    RearmRule,
    RouterCore,
    SessionView,
    SetMode,
    SetPolicy,
    Timers,
    Wait,
)

ip = ipaddress.ip_address
T = 1000.0


def dr(src="192.0.2.10", grp="239.1.1.1", ttl=8, **kw) -> DesiredRule:
    return DesiredRule(Rule.make(src, grp, ttl), **kw)


# =============================================================================
# commands
# =============================================================================


def test_add_is_idempotent_and_conflicts_need_replace():
    desired = {}
    (put,) = core.plan_add(desired, Rule.make("192.0.2.10", "239.1.1.1", 8), replace_existing=False, actor="a",
                           now=T)
    desired[put.key] = put.rule
    assert put.kind == "added" and put.rule.created == T
    assert core.plan_add(desired, Rule.make("192.0.2.10", "239.1.1.1", 8), replace_existing=False, actor="a",
                         now=T + 1) == []
    with pytest.raises(core.Conflict, match="already exists with max TTL 8"):
        core.plan_add(desired, Rule.make("192.0.2.10", "239.1.1.1", 9), replace_existing=False, actor="a", now=T)
    (change,) = core.plan_add(desired, Rule.make("192.0.2.10", "239.1.1.1", 9), replace_existing=True,
                              actor="b", now=T + 2)
    assert change.kind == "changed" and change.rule.created == T and change.rule.updated == T + 2


def test_remove_flush_and_bad_input():
    desired = {dr().key: dr()}
    assert core.plan_remove(desired, dr().key)[0].kind == "removed"
    with pytest.raises(core.NotFound):
        core.plan_remove(desired, RuleKey.make("192.0.2.11", "239.1.1.1"))
    assert len(core.plan_flush(desired)) == 1
    with pytest.raises(core.Invalid, match="not a multicast"):
        core.make_rule("192.0.2.10", "10.0.0.1", 8)
    with pytest.raises(core.Invalid, match="outside 1-255"):
        core.make_rule("192.0.2.10", "239.1.1.1", 0)


def test_session_end_removes_only_expiring_rules_of_that_session():
    desired = {r.key: r for r in [
        dr(grp="239.1.1.1", session_id="s1", expire_with_session=True),
        dr(grp="239.1.1.2", session_id="s1", expire_with_session=False),
        dr(grp="239.1.1.3", session_id="s2", expire_with_session=True),
        dr(grp="239.1.1.4"),
    ]}
    for reason in ("deleted", "timeout", "stopped"):
        assert [c.key.group for c in core.plan_session_gone(desired, "s1", reason)] == [ip("239.1.1.1")]
    assert core.plan_session_gone(desired, "s1", "evicted") == []  # the directory's memory, not the session
    assert [c.key.group for c in core.plan_revoke(desired, "s1")] == [ip("239.1.1.1"), ip("239.1.1.2")]
    with pytest.raises(core.NotFound):
        core.plan_revoke(desired, "nope")


def _by_scan(fleet: Fleet, session_id: str) -> list[DesiredRule]:
    """A session's rules found the slow way: every desired rule, sorted, filtered."""
    return [r for _, r in sorted(fleet.desired.items()) if r.session_id == session_id]


def test_the_session_index_follows_puts_moves_and_deletes():
    fleet = Fleet([dr(grp="239.1.1.1", session_id="s1"), dr(grp="239.1.1.9", session_id="s1"),
                   dr(grp="239.1.1.2", session_id="s2"), dr(grp="239.1.1.3")])
    assert [str(r.rule.group) for r in fleet.session_rules("s1").values()] == ["239.1.1.1", "239.1.1.9"]
    assert sorted(fleet.session_ids()) == ["s1", "s2"]
    # A rule re-authorized from another session moves to that session's index.
    moved = dr(grp="239.1.1.9", ttl=9, session_id="s2")
    fleet.apply([Put(moved, fleet.desired[moved.key])])
    assert list(fleet.session_rules("s1")) == [dr(grp="239.1.1.1").key]
    assert list(fleet.session_rules("s2").values()) == [fleet.desired[dr(grp="239.1.1.2").key], moved]
    # A rule replaced by a plain add-sender (no session) leaves the index; the last one removes the session.
    fleet.apply([Put(dr(grp="239.1.1.1", ttl=3), fleet.desired[dr(grp="239.1.1.1").key])])
    assert fleet.session_rules("s1") == {} and sorted(fleet.session_ids()) == ["s2"]
    fleet.apply([core.Delete(fleet.desired[dr(grp="239.1.1.2").key])])
    assert list(fleet.session_rules("s2").values()) == [moved]
    fleet.apply(core.plan_revoke(fleet.session_rules("s2"), "s2"))
    assert fleet.session_ids() == [] and set(fleet.desired) == {dr(grp="239.1.1.1").key, dr(grp="239.1.1.3").key}


@given(st.lists(st.tuples(st.integers(0, 11), st.sampled_from([None, "s1", "s2", "s3"]), st.booleans()),
                max_size=60))
def test_the_session_index_always_matches_a_scan_of_every_rule(ops):
    """Random puts (with or without a session, new or replacing) and deletes: index == full scan, in order."""
    fleet = Fleet([dr(grp=f"239.1.2.{i}", session_id="s1") for i in range(3)])
    for i, session, delete in ops:
        key = dr(grp=f"239.1.2.{i}").key
        old = fleet.desired.get(key)
        if delete:
            fleet.apply([core.Delete(old)] if old is not None else [])
        else:
            fleet.apply([Put(dr(grp=f"239.1.2.{i}", ttl=1 + i, session_id=session), old)])
        for sid in ("s1", "s2", "s3"):
            assert list(fleet.session_rules(sid).values()) == _by_scan(fleet, sid)
        assert sorted(fleet.session_ids()) == sorted({r.session_id for r in fleet.desired.values() if r.session_id})


# -- authorize -----------------------------------------------------------------

LAYERED = SessionView("abc", "layered", "192.0.2.200", ip("198.51.100.2"), (
    FlowView(ip("224.2.1.1"), 127, (ip("192.0.2.10"),)),
    FlowView(ip("224.2.1.2"), 127, ()),
    FlowView(ip("224.2.1.3"), 127, (ip("192.0.2.42"),)),
    FlowView(ip("233.252.0.1"), 15, (), (ip("192.0.2.66"),)),
))
ASM = SessionView("def", "asm", "192.0.2.55", ip("198.51.100.2"), (FlowView(ip("239.255.12.42"), 255, ()),))


def _rules(plan) -> list[tuple[str, str, int]]:
    return sorted((str(r.rule.source), str(r.rule.group), r.rule.max_ttl) for r in plan.rules)


def test_authorize_uses_the_declared_senders_and_c_ttl():
    plan = core.plan_authorize({}, LAYERED, actor="a", now=T)
    assert _rules(plan) == [("192.0.2.10", "224.2.1.1", 127), ("192.0.2.42", "224.2.1.3", 127)]
    assert {s["group"] for s in plan.skipped} == {"224.2.1.2", "233.252.0.1"}
    assert all(isinstance(c, Put) and c.rule.session_id == "abc" for c in plan.changes)
    plan = core.plan_authorize({}, LAYERED, max_ttl=16, expire_with_session=True, actor="a", now=T)
    assert {r.rule.max_ttl for r in plan.rules} == {16} and all(r.expire_with_session for r in plan.rules)


def test_any_source_needs_a_sender_and_only_suggests_origin_and_announcer():
    with pytest.raises(core.Unprocessable) as info:
        core.plan_authorize({}, ASM, actor="a", now=T)
    assert info.value.details["suggestions"] == ["192.0.2.55", "198.51.100.2"]
    assert "192.0.2.55" in info.value.message
    plan = core.plan_authorize({}, ASM, senders=["192.0.2.10"], actor="a", now=T)
    assert _rules(plan) == [("192.0.2.10", "239.255.12.42", 255)]


def test_given_senders_apply_to_every_group_except_where_excluded():
    plan = core.plan_authorize({}, LAYERED, senders=["192.0.2.66", "192.0.2.7"], actor="a", now=T)
    groups = {(str(r.rule.source), str(r.rule.group)) for r in plan.rules}
    assert ("192.0.2.66", "233.252.0.1") not in groups  # the session excludes it there
    assert ("192.0.2.7", "233.252.0.1") in groups and ("192.0.2.66", "224.2.1.2") in groups
    assert any("excludes 192.0.2.66" in s["reason"] for s in plan.skipped)


def test_authorize_skips_what_cannot_be_a_rule_and_refuses_when_nothing_is_left():
    no_ttl = SessionView("x", "pulse", "192.0.2.50", ip("192.0.2.50"),
                         (FlowView(ip("239.1.2.3"), None, ()), FlowView(ip("224.0.0.56"), None, ()),
                          FlowView(ip("ff0e::1"), None, ())))
    with pytest.raises(core.Unprocessable, match="no rule"):
        core.plan_authorize({}, no_ttl, senders=["192.0.2.50"], actor="a", now=T)
    plan = core.plan_authorize({}, no_ttl, senders=["192.0.2.50"], max_ttl=4, actor="a", now=T)
    assert _rules(plan) == [("192.0.2.50", "239.1.2.3", 4)]
    assert len(plan.skipped) == 2  # link-local control group, IPv6
    with pytest.raises(core.Invalid):
        core.plan_authorize({}, ASM, senders=["not-an-address"], actor="a", now=T)


def test_authorize_keeps_identical_rules_and_refuses_silent_overwrites():
    manual = dr("192.0.2.10", "224.2.1.1", 127)
    plan = core.plan_authorize({manual.key: manual}, LAYERED, actor="a", now=T)
    kept = {r.key: r for r in plan.rules}[manual.key]
    assert kept is manual and len(plan.changes) == 1  # provenance of the manual rule kept
    other = dr("192.0.2.10", "224.2.1.1", 5)
    with pytest.raises(core.Conflict):
        core.plan_authorize({other.key: other}, LAYERED, actor="a", now=T)
    plan = core.plan_authorize({other.key: other}, LAYERED, replace_existing=True, actor="a", now=T)
    assert {r.key: r.rule.max_ttl for r in plan.rules}[other.key] == 127


# =============================================================================
# the reconciler
# =============================================================================


class FakeRouter:
    """musersd in miniature: a MemoryBackend, an epoch, a state_id, and a switch to make it unreachable."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.backend = MemoryBackend(capacity=capacity)
        self.epoch, self.state_id = 1, 100
        self.up = True
        self.calls: list[str] = []
        self.recv_calls: list[str] = []  # the receiver actions, apart, so that `calls` reads as before

    def restart(self, *, lose_rules: bool) -> None:
        self.epoch += 1
        if lose_rules:
            self.backend = MemoryBackend(capacity=self.capacity)
            self.state_id += 1


def run(core_: RouterCore, router: FakeRouter, fleet: Fleet, now: float, limit: int = 10000) -> Wait:
    """Execute the core's actions on the fake router until it waits (or the router is down)."""
    for _ in range(limit):
        action = core_.next_action(fleet.desired, fleet.mode, now)
        if isinstance(action, Wait):
            core_.refresh_status(fleet.desired, fleet.mode)  # as the shell does when it goes idle
            return action
        router.calls.append(type(action).__name__ if not isinstance(action, Apply) else type(action.op).__name__)
        if not router.up:
            core_.on_unreachable("no answer", now)
            continue
        b = router.backend
        if isinstance(action, Probe):
            if core_.epoch != router.epoch:  # first contact, or STALE_EPOCH: the client core says HELLO
                core_.on_hello(router.epoch, router.state_id, len(b.rules), b.mode, "memory", now)
            core_.on_probe(b.counters(), now)
        elif isinstance(action, ReadRules):
            core_.on_listed(b.list(b"", 100000).items, fleet.desired, now)
        elif isinstance(action, SetMode):
            b.set_mode(action.mode)
            core_.on_mode(b.mode, now)
        elif isinstance(action, RearmRule):
            try:
                b.rearm(action.key)
            except (NotFound, BackendInvalid) as exc:
                core_.on_rearmed(action.key, now, refused=str(exc))
                continue
            core_.on_rearmed(action.key, now)
        elif isinstance(action, (ReadReceivers, ApplyReceiver, SetPolicy)):
            router.calls.pop()
            router.recv_calls.append(type(action).__name__)
            serve_receivers(core_, b, action, now)
        elif isinstance(action, Apply):
            op = action.op
            try:
                if isinstance(op, Install):
                    b.replace(op.rule)
                else:
                    b.remove(op.key)
            except NotFound:
                pass
            except TableFull as exc:
                core_.on_refused(op, f"TABLE_FULL: {exc}", now)
                continue
            except (BackendUnsupported, BackendInvalid) as exc:  # as the fan-out sees UNSUPPORTED, INVALID_ARGUMENT
                core_.on_refused(op, f"{type(exc).__name__}: {exc}", now)
                continue
            core_.on_done(op, now)
    raise AssertionError("the reconciler never went idle")


def serve_receivers(core_: RouterCore, b: MemoryBackend, action, now: float) -> None:
    """A receiver action on the fake router, answered as the fan-out classifies musersd's replies."""
    if isinstance(action, ReadReceivers):
        if b.receiver_capacity == 0:  # stands for a filter without a receiver half: UNSUPPORTED
            core_.on_receivers_unsupported("UNSUPPORTED: this filter does not judge joins", now)
            return
        core_.on_receivers_listed(b.list_receivers(b"", 100000).items, b.receiver_policy(None), now)
    elif isinstance(action, ApplyReceiver):
        try:
            b.add_receiver(action.rule) if action.add else b.remove_receiver(action.rule)
        except (Exists, NotFound):
            pass
        except (BackendInvalid, TableFull) as exc:
            core_.on_receiver_refused(action, f"INVALID_ARGUMENT: {exc}", now)
            return
        core_.on_receiver_done(action, now)
    else:
        try:
            ifaces = b.receiver_policy(action.policy)
        except BackendInvalid as exc:
            core_.on_policy_refused(action.policy, f"INVALID_ARGUMENT: {exc}", now)
            return
        core_.on_policy(ifaces, now)


def held(router: FakeRouter) -> dict[RuleKey, int]:
    return {k: r.max_ttl for k, r in router.backend.rules.items()}


def want(fleet: Fleet) -> dict[RuleKey, int]:
    return {k: r.rule.max_ttl for k, r in fleet.desired.items()}


def make(n: int = 5, timers: Timers | None = None) -> tuple[Fleet, RouterCore, FakeRouter]:
    fleet = Fleet([dr(grp=f"239.1.1.{i + 1}") for i in range(n)])
    rc = RouterCore("r1", "192.0.2.1", 7575, timers or Timers(probe_interval=5, verify_interval=60,
                                                            retry_base=1, retry_max=8))
    fleet.add_router(rc)
    return fleet, rc, FakeRouter()


def test_converges_and_removes_what_is_not_desired():
    fleet, rc, router = make(5)
    stray = Rule.make("192.0.2.99", "239.9.9.9", 3)
    router.backend.rules[stray.key] = stray  # e.g. added directly with mauthctl --router
    wait = run(rc, router, fleet, T)
    assert held(router) == want(fleet)
    assert router.calls[:2] == ["Probe", "ReadRules"]  # first contact is always verified
    assert router.calls.count("Uninstall") == 1 and router.calls.count("Install") == 5
    assert rc.status == core.UP and rc.pending(fleet.desired) == 0
    assert wait.until == T + 5  # next HELLO probe


def test_changes_after_convergence_are_applied_incrementally():
    fleet, rc, router = make(3)
    run(rc, router, fleet, T)
    router.calls.clear()
    changes = core.plan_add(fleet.desired, Rule.make("192.0.2.10", "239.1.1.1", 20), replace_existing=True,
                            actor="a", now=T)
    changes += core.plan_remove(fleet.desired, RuleKey.make("192.0.2.10", "239.1.1.2"))
    fleet.apply(changes)
    assert rc.pending(fleet.desired) == 2
    run(rc, router, fleet, T + 1)
    assert router.calls == ["Install", "Uninstall"]  # no LIST, no probe: nothing suggested a restart
    assert held(router) == want(fleet)


def test_router_restart_without_losing_rules_is_checked_not_rewritten():
    fleet, rc, router = make(4)
    run(rc, router, fleet, T)
    router.restart(lose_rules=False)
    router.calls.clear()
    run(rc, router, fleet, T + 5)  # the probe is due
    assert router.calls == ["Probe", "ReadRules"]
    assert rc.counters["restarts_seen"] == 1 and rc.counters["state_losses"] == 0


def test_router_that_lost_its_rules_gets_them_back_without_being_asked():
    fleet, rc, router = make(6)
    run(rc, router, fleet, T)
    router.restart(lose_rules=True)
    assert held(router) == {}
    run(rc, router, fleet, T + 4.9)
    assert held(router) == {}  # the probe is not due yet
    run(rc, router, fleet, T + 5)
    assert held(router) == want(fleet)
    assert rc.counters["state_losses"] == 1


def test_drift_behind_our_back_is_noticed_by_the_rule_count():
    fleet, rc, router = make(3)
    run(rc, router, fleet, T)
    del router.backend.rules[next(iter(router.backend.rules))]  # someone removed a rule directly
    run(rc, router, fleet, T + 5)
    assert held(router) == want(fleet) and rc.counters["drifts"] == 1


def test_periodic_verification_catches_a_changed_ttl():
    fleet, rc, router = make(2, Timers(probe_interval=5, verify_interval=30))
    run(rc, router, fleet, T)
    key = next(iter(router.backend.rules))
    router.backend.rules[key] = Rule(key, 99)  # same count, other TTL: only a LIST sees it
    run(rc, router, fleet, T + 10)
    assert router.backend.rules[key].max_ttl == 99
    run(rc, router, fleet, T + 30)
    assert held(router) == want(fleet)


def test_unreachable_router_backs_off_exponentially_then_recovers():
    fleet, rc, router = make(2)
    router.up = False
    waits = []
    now = T
    for _ in range(6):
        wait = run(rc, router, fleet, now)
        waits.append(round(wait.until - now, 3))
        now = wait.until
    assert waits == [1, 2, 4, 8, 8, 8]  # retry_base 1, doubling, capped at retry_max 8 (jitter 0.5: x1)
    assert rc.status == core.DOWN and rc.failures == 6
    router.up = True
    run(rc, router, fleet, now)
    assert held(router) == want(fleet) and rc.status == core.UP and rc.failures == 0


def test_refused_rules_are_not_retried_until_they_change():
    fleet, rc, router = make(0)
    router.backend.capacity = 2
    fleet.apply([Put(dr(grp=f"239.1.1.{i + 1}")) for i in range(3)])
    run(rc, router, fleet, T)
    assert len(router.backend.rules) == 2 and len(rc.refused) == 1
    refused_key = next(iter(rc.refused))
    state = rc.rule_state(fleet.desired[refused_key])
    assert state["state"] == "refused" and "TABLE_FULL" in state["error"]
    router.calls.clear()
    run(rc, router, fleet, T + 1)
    assert router.calls == []  # no retry loop
    # Room is made by removing another rule: the next verification retries the refused one.
    other = next(k for k in fleet.desired if k != refused_key)
    fleet.apply(core.plan_remove(fleet.desired, other))
    run(rc, router, fleet, T + 61)
    assert held(router) == want(fleet)


def test_desired_mode_is_enforced_on_the_router():
    fleet, rc, router = make(1)
    fleet.mode = Mode.MONITOR
    run(rc, router, fleet, T)
    assert router.backend.mode == Mode.MONITOR and "SetMode" in router.calls


def test_state_believed_from_the_store_is_verified_first():
    fleet, _, router = make(2)
    believed = {k: (8, 0, 0, UNBOUND) for k in fleet.desired}
    rc = RouterCore("r2", "192.0.2.1", 7575, applied=believed)
    fleet.add_router(rc)
    assert rc.rule_state(next(iter(fleet.desired.values()))) == {"state": "applied", "verified": False}
    run(rc, router, fleet, T)  # the router is actually empty
    assert held(router) == want(fleet)
    assert rc.rule_state(next(iter(fleet.desired.values())))["state"] == "applied"


def test_a_change_made_while_an_operation_is_in_flight_is_not_lost():
    fleet, rc, router = make(1)
    run(rc, router, fleet, T)
    key = next(iter(fleet.desired))
    fleet.apply(core.plan_add(fleet.desired, Rule(key, 20), replace_existing=True, actor="a", now=T))
    action = rc.next_action(fleet.desired, None, T)
    assert action == Apply(Install(Rule(key, 20)))
    # While the REPLACE is on the wire, the operator changes the rule again...
    fleet.apply(core.plan_add(fleet.desired, Rule(key, 30), replace_existing=True, actor="a", now=T))
    router.backend.replace(action.op.rule)
    rc.on_done(action.op, T)  # ...and the answer to the first change arrives.
    run(rc, router, fleet, T)
    assert held(router) == {key: 30}


# =============================================================================
# bound rules: each router holds the rule resolved for it
# =============================================================================

MAC = "02:00:5e:10:00:01"
PINNED = ("eth1", bytes.fromhex("02005e10aaaa"))


def bound(iface: str = "r1=eth1", *, ttl: int = 8, **kw) -> DesiredRule:
    return DesiredRule(Rule.make("192.0.2.10", "239.1.1.1", ttl, binding=Binding.make(iface, **kw)))


def two_routers(rule: DesiredRule) -> tuple[Fleet, dict[str, RouterCore], dict[str, FakeRouter]]:
    fleet = Fleet([rule])
    cores = {n: RouterCore(n, "192.0.2.1", 7575, Timers(probe_interval=5, verify_interval=60)) for n in ("r1", "r2")}
    for rc in cores.values():
        fleet.add_router(rc)
    return fleet, cores, {n: FakeRouter() for n in cores}


def test_each_router_gets_the_binding_resolved_for_it():
    """"r1=eth1": r1 is the sender's first hop (interface, MAC, learning), r2 checks the reverse path only."""
    rule = bound(rpf=True, mac=MAC, learn=True)
    fleet, cores, routers = two_routers(rule)
    for n in cores:
        run(cores[n], routers[n], fleet, T)
    assert routers["r1"].backend.rules[rule.key].binding == Binding("eth1", True, bytes.fromhex("02005e100001"), True)
    assert routers["r2"].backend.rules[rule.key].binding == Binding(rpf=True)
    for n, rc in cores.items():
        assert rc.pending(fleet.desired) == 0 and rc.status == core.UP
        assert rc.rule_state(rule)["state"] == "applied"
        assert rc.applied[rule.key] == core.held(routers[n].backend.rules[rule.key])
    # Verified again with LIST: what each router holds is what it should, so nothing is re-installed.
    for n in cores:
        routers[n].calls.clear()
        run(cores[n], routers[n], fleet, T + 61)
        assert "Install" not in routers[n].calls


def test_a_router_holding_another_binding_is_corrected_with_replace():
    rule = bound(rpf=True)
    fleet, cores, routers = two_routers(rule)
    # r1 holds the rule with the same terms but unbound, r2 with r1's interface: both differ only in binding.
    routers["r1"].backend.rules[rule.key] = Rule.make("192.0.2.10", "239.1.1.1", 8)
    routers["r2"].backend.rules[rule.key] = Rule.make("192.0.2.10", "239.1.1.1", 8,
                                                      binding=Binding.make("eth1", rpf=True))
    for n in cores:
        run(cores[n], routers[n], fleet, T)
        assert routers[n].calls.count("Install") == 1
        assert ("replace", rule.rule.on(n)) in routers[n].backend.log
        assert routers[n].backend.rules[rule.key] == rule.rule.on(n)
    # A change of the binding alone is a change: one REPLACE on each router whose resolved binding moved.
    fleet.apply(core.plan_add(fleet.desired, bound("r1=eth2,r2=eth1", rpf=True).rule, replace_existing=True,
                              actor="a", now=T + 1))
    for n in cores:
        routers[n].calls.clear()
        run(cores[n], routers[n], fleet, T + 1)
        assert routers[n].calls == ["Install"]
    assert routers["r1"].backend.rules[rule.key].binding.iface == "eth2"
    assert routers["r2"].backend.rules[rule.key].binding.iface == "eth1"
    # A change that only moves routers not named elsewhere (r3) changes nothing on r1 and r2.
    fleet.apply(core.plan_add(fleet.desired, bound("r1=eth2,r2=eth1,r3=eth9", rpf=True).rule,
                              replace_existing=True, actor="a", now=T + 2))
    for n in cores:
        routers[n].calls.clear()
        run(cores[n], routers[n], fleet, T + 2)
        assert routers[n].calls == []


class NfqueueLike(MemoryBackend):
    """A router whose filter cannot bind (musersd on NFQUEUE): a bound rule is UNSUPPORTED."""

    def replace(self, rule: Rule) -> bool:
        if rule.bound:
            raise BackendUnsupported("the NFQUEUE filter cannot bind a rule to an interface or MAC")
        return super().replace(rule)


def test_a_router_refusing_a_bound_rule_is_reported_and_not_retried():
    rule = bound("eth1")
    fleet, cores, routers = two_routers(rule)
    routers["r2"].backend = NfqueueLike()
    for n in cores:
        run(cores[n], routers[n], fleet, T)
    assert cores["r1"].rule_state(rule)["state"] == "applied"
    state = cores["r2"].rule_state(rule)
    assert state["state"] == "refused" and "NFQUEUE" in state["error"]
    assert cores["r2"].status == core.UP and cores["r2"].pending(fleet.desired) == 0
    routers["r2"].calls.clear()
    run(cores["r2"], routers["r2"], fleet, T + 1)
    assert routers["r2"].calls == []  # no retry loop
    # Unbinding the rule is a change: r2 takes it.
    fleet.apply(core.plan_add(fleet.desired, Rule.make("192.0.2.10", "239.1.1.1", 8), replace_existing=True,
                              actor="a", now=T + 2))
    run(cores["r2"], routers["r2"], fleet, T + 2)
    assert cores["r2"].rule_state(fleet.desired[rule.key])["state"] == "applied"


def test_rearm_reaches_the_learning_routers_once_they_hold_the_rule():
    rule = bound(learn=True)
    fleet, cores, routers = two_routers(rule)
    for rc in cores.values():
        rc.rearm(rule.key)  # asked before the rule is even installed: sent once it is
    assert cores["r1"].next_action(fleet.desired, None, T) == Probe()
    for n in cores:
        run(cores[n], routers[n], fleet, T)
    log1 = [op for op, _ in routers["r1"].backend.log]
    assert log1.index("replace") < log1.index("rearm") and log1.count("rearm") == 1
    assert "rearm" not in [op for op, _ in routers["r2"].backend.log]  # r2 does not learn: nothing asked
    assert cores["r1"].counters["rearms"] == 1 and not cores["r1"].rearms and not cores["r2"].rearms
    # What the router learnt shows in the rule's state after a LIST; a re-arm makes it forget.
    routers["r1"].backend.learned[rule.key] = (PINNED, 3)
    run(cores["r1"], routers["r1"], fleet, T + 61)
    state = cores["r1"].rule_state(rule)
    assert state["moved"] == 3 and state["learned"] == {"iface": "eth1", "mac": "02:00:5e:10:aa:aa"}
    assert "moved" not in cores["r2"].rule_state(rule)  # r2 holds it unbound: "r1=eth1" without rpf leaves r2 nothing
    cores["r1"].rearm(rule.key)
    run(cores["r1"], routers["r1"], fleet, T + 62)
    assert rule.key not in routers["r1"].backend.learned
    # A router that answers NOT_FOUND (the rule went behind our back) ends the request, reported.
    del routers["r1"].backend.rules[rule.key]
    cores["r1"].rearm(rule.key)
    assert isinstance(cores["r1"].next_action(fleet.desired, None, T + 63), RearmRule)
    run(cores["r1"], routers["r1"], fleet, T + 63)
    assert not cores["r1"].rearms and "no rule" in cores["r1"].last_error


# =============================================================================
# receivers: rules and interface policies reconciled like sender rules
# =============================================================================

R_ALL = ReceiverRule.make("10.1.0.0/24", "239.1.0.0/16")
R_ETH1 = ReceiverRule.make("10.1.0.7", "232.1.1.1", "192.0.2.10", "eth1")
R_ETH9 = ReceiverRule.make("10.1.0.0/24", "239.2.0.0/16", iface="eth9")  # an interface r1 does not guard


def receiving(*rules: ReceiverRule, policies=()) -> tuple[Fleet, RouterCore, FakeRouter]:
    fleet = Fleet([], receivers=[DesiredReceiver(r, T, "t") for r in rules], policies=policies)
    rc = RouterCore("r1", "192.0.2.1", 7575, Timers(probe_interval=5, verify_interval=60, retry_base=1,
                                                    retry_max=8))
    fleet.add_router(rc)
    return fleet, rc, FakeRouter()


def test_receivers_converge_per_router_and_a_missing_interface_is_refused_there_only():
    closed = DesiredPolicy("", IfacePolicy.make("eth1", "closed", 20))
    missing = DesiredPolicy("r1", IfacePolicy.make("eth9", "monitor"))
    elsewhere = DesiredPolicy("", IfacePolicy.make("eth7", "closed"))  # no router here has eth7: left alone
    fleet, rc, router = receiving(R_ALL, R_ETH1, R_ETH9, policies=[closed, missing, elsewhere])
    stray = ReceiverRule.make("10.9.0.0/16", "239.9.0.0/16")
    router.backend.receivers[stray] = (3, 0)  # e.g. added directly with mauthctl --router
    run(rc, router, fleet, T)
    assert set(router.backend.receivers) == {R_ALL, R_ETH1}
    assert router.recv_calls[0] == "ReadReceivers"
    assert router.recv_calls.count("ApplyReceiver") == 4  # the stray out, three in (one refused)
    assert rc.receiver_state(R_ALL)["state"] == "applied" and rc.receiver_state(R_ETH1)["state"] == "applied"
    refused = rc.receiver_state(R_ETH9)
    assert refused["state"] == "refused" and "eth9" in refused["error"]
    assert router.backend.policies["eth1"] == closed.policy
    assert rc.policy_refused["eth9"][0] == missing.policy
    assert not rc.receivers_pending() and rc.status == core.UP
    router.recv_calls.clear()
    run(rc, router, fleet, T + 1)  # refused for good: not retried until it changes
    assert router.recv_calls == []


def test_a_receiver_change_reaches_the_router_and_a_refused_rule_is_retried_when_made_again():
    fleet, rc, router = receiving(R_ALL, R_ETH9)
    run(rc, router, fleet, T)
    fleet.drop_receiver(R_ALL)
    fleet.put_receiver(DesiredReceiver(R_ETH1, T, "t"))
    run(rc, router, fleet, T + 1)
    assert set(router.backend.receivers) == {R_ETH1}
    router.backend.ifaces += ("eth9",)  # the interface came: the rule, removed and added again, is retried
    fleet.drop_receiver(R_ETH9)
    fleet.put_receiver(DesiredReceiver(R_ETH9, T, "t"))
    run(rc, router, fleet, T + 2)
    assert set(router.backend.receivers) == {R_ETH1, R_ETH9}
    fleet.put_policy(DesiredPolicy("r1", IfacePolicy.make("eth1", "monitor", 5)))
    run(rc, router, fleet, T + 3)
    assert router.backend.policies["eth1"] == IfacePolicy.make("eth1", "monitor", 5)


def test_receivers_are_read_again_after_a_lost_state_or_an_outage():
    fleet, rc, router = receiving(R_ALL, policies=[DesiredPolicy("", IfacePolicy.make("eth1", "closed"))])
    run(rc, router, fleet, T)
    router.restart(lose_rules=True)  # a new state_id: the tables were recreated empty
    run(rc, router, fleet, T + 10)
    assert set(router.backend.receivers) == {R_ALL}
    assert router.backend.policies["eth1"].mode.name == "CLOSED"
    router.backend.receivers.clear()  # changed behind our back while we could not reach it
    router.up = False
    run(rc, router, fleet, T + 20)
    router.up = True
    router.recv_calls.clear()
    run(rc, router, fleet, T + 40)
    assert router.recv_calls[0] == "ReadReceivers" and set(router.backend.receivers) == {R_ALL}


def test_a_router_without_receivers_shows_every_rule_refused_and_is_sent_nothing():
    fleet, rc, router = receiving(R_ALL, policies=[DesiredPolicy("", IfacePolicy.make("eth1", "closed"))])
    router.backend.receiver_capacity = 0
    run(rc, router, fleet, T)
    assert router.recv_calls == ["ReadReceivers"]
    state = rc.receiver_state(R_ALL)
    assert state["state"] == "refused" and "UNSUPPORTED" in state["error"]
    assert rc.status == core.UP and rc.to_dict(fleet.desired, None, T, lambda t: t)["receivers"]["unsupported"]


def test_a_periodic_verification_reads_receivers_again_without_the_router_going_converging():
    fleet, rc, router = receiving(R_ALL)
    run(rc, router, fleet, T)
    assert rc.status == core.UP
    stray = ReceiverRule.make("10.9.0.0/16", "239.9.0.0/16")
    router.backend.receivers[stray] = (0, 0)  # added behind the mediator's back
    rc.on_listed(router.backend.list(b"", 100000).items, fleet.desired, T + 100)  # the periodic LIST
    assert rc.refresh_status(fleet.desired) == core.UP  # still what it was: not converging meanwhile
    router.recv_calls.clear()
    run(rc, router, fleet, T + 100)
    assert router.recv_calls[:2] == ["ReadReceivers", "ApplyReceiver"] and set(router.backend.receivers) == {R_ALL}
