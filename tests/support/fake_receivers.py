"""An in-memory receiver half of a filter, exactly the Filter API's receiver methods (musersd/filter.py).

Strategy: what the XDP data plane's receiver maps hold (rules with their hit
counters, per-interface policies and counters, the joined-groups and
denied-receivers tables), kept in dicts, with the same refusals: Exists,
NotFound, TableFull (MAX_RECEIVER_RULES), InvalidReceiver for an interface
not guarded. Times are CLOCK_MONOTONIC nanoseconds from `clock`, as the
kernel's stamps are; tests set hits, counters, joins and refusals directly
(`hit`, `join`, `leave`, `refuse`), since no packet is judged here.
`FakeReceivingDataPlane` is tests/support/fake_dataplane.py's data plane with
this half, the shape of the XDP filter the backend and the daemon drive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import RECV_COUNTERS
from mauthcore.receivers import MAX_RECEIVER_RULES, IfacePolicy, ReceiverRule
from mauthcore.rules import IPAddress
from musersd.filter import DeniedJoin, IfaceReceivers, InvalidReceiver, JoinedGroup, ReceiverStats
from tests.support.fake_dataplane import FakeDataPlane


class FakeReceivers:
    """The receiver methods of a filter (`receives` True), in memory."""

    receives = True

    def __init__(self, ifaces: Iterable[str] = ("eth1", "eth2"), *, capacity: int = MAX_RECEIVER_RULES,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.guarded = tuple(ifaces)
        self.receiver_capacity = capacity
        self.clock = clock
        self.held: dict[ReceiverRule, ReceiverStats] = {}
        self.policies: dict[str, IfacePolicy] = {name: IfacePolicy(name) for name in self.guarded}
        self.iface_counters: dict[str, dict[str, int]] = {name: dict.fromkeys(RECV_COUNTERS, 0)
                                                          for name in self.guarded}
        # (iface, group) -> [reporter, first_seen, last_seen, reports, left_at (0: not left)]
        self.groups: dict[tuple[str, IPAddress], list] = {}
        self.refused: list[DeniedJoin] = []
        self.calls: list[tuple[str, object]] = []

    # -- the Filter API -------------------------------------------------------

    def add_receiver(self, rule: ReceiverRule) -> None:
        self.calls.append(("add_receiver", rule))
        self._check(rule)
        if rule in self.held:
            raise Exists(f"the receiver rule {rule} is held already")
        if len(self.held) >= self.receiver_capacity:
            raise TableFull(f"the receiver rule table is full ({self.receiver_capacity} rules)")
        self.held[rule] = ReceiverStats(rule)

    def remove_receiver(self, rule: ReceiverRule) -> None:
        self.calls.append(("remove_receiver", rule))
        if self.held.pop(rule, None) is None:
            raise NotFound(f"no receiver rule {rule}")

    def receiver_rules(self) -> list[ReceiverStats]:
        return [self.held[r] for r in sorted(self.held)]

    def apply_receivers(self, wanted: Iterable[ReceiverRule]) -> tuple[int, int]:
        wanted = list(dict.fromkeys(wanted))
        self.calls.append(("apply_receivers", tuple(wanted)))
        for rule in wanted:
            self._check(rule)
        if len(wanted) > self.receiver_capacity:
            raise TableFull(f"the receiver rule table is full ({self.receiver_capacity} rules)")
        gone = [r for r in self.held if r not in wanted]
        new = [r for r in wanted if r not in self.held]
        for rule in gone:
            del self.held[rule]
        for rule in new:
            self.held[rule] = ReceiverStats(rule)
        return len(new), len(gone)

    def set_receiver_policy(self, policy: IfacePolicy) -> None:
        self.calls.append(("set_receiver_policy", policy))
        if policy.iface not in self.guarded:
            raise InvalidReceiver(f"interface {policy.iface} is not one this router guards")
        self.policies[policy.iface] = policy

    def receiver_policies(self) -> list[IfaceReceivers]:
        return [IfaceReceivers(self.policies[name], sum(1 for i, _ in self.groups if i == name),
                               dict(self.iface_counters[name])) for name in self.guarded]

    def denied_joins(self) -> list[DeniedJoin]:
        return list(self.refused)

    def clear_denied_joins(self) -> int:
        n = len(self.refused)
        self.refused.clear()
        return n

    def joined_groups(self) -> list[JoinedGroup]:
        return [JoinedGroup(iface, group, reporter, first, last, reports, bool(left and left > last))
                for (iface, group), (reporter, first, last, reports, left) in sorted(
                    self.groups.items(), key=lambda kv: (kv[0][0], kv[0][1].version, kv[0][1].packed))]

    def sweep_groups(self, timeout_ns: int, grace_ns: int) -> int:
        self.calls.append(("sweep_groups", (timeout_ns, grace_ns)))
        now = self.clock()
        stale = [k for k, (_, _, last, _, left) in self.groups.items()
                 if now - last > timeout_ns or (left > last and now - left > grace_ns)]
        for key in stale:
            del self.groups[key]
        return len(stale)

    # -- what packets would have done ----------------------------------------------

    def hit(self, rule: ReceiverRule, n: int = 1) -> None:
        stats = self.held[rule]
        self.held[rule] = ReceiverStats(rule, stats.matched + n, self.clock())

    def join(self, iface: str, group: IPAddress, reporter: IPAddress) -> None:
        now = self.clock()
        entry = self.groups.setdefault((iface, group), [reporter, now, now, 0, 0])
        entry[0], entry[2], entry[3] = reporter, now, entry[3] + 1

    def leave(self, iface: str, group: IPAddress) -> None:
        self.groups[(iface, group)][4] = self.clock()

    def refuse(self, entry: DeniedJoin) -> None:
        self.refused.append(entry)

    def _check(self, rule: ReceiverRule) -> None:
        if rule.iface and rule.iface not in self.guarded:
            raise InvalidReceiver(f"interface {rule.iface} is not one this router guards")


class FakeReceivingDataPlane(FakeDataPlane, FakeReceivers):
    """The fake data plane with a receiver half: what the XDP filter offers the backend and the daemon."""

    def __init__(self, *args: object, ifaces: Iterable[str] = ("eth1", "eth2"),
                 clock: Callable[[], int] = time.monotonic_ns, **kw: object) -> None:
        FakeDataPlane.__init__(self, *args, **kw)  # type: ignore[arg-type]  # FakeDataPlane's own options
        FakeReceivers.__init__(self, ifaces, clock=clock)

    def apply(self, wanted: Iterable) -> tuple[int, int, int]:
        """The rule file's sender rules, as DataPlane.apply() makes them the whole table."""
        from musersd.filter import plan

        current = {key: entry.rule for key in self.rule_keys() if (entry := self.get_rule(key)) is not None}
        p = plan(current, wanted, self.max_rules)
        for key in p.remove:
            self.remove_rule(key)
        for rule in p.replace:
            self.replace_rule(rule)
        for rule in p.add:
            self.add_rule(rule)
        return len(p.add), len(p.replace), len(p.remove)
