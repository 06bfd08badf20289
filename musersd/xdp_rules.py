"""The XDP data plane, part 2 of 3: the rules in the maps.

Each address family has its own maps (maps.FAMILIES): exact rules live in a
hash map, prefix rules in two LPM tries (ebpf/mauth.h gives the lookup order);
stats slots are shared, rate limits in a map of token buckets keyed by the
rule's slot. Writes are ordered so that the program never sees a half-made
rule: a rule's bucket goes in before the rule that points at it, a trie's bit
in cfg is set only once the trie holds a rule and cleared only once it is
empty again. A trie lookup answers with the longest match, not the exact key,
so the prefix rules' keys are also indexed here (rebuilt from the tries on
open and whenever the index does not know a key).

Per-rule counters sit in a per-CPU array indexed by a slot. Slots are
allocated here; the set in use is recomputed from the rule maps on open, so
nothing but the maps themselves holds state across restarts. One process
writes the maps at a time (musersd); others may read.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import DeniedEntry, RuleEntry, millis
from mauthcore.rules import IPAddress, Rule, RuleKey

from . import bpfsys, maps
from .filter import Binding, BindingRefused, BindingState, DataPlaneError, as_key, as_rule, iface_name, plan
from .maps import FAMILIES, Key4, RuleVal
from .policy import find_rule
from .xdp_counters import mono_to_unix

_RULE_VAL = struct.Struct("=IBBH")  # RuleVal as bytes: slot, max_ttl, flags, pad
_KEY4 = struct.Struct("!II")  # Key4 as bytes: source, group in network order
assert _RULE_VAL.size == ctypes.sizeof(RuleVal) and _KEY4.size == ctypes.sizeof(Key4)

_BPF_F_LOCK = 4  # update a map value that holds a bpf_spin_lock under that lock

# The maps of each kind, over both families, and how a trie's key reads back as a rule key.
_RULE_MAPS = tuple(f.rules for f in FAMILIES.values())
_PREFIX_MAPS = tuple(m for f in FAMILIES.values() for m in (f.src_prefix, f.grp_prefix))
_DENIED_MAPS = tuple(f.denied for f in FAMILIES.values())
_SOURCE_TRIES = frozenset(f.src_prefix for f in FAMILIES.values())


def _binding_of(e: maps.BindingVal) -> Binding:
    """The binding a `bindings` entry holds (what it learned apart)."""
    return Binding(e.ifindex if e.flags & maps.BIND_IFACE else 0, bool(e.flags & maps.BIND_RPF),
                   bytes(e.mac) if e.flags & maps.BIND_MAC else None, bool(e.flags & maps.BIND_LEARN))


def _prefix_key(cname: str, k) -> RuleKey:
    """The RuleKey of a prefix trie's key (a full-length prefix is never written, but reads back as a host)."""
    net = k.prefix_network
    side = net.network_address if net.prefixlen == net.max_prefixlen else net
    if cname in _SOURCE_TRIES:
        return RuleKey(side, k.exact_address)
    return RuleKey(k.exact_address, side)




class XdpRules:
    """Writing and reading the rules (a part of DataPlane: needs XdpLoader's maps)."""

    # What this part uses of the others: XdpLoader's state and maps (xdp_loader.py), the denied
    # table's clean-up (xdp_counters.py). DataPlane (dataplane.py) has them all.
    _free_slots: list[int]
    _next_slot: int
    _fresh_from: int
    _prefix: dict[RuleKey, int]  # prefix rules -> slot (see _value())

    if TYPE_CHECKING:
        def _map(self, cname: str) -> bpfsys.Map: ...
        def _cfg(self) -> maps.Cfg: ...
        @property
        def _capacity(self) -> int: ...
        def _forget_denied(self, key: bytes) -> None: ...
        def _forget_denied_where(self, covers: Callable[[IPAddress, IPAddress], bool]) -> None: ...
        def _forget_denied_many(self, keys: set[bytes]) -> None: ...

    # ------------------------------------------------------------------ rules

    def _scan_slots(self) -> None:
        used = {v.slot for cname in _RULE_MAPS for _, v in self._map(cname).items()}
        self._scan_prefixes()
        used.update(self._prefix.values())
        self._next_slot = max(used) + 1 if used else 0
        self._free_slots = sorted((s for s in range(self._next_slot) if s not in used), reverse=True)

    def _scan_prefixes(self) -> None:
        """Rebuild the index of prefix rules (key -> slot) from the two tries."""
        self._prefix = {}
        for cname in _PREFIX_MAPS:
            for k, v in self._map(cname).items():
                self._prefix[_prefix_key(cname, k)] = v.slot

    def _alloc_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        if self._next_slot >= self._capacity:
            raise TableFull(f"the rule table is full ({self._capacity} rules)")
        self._next_slot += 1
        self._fresh_from = max(self._fresh_from, self._next_slot)
        return self._next_slot - 1

    def _alloc_slots(self, n: int) -> tuple[list[int], list[int]]:
        """n slots (free ones first, lowest first): (all of them, those whose stats need zeroing)."""
        if n > len(self._free_slots) + self._capacity - self._next_slot:
            raise TableFull(f"the rule table is full ({self._capacity} rules)")
        reused = self._free_slots[len(self._free_slots) - min(n, len(self._free_slots)):][::-1]
        del self._free_slots[len(self._free_slots) - len(reused):]
        start = self._next_slot
        self._next_slot += n - len(reused)
        fresh = range(start, self._next_slot)
        dirty = reused + list(range(start, min(self._next_slot, self._fresh_from)))
        self._fresh_from = max(self._fresh_from, self._next_slot)
        return reused + list(fresh), dirty

    def _free_slot_list(self, slots: list[int]) -> None:
        self._free_slots.extend(slots)
        self._free_slots.sort(reverse=True)

    def _free_slot(self, slot: int) -> None:
        self._free_slots.append(slot)

    def _zero_stats(self, slot: int) -> None:
        stats = self._map("mauth_stats")
        stats.update(ctypes.c_uint32(slot), stats.slot_type())

    @staticmethod
    def _locate(key: RuleKey) -> tuple[str, ctypes.Structure]:
        """The map that holds the rule for `key`, and its key there."""
        fam = FAMILIES[key.family]
        if key.is_exact:
            return fam.rules, fam.key.of(key.source, key.group)
        if key.source_len < fam.width:
            return fam.src_prefix, fam.lpm.of(key.group, key.source_address, key.source_len)
        return fam.grp_prefix, fam.lpm.of(key.source, key.group_address, key.group_len)

    _as_rule = staticmethod(as_rule)
    _as_key = staticmethod(as_key)

    def _value(self, key: RuleKey) -> RuleVal | None:
        """The value stored under exactly `key`, or None.

        A lookup in a prefix trie returns the longest prefix that matches,
        which is the key itself only if the key is there; whether it is comes
        from the index of prefix rules, which this process keeps up to date
        and rebuilds from the tries (not from the exact rules: they may be a
        million) when it does not know the key: the key is absent, or a
        process that only reads was overtaken by the writer.
        """
        cname, k = self._locate(key)
        value = self._map(cname).lookup(k)
        if value is None:
            return None
        assert isinstance(value, RuleVal), "the rule maps' values are RuleVal (maps.MAPS)"
        if key.is_exact:
            return value
        if self._prefix.get(key) != value.slot:
            self._scan_prefixes()
            if self._prefix.get(key) != value.slot:
                return None
        return value

    def _rule_of(self, key: RuleKey, value: RuleVal) -> Rule:
        """The Rule a map value stands for, with its rate limits from `rates` and its binding from `bindings`."""
        pps = bps = 0
        if value.flags & maps.RULE_F_RATE:
            rate = self._map("mauth_rates").lookup(ctypes.c_uint32(value.slot))
            if rate is not None:
                assert isinstance(rate, maps.Rate), "mauth_rates' values are Rate (maps.MAPS)"
                pps, bps = rate.pps, rate.bps
        if value.flags & maps.RULE_F_BIND:
            return Rule(key, value.max_ttl, pps, bps, _binding_of(self._bind_entry(value.slot)).named())
        return Rule(key, value.max_ttl, pps, bps)

    def _bind_entry(self, slot: int) -> maps.BindingVal:
        entry = self._map("mauth_bindings").lookup(ctypes.c_uint32(slot))
        assert isinstance(entry, maps.BindingVal), "an array map holds every slot; its values are BindingVal"
        return entry

    def _write_binding(self, slot: int, binding: Binding) -> None:
        """A fresh binding entry for `slot` (nothing learned), under the entry's lock."""
        entry = maps.BindingVal(ifindex=binding.ifindex, flags=binding.flags)
        if binding.mac:
            entry.mac[:] = list(binding.mac)
        self._map("mauth_bindings").update(ctypes.c_uint32(slot), entry, bpfsys.BPF_ANY | _BPF_F_LOCK)

    @staticmethod
    def _kernel_binding(rule: Rule) -> Binding | None:
        """The rule's binding resolved on this router (None: unbound); refused before anything changes."""
        return Binding.of(rule.binding) if rule.bound else None

    def _set_rate(self, slot: int, rule: Rule, old: Rule | None = None) -> None:
        """Give `slot` full buckets for the rule's limits, unless the limits are those it already has.

        Written with BPF_F_LOCK: the program may be inside the entry's lock.
        Keeping the buckets when the limits do not change means a REPLACE that
        only changes the TTL (or a manager re-sending its rules) does not
        hand the sender a fresh burst.
        """
        if old is not None and old.rate_limited and (old.pps, old.bps) == (rule.pps, rule.bps):
            return
        rates = self._map("mauth_rates")
        rates.update(ctypes.c_uint32(slot), maps.Rate.full(rule.pps, rule.bps), bpfsys.BPF_ANY | _BPF_F_LOCK)

    def _clear_rate(self, slot: int) -> None:
        self._map("mauth_rates").delete(ctypes.c_uint32(slot))

    def _sync_prefix_flags(self) -> None:
        """cfg.prefixes from the index: a trie's bit set while it holds a rule, so the program looks in it."""
        want = 0
        for key in self._prefix:
            fam = FAMILIES[key.family]
            want |= fam.cfg_src if key.source_len < fam.width else fam.cfg_grp
        cfg = self._cfg()
        if cfg.prefixes != want:
            cfg.prefixes = want
            self._map("mauth_cfg").update(ctypes.c_uint32(0), cfg)

    def add_rule(self, rule: Rule | tuple) -> None:
        """Add a rule; Exists if (source, group) already has one."""
        rule = self._as_rule(rule)
        bound = self._kernel_binding(rule)
        cname, key = self._locate(rule.key)
        rules = self._map(cname)
        # An exact key is checked here; a prefix key by the insert itself
        # (BPF_NOEXIST in a trie compares exact keys, where a lookup would not).
        if rule.key.is_exact and rules.lookup(key) is not None:
            raise Exists(f"a rule for {rule.key} already exists")
        slot = self._alloc_slot()
        self._zero_stats(slot)
        # The bucket goes in before the rule that points at it: the program
        # never sees MAUTH_RULE_F_RATE without an entry in rates.
        if rule.rate_limited:
            self._set_rate(slot, rule)
        if bound is not None:  # likewise the binding: a bound rule is never, even briefly, unbound
            self._write_binding(slot, bound)
        flags = (maps.RULE_F_RATE if rule.rate_limited else 0) | (maps.RULE_F_BIND if bound is not None else 0)
        value = RuleVal(slot=slot, max_ttl=rule.max_ttl, flags=flags)
        err = rules.try_update(key, value, bpfsys.BPF_NOEXIST)
        if err:
            if rule.rate_limited:
                self._clear_rate(slot)
            self._free_slot(slot)
            if err == errno.EEXIST:
                raise Exists(f"a rule for {rule.key} already exists")
            raise TableFull(f"the rule table is full ({self._capacity} rules)")
        if rule.key.is_exact:
            self._forget_denied(bytes(key))
        else:
            self._prefix[rule.key] = slot
            self._sync_prefix_flags()  # after the insert: the trie is never consulted before it holds the rule
            self._forget_denied_where(rule.key.covers)

    def add_rules_bulk(self, rules: Iterable[Rule | tuple], *, chunk: int = 1 << 16) -> int:
        """Add many new rules with a few BPF_MAP_UPDATE_BATCH calls; returns how many.

        The same effect as add_rule() for each rule (fresh counters, the pair's
        denied entry dropped), all or nothing: the rules are validated and
        checked for duplicates, for rules that already exist and for room in
        the table before anything changes, and a kernel refusal midway (out of
        memory) removes what was added before raising. Like every writer here
        it assumes it is the only one (musersd). Costs one syscall per
        `chunk` rules, plus one per rule already in the table (checked for
        clashes), plus one per set of the denied table (one per new pair
        when there are few) to forget new pairs that were denied before.
        Exact rules without a rate limit or binding go in by the batch; prefix,
        rate-limited and bound rules (few, as a rule) one by one with add_rule().
        """
        new = [self._as_rule(r) for r in rules]
        if not new:
            return 0
        seen: set[RuleKey] = set()
        for r in new:
            if r.key in seen:
                raise Exists(f"the rule for {r.key} is given twice")
            seen.add(r.key)
        one_by_one = [r for r in new if not r.key.is_exact or r.rate_limited or r.bound]
        new = [r for r in new if r.key.is_exact and not r.rate_limited and not r.bound]
        for r in one_by_one:
            if r.key in self._prefix or (r.key.is_exact and self._value(r.key) is not None):
                raise Exists(f"a rule for {r.key} already exists")
        if len(new) + len(one_by_one) > len(self._free_slots) + self._capacity - self._next_slot:
            raise TableFull(f"the rule table is full ({self._capacity} rules)")
        key4 = _KEY4.pack  # Key4 as bytes; int() of an address is cheaper than .packed
        # `new` holds exact rules only, whose source and group are addresses (Rule's type admits prefixes);
        # ignored rather than cast(), which would cost two calls per rule on the bulk path.
        packed = [key4(int(r.source), int(r.group)) if r.key.family == 4  # type: ignore[arg-type]
                  else r.source.packed + r.group.packed  # type: ignore[union-attr]
                  for r in new]
        wanted = set(packed)
        if new and self._next_slot - len(self._free_slots) > 0:
            for cname in _RULE_MAPS:
                for k in self._map(cname).keys():
                    if bytes(k) in wanted:
                        raise Exists(f"a rule for {RuleKey(k.source, k.group)} already exists")
        slots, dirty = self._alloc_slots(len(new)) if new else ([], [])
        done: dict[int, list[bytes]] = {4: [], 6: []}  # keys written, per family, to undo on failure
        added: list[RuleKey] = []
        try:
            self._zero_stats_bulk(dirty, chunk)
            pack = _RULE_VAL.pack
            for fam in FAMILIES.values():
                mine = [i for i, r in enumerate(new) if r.key.family == fam.version]
                rules_map = self._map(fam.rules)
                for start in range(0, len(mine), chunk):
                    part = mine[start:start + chunk]
                    keys = (fam.key * len(part)).from_buffer_copy(b"".join(packed[i] for i in part))
                    values = (RuleVal * len(part)).from_buffer_copy(
                        b"".join(pack(slots[i], new[i].max_ttl, 0, 0) for i in part)
                    )
                    # Batch updates take no BPF_NOEXIST (the kernel allows only
                    # BPF_F_LOCK): the clash check above is what keeps this an add.
                    applied, err = rules_map.try_update_batch(keys, values, len(part))
                    done[fam.version].extend(packed[i] for i in part[:applied])
                    if err:
                        failed = new[part[applied]].key
                        if err == errno.E2BIG:
                            raise TableFull(f"the rule table is full ({self._capacity} rules)")
                        raise DataPlaneError(f"the kernel refused the rule for {failed}: {os.strerror(err)}")
            for r in one_by_one:
                self.add_rule(r)
                added.append(r.key)
        except BaseException:
            for key in added:
                self.remove_rule(key)
            self._undo_bulk(done, chunk)
            self._free_slot_list(slots)
            raise
        if wanted:
            self._forget_denied_many(wanted)
        return len(new) + len(one_by_one)

    def _zero_stats_bulk(self, slots: list[int], chunk: int) -> None:
        stats = self._map("mauth_stats")
        for start in range(0, len(slots), chunk):
            part = slots[start:start + chunk]
            keys = (ctypes.c_uint32 * len(part))(*part)
            stats.update_batch(keys, (stats.slot_type * len(part))(), len(part))

    def _undo_bulk(self, packed: dict[int, list[bytes]], chunk: int) -> None:
        for version, keys in packed.items():
            fam = FAMILIES[version]
            rules_map = self._map(fam.rules)
            for start in range(0, len(keys), chunk):
                part = keys[start:start + chunk]
                rules_map.delete_batch((fam.key * len(part)).from_buffer_copy(b"".join(part)), len(part))

    def replace_rule(self, rule: Rule | tuple) -> bool:
        """Add or replace a rule, keeping its counters if it existed; True if it created one (as REPLACE answers).

        A changed rate limit starts with full buckets; an unchanged one keeps
        its buckets as they are. Likewise a changed binding starts with
        nothing learned, and an unchanged one keeps what it learned; a rule
        without a binding unbinds it.
        """
        rule = self._as_rule(rule)
        bound = self._kernel_binding(rule)
        cname, key = self._locate(rule.key)
        old = self._value(rule.key)
        if old is None:
            self.add_rule(rule)
            return True
        before = self._rule_of(rule.key, old)
        if rule.rate_limited:
            self._set_rate(old.slot, rule, before)
        if bound is not None and (not old.flags & maps.RULE_F_BIND or _binding_of(self._bind_entry(old.slot)) != bound):
            self._write_binding(old.slot, bound)
        flags = (maps.RULE_F_RATE if rule.rate_limited else 0) | (maps.RULE_F_BIND if bound is not None else 0)
        value = RuleVal(slot=old.slot, max_ttl=rule.max_ttl, flags=flags)
        self._map(cname).update(key, value, bpfsys.BPF_EXIST)
        if before.rate_limited and not rule.rate_limited:
            self._clear_rate(old.slot)  # after the rule stopped pointing at it
        if rule.key.is_exact:
            self._forget_denied(bytes(key))
        else:
            self._forget_denied_where(rule.key.covers)
        return False

    def remove_rule(self, key: RuleKey | Rule | tuple) -> Rule:
        """Remove the rule for (source, group) and return it; NotFound if there is none."""
        rkey = self._as_key(key)
        cname, k = self._locate(rkey)
        old = self._value(rkey)
        if old is None or not self._map(cname).delete(k):
            raise NotFound(f"there is no rule for {rkey}")
        rule = self._rule_of(rkey, old)
        if old.flags & maps.RULE_F_RATE:
            self._clear_rate(old.slot)
        if not rkey.is_exact:
            del self._prefix[rkey]
            self._sync_prefix_flags()
        self._free_slot(old.slot)
        return rule

    # ------------------------------------------------------------------ bindings

    def set_binding(self, key: RuleKey | Rule | tuple, binding: Binding | None) -> None:
        """Bind the rule for `key` to where its sender may be (None or an empty Binding: unbind it).

        The entry goes in (with BPF_F_LOCK: the program may hold its lock)
        before the rule's flag points at it, and a new binding starts with
        nothing learned. Refused with one sentence, changing nothing: no such
        rule (NotFound), a prefix rule bound to a MAC.
        """
        rkey = self._as_key(key)
        if binding is not None and not isinstance(binding, Binding):
            raise DataPlaneError(f"{binding!r} is not a Binding")
        if binding is not None:
            binding.check_for(rkey)
        cname, k = self._locate(rkey)
        value = self._value(rkey)
        if value is None:
            raise NotFound(f"there is no rule for {rkey}")
        if binding is None or binding.empty:
            if value.flags & maps.RULE_F_BIND:
                value.flags &= ~maps.RULE_F_BIND
                self._map(cname).update(k, value, bpfsys.BPF_EXIST)
            return
        self._write_binding(value.slot, binding)
        if not value.flags & maps.RULE_F_BIND:
            value.flags |= maps.RULE_F_BIND
            self._map(cname).update(k, value, bpfsys.BPF_EXIST)

    def _binding_entry(self, rkey: RuleKey) -> tuple[RuleVal, maps.BindingVal] | None:
        value = self._value(rkey)
        if value is None:
            raise NotFound(f"there is no rule for {rkey}")
        if not value.flags & maps.RULE_F_BIND:
            return None
        return value, self._bind_entry(value.slot)

    def binding(self, key: RuleKey | Rule | tuple) -> BindingState | None:
        """The rule's binding, the pair it learned and how often the sender moved; None if it is not bound."""
        found = self._binding_entry(self._as_key(key))
        if found is None:
            return None
        _, e = found
        learned = (e.learned_ifindex, bytes(e.learned_mac)) if e.learned else None
        return BindingState(_binding_of(e), learned, e.moved)

    def _governing(self, source: IPAddress, group: IPAddress,
                   prefixes: dict[tuple, int]) -> tuple[RuleKey, RuleVal] | None:
        """The rule a packet from `source` to `group` falls under (ebpf/mauth.h's lookup order), with its
        value; `prefixes` is the prefix rules' (source, group) -> slot, as policy.find_rule takes them."""
        exact = RuleKey(source, group)
        value = self._value(exact)
        if value is not None:
            return exact, value
        found = find_rule(prefixes, source, group)
        if found is None:
            return None
        key = RuleKey(*found[0])
        value = self._value(key)
        return None if value is None else (key, value)

    def with_offenders(self, entries: list[DeniedEntry]) -> list[DeniedEntry]:
        """Denied entries a binding dropped, with the interface and MAC of the last packet their rule's
        binding dropped (its offender: a binding's drops are of one rule, which keeps the last one)."""
        if not any(e.reason.binding for e in entries):
            return entries
        prefixes = {(k.source, k.group): slot for k, slot in self._prefix.items()}  # once per listing
        out = []
        for e in entries:
            found = self._governing(e.source, e.group, prefixes) if e.reason.binding else None
            if found is not None and found[1].flags & maps.RULE_F_BIND:
                b = self._bind_entry(found[1].slot)
                if b.offender_reason:
                    e = replace(e, iface=iface_name(b.offender_ifindex), mac=bytes(b.offender_mac))
            out.append(e)
        return out

    def clear_learned(self, key: RuleKey | Rule | tuple) -> BindingState:
        """Forget the pair a learning rule pinned (and its moves), so the next packet pins again; returns what was.

        The read and the write are two steps: a packet of another sender
        between them is counted against the old pair, and then forgotten.
        """
        rkey = self._as_key(key)
        before = self.binding(rkey)
        if before is None or not before.binding.learn:
            raise BindingRefused(f"the rule for {rkey} does not learn its sender, so it has nothing to forget")
        found = self._binding_entry(rkey)
        assert found is not None, "bound a moment ago, and only this process writes the maps"
        value, entry = found
        entry.learned, entry.learned_ifindex, entry.moved = 0, 0, 0
        entry.learned_mac[:] = [0] * 6
        self._map("mauth_bindings").update(ctypes.c_uint32(value.slot), entry, bpfsys.BPF_ANY | _BPF_F_LOCK)
        return before

    def get_rule(self, key: RuleKey | Rule | tuple) -> RuleEntry | None:
        rkey = self._as_key(key)
        value = self._value(rkey)
        if value is None:
            return None
        return self._stats_for(self._rule_of(rkey, value), value.slot)

    def _stats_for(self, rule: Rule, slot: int) -> RuleEntry:
        entry = self._counters_for(rule, slot)
        if not rule.bound:
            return entry
        e = self._bind_entry(slot)
        learned = (iface_name(e.learned_ifindex), bytes(e.learned_mac)) if e.learned else None
        return RuleEntry(rule, entry.packets, entry.octets, entry.last_seen, moved=e.moved, learned=learned)

    def _counters_for(self, rule: Rule, slot: int) -> RuleEntry:
        per_cpu = self._map("mauth_stats").lookup(ctypes.c_uint32(slot))
        # A per-CPU array holds every index below its size (a slot is one), as one Stats per CPU.
        assert isinstance(per_cpu, ctypes.Array), "a per-CPU array map holds every slot"
        packets = sum(s.packets for s in per_cpu)
        nbytes = sum(s.bytes for s in per_cpu)
        last = max(s.last_seen for s in per_cpu)
        return RuleEntry(rule, packets, nbytes, millis(mono_to_unix(last)))

    def _entries(self):
        """(RuleKey, value) of every rule, exact and prefix, read from the maps."""
        for cname in _RULE_MAPS:
            for k, v in self._map(cname).items():
                yield RuleKey(k.source, k.group), v
        for cname in _PREFIX_MAPS:
            for k, v in self._map(cname).items():
                yield _prefix_key(cname, k), v

    def rules(self) -> list[RuleEntry]:
        out = [self._stats_for(self._rule_of(key, v), v.slot) for key, v in self._entries()]
        out.sort(key=lambda r: r.rule.key.cursor)
        return out

    def rule_keys(self) -> list[RuleKey]:
        """The key of every rule, read from the maps, in no particular order."""
        keys = [RuleKey(k.source, k.group) for cname in _RULE_MAPS for k in self._map(cname).keys()]
        for cname in _PREFIX_MAPS:
            keys.extend(_prefix_key(cname, k) for k in self._map(cname).keys())
        return keys

    def _rule_table(self) -> dict[RuleKey, Rule]:
        """Every rule, without reading its per-CPU counters."""
        return {key: self._rule_of(key, v) for key, v in self._entries()}

    def rule_count(self) -> int:
        return sum(1 for cname in (*_RULE_MAPS, *_PREFIX_MAPS) for _ in self._map(cname).keys())

    def flush(self) -> int:
        """Remove every rule; returns how many there were."""
        n = 0
        for cname in (*_RULE_MAPS, *_PREFIX_MAPS):
            table = self._map(cname)
            for k in list(table.keys()):
                n += table.delete(k)
        self._scan_slots()
        self._sync_prefix_flags()
        rates = self._map("mauth_rates")
        for k in list(rates.keys()):
            rates.delete(k)
        return n

    def apply(self, wanted: Iterable[Rule]) -> tuple[int, int, int]:
        """Make the rule set equal to `wanted`, touching only the difference (filter.plan).

        Returns (added, replaced, removed). Validation happens before any change.
        """
        diff = plan(self._rule_table(), wanted, self._capacity)
        for rule in diff.add:
            self.add_rule(rule)
        for rule in diff.replace:
            self.replace_rule(rule)
        for key in diff.remove:
            self.remove_rule(key)
        return len(diff.add), len(diff.replace), len(diff.remove)

