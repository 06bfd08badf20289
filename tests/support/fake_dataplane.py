"""A fake of the data plane for the unit tier, built on the real tables' key code.

Strategy: `FakeDataPlane` offers the methods of `musersd.dataplane.DataPlane`
that the protocol backends use (add_rule, replace_rule, remove_rule, flush,
rule_keys, get_rule, rule_count, denied, counters, mode) and raises the same
data-plane errors, but keeps its "maps" in dicts instead of BPF maps. What it
shares with the real data plane is everything about keys: a rule is stored
in the map `DataPlane._locate()` picks (exact rules, source-prefix trie or
group-prefix trie of its family), under the bytes of the ctypes key that
function builds (maps.Key4/Key6/Lpm4/Lpm6), and `rule_keys()` reads the keys
back from those bytes exactly as `DataPlane.rule_keys()` does (including
`xdp_rules._prefix_key` for the tries). So `DataPlaneBackend` and
`NfqueueBackend` run unchanged on top of it, sort by the same
`RuleKey.cursor` and check cursors with the same `rules.check_cursor`: an
IPv6 key or a prefix key takes the same path through paging here as on a
router. Only the kernel's side (packets, per-CPU counters, trie lookups by
longest match) is not modelled; tests set traffic and denied pairs directly.
"""

from __future__ import annotations

import ipaddress
import secrets

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import DeniedEntry, Mode, Reason, RuleEntry, millis
from mauthcore.rules import IPAddress, Rule, RuleKey
from musersd import dataplane as dpl
from musersd import xdp_rules
from musersd.filter import BindingRefused
from musersd.maps import FAMILIES, REASONS


def _exact_decoder(key_type):
    def decode(raw: bytes) -> RuleKey:
        k = key_type.from_buffer_copy(raw)
        return RuleKey(k.source, k.group)  # as DataPlane.rule_keys() reads an exact map
    return decode


def _trie_decoder(cname: str, lpm_type):
    def decode(raw: bytes) -> RuleKey:
        return xdp_rules._prefix_key(cname, lpm_type.from_buffer_copy(raw))  # as DataPlane reads a trie
    return decode


# map name -> (bytes of a key in that map -> RuleKey)
_DECODERS = {}
for _fam in FAMILIES.values():
    _DECODERS[_fam.rules] = _exact_decoder(_fam.key)
    _DECODERS[_fam.src_prefix] = _trie_decoder(_fam.src_prefix, _fam.lpm)
    _DECODERS[_fam.grp_prefix] = _trie_decoder(_fam.grp_prefix, _fam.lpm)


class FakeDataPlane:
    """Rules in per-map dicts keyed by the ctypes key bytes the real maps use; counters set by tests."""

    name = "xdp"
    binds = True

    def __init__(self, max_rules: int = 65536, mode: Mode = Mode.ENFORCE, families: tuple[int, ...] = (4, 6)) -> None:
        self.families = families  # the address families whose rules the faked filter holds
        self.max_rules = max_rules
        self.mode = mode
        self.state_id = secrets.randbits(64) or 1
        # map name -> key bytes -> Rule
        self.tables: dict[str, dict[bytes, Rule]] = {name: {} for name in _DECODERS}
        # RuleKey -> (packets, bytes, last_seen Unix time or None); tests set these
        self.traffic: dict[RuleKey, tuple[int, int, float | None]] = {}
        self.denied_entries: list[DeniedEntry] = []
        self.reason_counters: dict[str, dict[str, int]] = {
            name: {"packets": 0, "bytes": 0} for name in REASONS.values()}

    # -- the maps ----------------------------------------------------------------

    @staticmethod
    def _slot(key: RuleKey) -> tuple[str, bytes]:
        cname, k = dpl.DataPlane._locate(key)
        return cname, bytes(k)

    def add_rule(self, rule: Rule) -> None:
        rule = dpl.DataPlane._as_rule(rule)
        cname, k = self._slot(rule.key)
        if k in self.tables[cname]:
            raise Exists(f"a rule for {rule.key} already exists")
        if self.rule_count() >= self.max_rules:
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
        self.tables[cname][k] = rule

    def replace_rule(self, rule: Rule) -> bool:
        rule = dpl.DataPlane._as_rule(rule)
        cname, k = self._slot(rule.key)
        if k not in self.tables[cname]:
            self.add_rule(rule)
            return True
        self.tables[cname][k] = rule
        return False

    def remove_rule(self, key: RuleKey) -> Rule:
        rkey = dpl.DataPlane._as_key(key)
        cname, k = self._slot(rkey)
        rule = self.tables[cname].pop(k, None)
        if rule is None:
            raise NotFound(f"there is no rule for {rkey}")
        self.traffic.pop(rkey, None)
        return rule

    def flush(self) -> int:
        n = self.rule_count()
        for table in self.tables.values():
            table.clear()
        self.traffic.clear()
        return n

    def clear_learned(self, key: RuleKey):
        entry = self.get_rule(key)
        if entry is None:
            raise NotFound(f"there is no rule for {key}")
        if not entry.rule.binding.learn:
            raise BindingRefused(f"the rule for {key} does not learn its sender, so it has nothing to forget")
        return None

    def rule_keys(self) -> list[RuleKey]:
        """The key of every rule, decoded from the map key bytes as DataPlane.rule_keys() decodes them."""
        return [_DECODERS[cname](k) for cname, table in self.tables.items() for k in table]

    def rule_count(self) -> int:
        return sum(len(table) for table in self.tables.values())

    def get_rule(self, key: RuleKey) -> RuleEntry | None:
        rkey = dpl.DataPlane._as_key(key)
        cname, k = self._slot(rkey)
        stored = self.tables[cname].get(k)
        if stored is None:
            return None
        # The rule as read back from the map: its key decoded from the key bytes.
        rule = Rule(_DECODERS[cname](k), stored.max_ttl, stored.pps, stored.bps, stored.binding)
        packets, nbytes, last = self.traffic.get(rkey, (0, 0, None))
        return RuleEntry(rule, packets, nbytes, millis(last))

    # -- mode and counters ------------------------------------------------------------

    def set_mode(self, mode: Mode | str) -> Mode:
        self.mode = Mode(mode)
        return self.mode

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: dict(c) for name, c in self.reason_counters.items()}

    def denied(self) -> list[DeniedEntry]:
        return list(self.denied_entries)

    def deny(self, source: str | IPAddress, group: str | IPAddress, packets: int = 1, *,
             reason: str = "unauthorized", ttl: int = 32, last_seen: float = 1_700_000_000.0) -> None:
        """Record a denied pair, as the filter would after dropping `packets` packets."""
        self.denied_entries.append(DeniedEntry(ipaddress.ip_address(source), ipaddress.ip_address(group),
                                               Reason[reason.upper()], packets, packets * 100, ttl, millis(last_seen)))
