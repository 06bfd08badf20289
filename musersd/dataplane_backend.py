"""The protocol server's Backend, executing on the real data plane.

Strategy: translate, nothing more. Data-plane exceptions become the typed
command errors the server maps to reply codes; data-plane values become the
wire model's values (milliseconds since the Unix epoch, octets).

Listings are paged by a cursor: the `RuleKey.cursor` of the last key returned
(11 bytes for IPv4, 35 for IPv6, checked by `rules.check_cursor`), so the
next page starts after that position in the keys' order whether or not its
rule still exists, and a walk returns every rule present throughout exactly
once (docs/protocol.md, "Listing cursors"). Walking a BPF
hash map in key order would mean reading the whole map for every page, so
the backend keeps a sorted list of the keys, rebuilt lazily after a change;
musersd is the maps' only writer, so the list cannot go stale behind its
back. Counters are read only for the rules of the page being returned.

Receivers (RECV_* commands) go to the filter's receiver half (filter.py,
contract of `_Receiving` below) when it has one (`receives`); a filter
without one (NFQUEUE) is refused as UNSUPPORTED. The receiver rules are few
(MAX_RECEIVER_RULES), so each RECV_LIST page reads them all; the denied and
joined tables are read once per listing, on its first page, as DENIED is.
Their times are the kernel's CLOCK_MONOTONIC nanoseconds, turned into the
wire's milliseconds since the Unix epoch here.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from mauthcore.protocol.errors import BackendFailure, BackendInvalid, BackendUnsupported
from mauthcore.protocol.model import (
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
    millis,
    page_of,
    page_start,
)
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Rule, RuleKey

from . import filter as flt
from .filter import DeniedJoin, Filter, IfaceReceivers, JoinedGroup, ReceiverStats

log = logging.getLogger("musersd.rules")


@contextmanager
def _translated():
    """A filter's failure as BACKEND_FAILURE; its refusals (Exists, NotFound, TableFull) are already command errors."""
    try:
        yield
    except (flt.BindingRefused, flt.InvalidReceiver) as exc:
        raise BackendInvalid(str(exc)) from None
    except flt.ReceiversUnsupported as exc:
        raise BackendUnsupported(str(exc)) from None
    except flt.DataPlaneError as exc:
        raise BackendFailure(str(exc)) from None


def _reason(name: str) -> Reason | None:
    return Reason.__members__.get(name.upper())


class _Receiving(Protocol):
    """The receiver half of a filter (filter.py; the XDP data plane has it, `receives` True)."""

    def add_receiver(self, rule: ReceiverRule) -> None: ...
    def remove_receiver(self, rule: ReceiverRule) -> None: ...
    def receiver_rules(self) -> list[ReceiverStats]: ...
    def apply_receivers(self, wanted: Iterable[ReceiverRule]) -> tuple[int, int]: ...
    def set_receiver_policy(self, policy: IfacePolicy) -> None: ...
    def receiver_policies(self) -> list[IfaceReceivers]: ...
    def denied_joins(self) -> list[DeniedJoin]: ...
    def clear_denied_joins(self) -> int: ...
    def joined_groups(self) -> list[JoinedGroup]: ...
    def sweep_groups(self, timeout_ns: int, grace_ns: int) -> int: ...


def receiving(dp: object) -> _Receiving | None:
    """`dp`'s receiver half, or None if it judges no membership reports (`receives` False or absent)."""
    return cast(_Receiving, dp) if getattr(dp, "receives", False) else None


class DataPlaneBackend:
    """The protocol Backend over any filter.Filter (the XDP data plane, or NfqueueFilter)."""

    name = "xdp"

    def __init__(self, dp: Filter, *, clock: Callable[[], int] = time.monotonic_ns,
                 wall: Callable[[], float] = time.time):
        self.dp = dp
        self._sorted: list[bytes] | None = None
        self._order: list[tuple[bytes, RuleKey]] | None = None
        self._denied_snapshot: tuple[list[bytes], list] | None = None
        self._clock, self._wall = clock, wall  # CLOCK_MONOTONIC ns (the kernel's stamps), Unix seconds
        self._recv_snapshots: dict[str, builtins.list[Any]] = {}  # listing -> its entries as read on its first page

    # -------------------------------------------------------------- changes

    def _changed(self) -> None:
        self._sorted = None
        self._order = None

    def rules_changed(self) -> None:
        """The maps were changed behind this backend's back (a SIGHUP reload): forget the cached key order."""
        self._changed()

    def _held(self, rule: Rule) -> None:
        """Refuse, as unsupported, a rule of a family this filter cannot hold, or a bound rule it cannot bind."""
        why = flt.not_held(self.name, self.dp.families, rule.key) or (
            None if self.dp.binds else flt.not_bindable(self.name, rule))
        if why:
            raise BackendUnsupported(why)

    def add(self, rule: Rule) -> None:
        self._held(rule)
        with _translated():
            self.dp.add_rule(rule)
        self._changed()
        log.info("rule added: %s", rule)

    def replace(self, rule: Rule) -> bool:
        self._held(rule)
        with _translated():
            created = self.dp.replace_rule(rule)
        self._changed()
        log.info("rule %s: %s", "added" if created else "replaced", rule)
        return created

    def remove(self, key: RuleKey) -> None:
        with _translated():
            self.dp.remove_rule(key)
        self._changed()
        log.info("rule removed: %s", key)

    def rearm(self, key: RuleKey) -> None:
        with _translated():
            before = self.dp.clear_learned(key)
        log.info("rule %s rearmed: forgot %s after %d moves", key,
                 "nothing" if before.learned is None else
                 f"{flt.iface_name(before.learned[0])} {flt.format_mac(before.learned[1])}", before.moved)

    def flush(self) -> int:
        n = self.dp.flush()
        self._changed()
        log.info("rules flushed: %d removed", n)
        return n

    def set_mode(self, mode: Mode) -> None:
        new = Mode(mode)
        if new is not self.dp.mode:
            log.info("mode changed to %s", new)
        self.dp.set_mode(new)

    # -------------------------------------------------------------- queries

    def get_mode(self) -> Mode:
        return self.dp.mode

    def _ordered(self) -> list[tuple[bytes, RuleKey]]:
        """(cursor, key) of every rule, exact and prefix, in cursor order."""
        if self._order is None:
            self._order = sorted((k.cursor, k) for k in self.dp.rule_keys())
        return self._order

    def _keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = [c for c, _ in self._ordered()]
        return self._sorted

    def list(self, cursor: bytes, limit: int) -> Page[RuleEntry]:
        keys = self._ordered()
        start = page_start(self._keys(), cursor, "router")
        chunk = keys[start:start + limit]
        items = []
        for _, key in chunk:
            rs = self.dp.get_rule(key)
            if rs is None:  # vanished since the cache was built
                continue
            items.append(rs)
        more = start + len(chunk) < len(keys)
        # The position of the last key looked at, even if its rule vanished: the next page goes on from there.
        return Page(tuple(items), chunk[-1][0] if more and chunk else b"")

    def denied(self, cursor: bytes, limit: int) -> Page[DeniedEntry]:
        # Reading the denied table means reading every set on every CPU, so a
        # listing reads it once, on its first page, and pages through that
        # snapshot; it also gives the listing one consistent view.
        if not cursor or self._denied_snapshot is None:
            ordered = sorted(((d.key.cursor, d) for d in self.dp.denied()), key=lambda t: t[0])
            self._denied_snapshot = ([c for c, _ in ordered], [d for _, d in ordered])
        keys, entries = self._denied_snapshot
        start = page_start(keys, cursor, "router")
        chunk = entries[start:start + limit]
        end = start + len(chunk)
        return Page(tuple(chunk), keys[end - 1] if end < len(entries) and chunk else b"")

    def counters(self) -> Counters:
        reasons = []
        for name, c in self.dp.counters().items():
            r = _reason(name)
            if r is not None:
                reasons.append(ReasonCounter(r, c["packets"], c["bytes"]))
        return Counters(len(self._keys()), self.get_mode(), self.name, tuple(reasons))

    # ------------------------------------------------------------ receivers

    def _receivers(self) -> _Receiving:
        half = receiving(self.dp)
        if half is None:
            raise BackendUnsupported(f"the {self.name} backend does not judge membership reports, so it holds no"
                                     " receiver rules or policies; run the xdp backend")
        return half

    def _ms(self) -> Callable[[int], int]:
        """CLOCK_MONOTONIC ns (0 = never) -> ms since the Unix epoch (0 = never), as of now."""
        now_ns, now_wall = self._clock(), self._wall()

        def convert(ns: int) -> int:
            return millis(now_wall - max(now_ns - ns, 0) / 1e9) if ns else 0
        return convert

    def add_receiver(self, rule: ReceiverRule) -> None:
        half = self._receivers()
        with _translated():
            half.add_receiver(rule)
        log.info("receiver rule added: %s", rule)

    def remove_receiver(self, rule: ReceiverRule) -> None:
        half = self._receivers()
        with _translated():
            half.remove_receiver(rule)
        log.info("receiver rule removed: %s", rule)

    def list_receivers(self, cursor: bytes, limit: int) -> Page[ReceiverEntry]:
        half = self._receivers()
        with _translated():
            held = sorted(half.receiver_rules(), key=lambda rs: rs.rule)
        ms = self._ms()
        return page_of([ReceiverEntry(rs.rule, rs.matched, ms(rs.last_seen)) for rs in held],
                       [rs.rule.cursor for rs in held], cursor, limit, "router", check_receiver_cursor)

    def denied_joins(self, cursor: bytes, limit: int) -> Page[DeniedJoinEntry]:
        half = self._receivers()

        def read() -> list[DeniedJoinEntry]:
            ms = self._ms()
            return [DeniedJoinEntry(d.iface, d.receiver, d.group, d.source,
                                    _reason(d.reason) or Reason.JOIN_REFUSED, d.records, ms(d.last_seen), d.version)
                    for d in half.denied_joins()]
        return self._snapshot_page("denied", read, cursor, limit)

    def joined(self, cursor: bytes, limit: int) -> Page[JoinedEntry]:
        half = self._receivers()

        def read() -> list[JoinedEntry]:
            ms = self._ms()
            return [JoinedEntry(j.iface, j.group, j.reporter, ms(j.first_seen), ms(j.last_seen), j.reports, j.left)
                    for j in half.joined_groups()]
        return self._snapshot_page("joined", read, cursor, limit)

    def _snapshot_page(self, listing: str, read: Callable[[], Sequence[Any]], cursor: bytes,
                       limit: int) -> Page[Any]:
        """A page of a table read whole on a listing's first page (cursor empty), paged through after."""
        if not cursor or listing not in self._recv_snapshots:
            with _translated():
                self._recv_snapshots[listing] = sorted(read(), key=lambda e: e.cursor)
        entries = self._recv_snapshots[listing]
        return page_of(entries, [e.cursor for e in entries], cursor, limit, "router", check_receiver_cursor)

    def receiver_policy(self, set: IfacePolicy | None) -> builtins.list[IfaceReceiversEntry]:
        half = self._receivers()
        with _translated():
            if set is not None:
                half.set_receiver_policy(set)
                log.info("receiver policy of %s set: %s", set.iface, set)
            held = half.receiver_policies()
        return [IfaceReceiversEntry(p.policy, p.groups, dict(p.counters))
                for p in sorted(held, key=lambda p: p.policy.iface)]
