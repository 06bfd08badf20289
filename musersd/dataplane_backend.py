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
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from mauthcore.protocol.errors import BackendFailure, BackendInvalid, BackendUnsupported
from mauthcore.protocol.model import Counters, DeniedEntry, Mode, Page, Reason, ReasonCounter, RuleEntry, page_start
from mauthcore.rules import Rule, RuleKey

from . import filter as flt
from .filter import Filter

log = logging.getLogger("musersd.rules")


@contextmanager
def _translated():
    """A filter's failure as BACKEND_FAILURE; its refusals (Exists, NotFound, TableFull) are already command errors."""
    try:
        yield
    except flt.BindingRefused as exc:
        raise BackendInvalid(str(exc)) from None
    except flt.DataPlaneError as exc:
        raise BackendFailure(str(exc)) from None


def _reason(name: str) -> Reason | None:
    return Reason.__members__.get(name.upper())


class DataPlaneBackend:
    """The protocol Backend over any filter.Filter (the XDP data plane, or NfqueueFilter)."""

    name = "xdp"

    def __init__(self, dp: Filter):
        self.dp = dp
        self._sorted: list[bytes] | None = None
        self._order: list[tuple[bytes, RuleKey]] | None = None
        self._denied_snapshot: tuple[list[bytes], list] | None = None

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
