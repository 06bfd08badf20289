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

from typing import Protocol, runtime_checkable

from mauthcore.protocol.errors import BackendInvalid, Exists, NotFound, TableFull
from mauthcore.protocol.model import (
    Counters,
    DeniedEntry,
    Mode,
    Page,
    Reason,
    ReasonCounter,
    RuleEntry,
    page_of,
)
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


class MemoryBackend:
    """An in-memory filter: executes commands, counts them, lets tests set counters."""

    name = "memory"

    def __init__(self, rules: tuple[Rule, ...] | list[Rule] = (), *, capacity: int = 65536,
                 mode: Mode = Mode.ENFORCE) -> None:
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

    # -- helpers --------------------------------------------------------------

    @property
    def executions(self) -> int:
        return len(self.log)

    def _check_room(self) -> None:
        if len(self.rules) >= self.capacity:
            raise TableFull(f"the rule table is full ({self.capacity} rules)")
