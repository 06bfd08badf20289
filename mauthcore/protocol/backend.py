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

from mauthcore.protocol.errors import Exists, NotFound, TableFull
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

    def flush(self) -> int:
        self.log.append(("flush", None))
        count = len(self.rules)
        self.rules.clear()
        self.traffic.clear()
        return count

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
        items = [
            RuleEntry(rule, *self.traffic.get(key, (0, 0, 0)))
            for key, rule in ordered
        ]
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
