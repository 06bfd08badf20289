"""What the protocol server executes commands on, and a fake that really executes.

Strategy: the server core never touches the data plane; it calls a `Backend`.
A backend raises the typed `CommandError`s of `errors.py` (Exists, NotFound,
TableFull, BadCursor, BackendUnsupported, BackendFailure), each carrying the
reply code the server answers with. Any other exception is a bug: the server
logs it and answers that one request INTERNAL, and goes on serving the others
(a request must never be able to stop a router's daemon).

`MemoryBackend` is a fake that executes (after faucet's FakeOFTable): a dict
of rules with a capacity, counters that tests set, and a log of every call so
that tests can assert "each command executed exactly once".
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mauthcore.protocol.errors import BackendInvalid, Exists, NotFound, TableFull
from mauthcore.protocol.model import (
    RECV_COUNTERS,
    Counters,
    DeniedEntry,
    DeniedJoinEntry,
    IfaceReceiversEntry,
    JoinedEntry,
    Mode,
    Page,
    Reason,
    ReasonCounter,
    ReceiverEntry,
    RuleEntry,
    check_receiver_cursor,
    page_of,
)
from mauthcore.receivers import MAX_RECEIVER_RULES, IfacePolicy, ReceiverRule
from mauthcore.rules import Rule, RuleKey

__all__ = ["Backend", "MemoryBackend"]


@runtime_checkable
class Backend(Protocol):
    """The operations a router's filter offers to the protocol server."""

    name: str

    def add(self, rule: Rule) -> None:
        """Insert `rule`; Exists if its key is present, TableFull when full."""

    def replace(self, rule: Rule) -> bool:
        """Insert or overwrite `rule`; return True if it was created. TableFull when full."""

    def remove(self, key: RuleKey) -> None:
        """Delete the rule with `key`; NotFound if absent."""

    def list(self, cursor: bytes, limit: int) -> Page[RuleEntry]:
        """Up to `limit` rules after `cursor` (b"" = from the start); BadCursor if unusable.

        Cursors are opaque to clients and at most v2.MAX_CURSOR (48) bytes long;
        the backends of this repository issue `RuleKey.cursor` (11 bytes IPv4,
        35 IPv6) and check a client's with `rules.check_cursor`. A listing
        walked page by page returns no rule twice.
        """

    def denied(self, cursor: bytes, limit: int) -> Page[DeniedEntry]:
        """Up to `limit` denied (source, group) pairs after `cursor`."""

    def counters(self) -> Counters:
        """Filter-wide counters, rule count, mode and backend name."""

    def flush(self) -> int:
        """Remove every rule; return how many there were."""

    def rearm(self, key: RuleKey) -> None:
        """Forget what the learning rule for `key` pinned; NotFound if absent, BackendInvalid if it does not learn."""

    def get_mode(self) -> Mode: ...

    def set_mode(self, mode: Mode) -> None: ...

    # -- receivers (docs/protocol.md, "Receiver commands") ----------------------

    def add_receiver(self, rule: ReceiverRule) -> None:
        """Insert a receiver rule; Exists if held, TableFull past MAX_RECEIVER_RULES, BackendInvalid for an
        interface the router does not guard, BackendUnsupported if the filter cannot judge joins."""

    def remove_receiver(self, rule: ReceiverRule) -> None:
        """Delete a receiver rule; NotFound if it is not held."""

    def list_receivers(self, cursor: bytes, limit: int) -> Page[ReceiverEntry]:
        """Up to `limit` receiver rules after `cursor` (ReceiverRule.cursor order, `check_receiver_cursor`)."""

    def denied_joins(self, cursor: bytes, limit: int) -> Page[DeniedJoinEntry]:
        """Up to `limit` refused joins after `cursor` (DeniedJoinEntry.cursor order)."""

    def joined(self, cursor: bytes, limit: int) -> Page[JoinedEntry]:
        """Up to `limit` joined groups after `cursor` (JoinedEntry.cursor order)."""

    def receiver_policy(self, set: IfacePolicy | None) -> builtins.list[IfaceReceiversEntry]:
        """Set one guarded interface's policy first when `set` is given (BackendInvalid for another interface);
        then every guarded interface's policy, groups and counters, by name."""


class MemoryBackend:
    """An in-memory filter: executes commands, counts them, lets tests set counters."""

    name = "memory"

    def __init__(self, rules: tuple[Rule, ...] | list[Rule] = (), *, capacity: int = 65536,
                 mode: Mode = Mode.ENFORCE, ifaces: tuple[str, ...] = ("eth1",),
                 receiver_capacity: int = MAX_RECEIVER_RULES) -> None:
        self.capacity = capacity
        self.mode = mode
        self.rules: dict[RuleKey, Rule] = {}
        # per-rule traffic: key -> (packets, octets, last_seen ms); tests set these
        self.traffic: dict[RuleKey, tuple[int, int, int]] = {}
        # a learning rule's pinned (interface, MAC) and moves: key -> ((iface, mac), moved); tests set these
        self.learned: dict[RuleKey, tuple[tuple[str, bytes], int]] = {}
        self.denied_entries: list[DeniedEntry] = []
        self.reason_counters: dict[Reason, tuple[int, int]] = {}
        self.log: list[tuple[str, object]] = []  # every call, in order: (operation, argument)
        for rule in rules:
            self.rules[rule.key] = rule
        # Receivers: the guarded interfaces, each open without a limit until set; tests set the rest.
        self.ifaces = tuple(ifaces)
        self.receiver_capacity = receiver_capacity
        self.receivers: dict[ReceiverRule, tuple[int, int]] = {}  # rule -> (matched, last_seen ms)
        self.policies: dict[str, IfacePolicy] = {name: IfacePolicy(name) for name in self.ifaces}
        self.groups: dict[str, int] = {}
        self.recv_counters: dict[str, dict[str, int]] = {}
        self.denied_join_entries: list[DeniedJoinEntry] = []
        self.joined_entries: list[JoinedEntry] = []

    # -- mutations ----------------------------------------------------------

    def add(self, rule: Rule) -> None:
        self.log.append(("add", rule))
        if rule.key in self.rules:
            raise Exists(f"a rule for {rule.key} already exists")
        self._check_room()
        self.rules[rule.key] = rule

    def replace(self, rule: Rule) -> bool:
        self.log.append(("replace", rule))
        created = rule.key not in self.rules
        if created:
            self._check_room()
        self.rules[rule.key] = rule
        return created

    def remove(self, key: RuleKey) -> None:
        self.log.append(("remove", key))
        if key not in self.rules:
            raise NotFound(f"no rule for {key}")
        del self.rules[key]
        self.traffic.pop(key, None)
        self.learned.pop(key, None)

    def flush(self) -> int:
        self.log.append(("flush", None))
        count = len(self.rules)
        self.rules.clear()
        self.traffic.clear()
        self.learned.clear()
        return count

    def rearm(self, key: RuleKey) -> None:
        self.log.append(("rearm", key))
        rule = self.rules.get(key)
        if rule is None:
            raise NotFound(f"no rule for {key}")
        if not rule.binding.learn:
            raise BackendInvalid(f"the rule for {key} does not learn its sender, so it has nothing to forget")
        self.learned.pop(key, None)

    def set_mode(self, mode: Mode) -> None:
        self.log.append(("set_mode", mode))
        self.mode = Mode(mode)

    # -- queries ------------------------------------------------------------

    def get_mode(self) -> Mode:
        self.log.append(("get_mode", None))
        return self.mode

    def counters(self) -> Counters:
        self.log.append(("counters", None))
        unknown = sorted(r for r in self.reason_counters if not r.known)  # a newer filter's reasons
        reasons = tuple(
            ReasonCounter(reason, *self.reason_counters.get(reason, (0, 0))) for reason in (*Reason, *unknown)
        )
        return Counters(len(self.rules), self.mode, self.name, reasons)

    def list(self, cursor: bytes, limit: int) -> Page[RuleEntry]:
        self.log.append(("list", cursor))
        ordered = sorted(self.rules.items(), key=lambda kv: kv[0].cursor)
        items = []
        for key, rule in ordered:
            learned, moved = self.learned.get(key, (None, 0)) if rule.binding.learn else (None, 0)
            items.append(RuleEntry(rule, *self.traffic.get(key, (0, 0, 0)), moved=moved, learned=learned))
        cursors = [k.cursor for k, _ in ordered]
        return page_of(items, cursors, cursor, limit, "router")

    def denied(self, cursor: bytes, limit: int) -> Page[DeniedEntry]:
        self.log.append(("denied", cursor))
        ordered = sorted(((d.key.cursor, d) for d in self.denied_entries), key=lambda t: t[0])
        return page_of([d for _, d in ordered], [c for c, _ in ordered], cursor, limit, "router")

    # -- receivers ------------------------------------------------------------

    def add_receiver(self, rule: ReceiverRule) -> None:
        self.log.append(("add_receiver", rule))
        if rule in self.receivers:
            raise Exists(f"the receiver rule {rule} is held already")
        self._check_iface(rule.iface)
        if len(self.receivers) >= self.receiver_capacity:
            raise TableFull(f"the receiver rule table is full ({self.receiver_capacity} rules)")
        self.receivers[rule] = (0, 0)

    def remove_receiver(self, rule: ReceiverRule) -> None:
        self.log.append(("remove_receiver", rule))
        if self.receivers.pop(rule, None) is None:
            raise NotFound(f"no receiver rule {rule}")

    def list_receivers(self, cursor: bytes, limit: int) -> Page[ReceiverEntry]:
        self.log.append(("list_receivers", cursor))
        ordered = sorted(self.receivers.items())
        return page_of([ReceiverEntry(rule, *stats) for rule, stats in ordered], [r.cursor for r, _ in ordered],
                       cursor, limit, "router", check_receiver_cursor)

    def denied_joins(self, cursor: bytes, limit: int) -> Page[DeniedJoinEntry]:
        self.log.append(("denied_joins", cursor))
        return self._recv_page(self.denied_join_entries, cursor, limit)

    def joined(self, cursor: bytes, limit: int) -> Page[JoinedEntry]:
        self.log.append(("joined", cursor))
        return self._recv_page(self.joined_entries, cursor, limit)

    def receiver_policy(self, set: IfacePolicy | None) -> builtins.list[IfaceReceiversEntry]:
        self.log.append(("receiver_policy", set))
        if set is not None:
            self._check_iface(set.iface)
            self.policies[set.iface] = set
        return [IfaceReceiversEntry(self.policies[name], self.groups.get(name, 0),
                                    {c: self.recv_counters.get(name, {}).get(c, 0) for c in RECV_COUNTERS})
                for name in sorted(self.policies)]

    def _check_iface(self, iface: str) -> None:
        if iface and iface not in self.ifaces:
            raise BackendInvalid(f"interface {iface} is not one this router guards")

    @staticmethod
    def _recv_page(entries: Sequence[Any], cursor: bytes, limit: int) -> Page[Any]:
        ordered: builtins.list[Any] = sorted(entries, key=lambda e: e.cursor)
        return page_of(ordered, [e.cursor for e in ordered], cursor, limit, "router", check_receiver_cursor)

    # -- helpers --------------------------------------------------------------

    @property
    def executions(self) -> int:
        return len(self.log)

    def _check_room(self) -> None:
        if len(self.rules) >= self.capacity:
            raise TableFull(f"the rule table is full ({self.capacity} rules)")
