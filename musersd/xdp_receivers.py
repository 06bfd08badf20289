"""The XDP data plane, part 4 of 4: receiver rules, interface policies, joined groups and refused joins.

The program judges membership reports (ebpf/mauth.h, "Receivers"); this
writes what it judges by and reads what it recorded. Receiver rules live in
a double-buffered array: a change rewrites the half the program is not
reading, then flips the generation word (half and count in one 32-bit
word), so a report is never judged against half a rule set. Each rule keeps
its hit counters' slot across rewrites; a slot handed to a new rule is
zeroed first. The table is read back from the live half, so nothing but the
maps holds state across restarts.

Interface policies are per ifindex (recv_cfg), for the interfaces this
router guards (musersd --iface, or attached by this process): any other is
InvalidReceiver. The groups joined on an interface are counted by the
program as it inserts them (recv_state.added) and by `sweep_groups()` as it
removes them (recv_cfg.freed), so that neither side ever overwrites the
other's count.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.receivers import IfacePolicy, ReceiverMode, ReceiverRule
from mauthcore.rules import IPAddress

from . import bpfsys, maps
from .filter import (
    RECV_COUNTERS,
    DataPlaneError,
    DeniedJoin,
    IfaceReceivers,
    InvalidReceiver,
    JoinedGroup,
    ReceiverStats,
    iface_name,
)

_BPF_NOEXIST = 1


def _padded(packed: bytes) -> bytes:
    """An address's bytes as the program's four words hold them: IPv4 in the first, the rest zero."""
    return packed + bytes(16 - len(packed))


def encode_receiver(rule: ReceiverRule, ifindex: int, slot: int) -> maps.RecvRule:
    """struct mauth_recv_rule for `rule` on interface `ifindex` (0: any), its hits in `slot`; masks precomputed."""
    entry = maps.RecvRule(ifindex=ifindex, family=rule.family, rcv_len=rule.receiver.prefixlen,
                          grp_len=rule.group.prefixlen, slot=slot)
    entry.flags = maps.RECV_F_SOURCE if rule.source is not None else 0
    entry.rcv[:] = _padded(rule.receiver.network_address.packed)
    entry.rcv_mask[:] = _padded(rule.receiver.netmask.packed)
    entry.grp[:] = _padded(rule.group.network_address.packed)
    entry.grp_mask[:] = _padded(rule.group.netmask.packed)
    if rule.source is not None:
        entry.src[:] = _padded(rule.source.packed)
    return entry


def _address(family: int, raw) -> IPAddress:
    data = bytes(raw)
    return ipaddress.IPv4Address(data[:4]) if family == 4 else ipaddress.IPv6Address(data)


def decode_receiver(entry: maps.RecvRule, iface: str) -> ReceiverRule:
    """The rule an entry holds; `iface` is the name of its ifindex ("" for 0), as the caller resolves it."""
    fam = entry.family
    receiver = ipaddress.ip_network((_address(fam, entry.rcv), entry.rcv_len))
    group = ipaddress.ip_network((_address(fam, entry.grp), entry.grp_len))
    source = _address(fam, entry.src) if entry.flags & maps.RECV_F_SOURCE else None
    return ReceiverRule(receiver, group, source, iface)


def gen_word(half: int, count: int) -> int:
    """recv_gen.word: the live half (0 or 1) and how many rules it holds."""
    if not 0 <= count <= maps.MAX_RECV_RULES:
        raise ValueError(f"{count} receiver rules do not fit a half of {maps.MAX_RECV_RULES}")
    return (maps.RECV_GEN_HALF if half else 0) | count


def gen_half(word: int) -> tuple[int, int]:
    """(live half, count) of a recv_gen word."""
    return (1 if word & maps.RECV_GEN_HALF else 0), word & maps.RECV_GEN_COUNT


def sweep_due(group: maps.RecvGroup, now_ns: int, timeout_ns: int, grace_ns: int) -> bool:
    """Whether a joined group goes: no report for `timeout_ns`, or left (after its last report) `grace_ns` ago."""
    if now_ns - group.last_seen > timeout_ns:
        return True
    return group.left != 0 and now_ns - group.left > grace_ns


def _group_key(raw: maps.RecvGroupKey) -> bytes:
    return bytes(raw)


class XdpReceivers:
    """Receiver rules, policies, joined groups and refused joins (a part of DataPlane: needs XdpLoader's maps)."""

    receives = True
    guarded: dict[str, None]  # the interfaces this router guards, in order (XdpLoader)

    if TYPE_CHECKING:
        def _map(self, cname: str) -> bpfsys.Map: ...

    # ------------------------------------------------------------------ interfaces

    def _ifindex(self, iface: str) -> int:
        """The index of guarded interface `iface`; InvalidReceiver if it is not guarded or does not exist."""
        if iface not in self.guarded:
            raise InvalidReceiver(f"interface {iface!r} is not one this router guards (--iface)")
        try:
            return socket.if_nametoindex(iface)
        except OSError:
            raise InvalidReceiver(f"interface {iface!r} does not exist on this router") from None

    # ------------------------------------------------------------------ rules

    def _gen(self) -> maps.RecvGen:
        gen = self._map("mauth_recv_gen").lookup(ctypes.c_uint32(0))
        assert isinstance(gen, maps.RecvGen), "array maps always hold index 0"
        return gen

    def _live(self) -> list[maps.RecvRule]:
        """The entries of the half the program reads, in order."""
        half, count = gen_half(self._gen().word)
        table = self._map("mauth_recv_rules")
        out = []
        for i in range(min(count, maps.MAX_RECV_RULES)):
            entry = table.lookup(ctypes.c_uint32(half * maps.MAX_RECV_RULES + i))
            assert isinstance(entry, maps.RecvRule), "array maps hold every index below max_entries"
            out.append(entry)
        return out

    def _receiver_table(self) -> dict[ReceiverRule, maps.RecvRule]:
        return {decode_receiver(e, iface_name(e.ifindex) if e.ifindex else ""): e for e in self._live()}

    def _check_receiver(self, rule: object) -> int:
        """The ifindex a rule is held with (0: any interface); DataPlaneError for what is not a rule."""
        if not isinstance(rule, ReceiverRule):
            raise DataPlaneError(f"{rule!r} is not a receiver rule")
        return self._ifindex(rule.iface) if rule.iface else 0

    def _write_receivers(self, entries: list[maps.RecvRule]) -> None:
        """Write `entries` (sorted by rule) into the inactive half, then make it the live one."""
        gen = self._gen()
        half, _ = gen_half(gen.word)
        new = 1 - half
        table = self._map("mauth_recv_rules")
        for i, entry in enumerate(entries):
            table.update(ctypes.c_uint32(new * maps.MAX_RECV_RULES + i), entry)
        gen.word = gen_word(new, len(entries))
        self._map("mauth_recv_gen").update(ctypes.c_uint32(0), gen)

    def _zero_hits(self, slots: Iterable[int]) -> None:
        hits = self._map("mauth_recv_hits")
        for slot in slots:
            hits.update(ctypes.c_uint32(slot), hits.slot_type())

    def _rewrite(self, kept: dict[ReceiverRule, maps.RecvRule], added: dict[ReceiverRule, int]) -> None:
        """The table of `kept` entries (their slots stay) and `added` rules (ifindex each), in rule order."""
        used = {e.slot for e in kept.values()}
        free = iter(s for s in range(maps.MAX_RECV_RULES) if s not in used)
        entries = dict(kept)
        fresh = []
        for rule, ifindex in added.items():
            slot = next(free)
            fresh.append(slot)
            entries[rule] = encode_receiver(rule, ifindex, slot)
        self._zero_hits(fresh)
        self._write_receivers([entries[r] for r in sorted(entries)])

    def add_receiver(self, rule: ReceiverRule) -> None:
        """Hold `rule`; Exists if held, TableFull at MAX_RECV_RULES, InvalidReceiver for an unguarded interface."""
        ifindex = self._check_receiver(rule)
        table = self._receiver_table()
        if rule in table:
            raise Exists(f"the receiver rule {rule} exists")
        if len(table) >= maps.MAX_RECV_RULES:
            raise TableFull(f"the receiver rule table is full ({maps.MAX_RECV_RULES} rules)")
        self._rewrite(table, {rule: ifindex})

    def remove_receiver(self, rule: ReceiverRule) -> None:
        """Stop holding `rule`; NotFound if it is not held."""
        if not isinstance(rule, ReceiverRule):
            raise DataPlaneError(f"{rule!r} is not a receiver rule")
        table = self._receiver_table()
        if rule not in table:
            raise NotFound(f"no receiver rule {rule}")
        del table[rule]
        self._rewrite(table, {})

    def apply_receivers(self, wanted: Iterable[ReceiverRule]) -> tuple[int, int]:
        """Hold exactly `wanted` (a rule file's): (added, removed). Every rule is checked before anything changes."""
        desired: dict[ReceiverRule, int] = {}
        for rule in wanted:
            desired[rule] = self._check_receiver(rule)
        if len(desired) > maps.MAX_RECV_RULES:
            raise TableFull(f"the receiver rule table is full ({maps.MAX_RECV_RULES} rules)")
        table = self._receiver_table()
        kept = {r: e for r, e in table.items() if r in desired}
        added = {r: i for r, i in desired.items() if r not in table}
        removed = len(table) - len(kept)
        if added or removed:
            self._rewrite(kept, added)
        return len(added), removed

    def receiver_rules(self) -> list[ReceiverStats]:
        """Every rule held, with the joins it allowed, sorted by rule."""
        hits = self._map("mauth_recv_hits")
        out = []
        for rule, entry in self._receiver_table().items():
            per_cpu = hits.lookup(ctypes.c_uint32(entry.slot))
            cpus = list(per_cpu) if per_cpu is not None else []  # type: ignore[call-overload]  # ctypes array
            out.append(ReceiverStats(rule, sum(c.matched for c in cpus), max((c.last_seen for c in cpus), default=0)))
        return sorted(out, key=lambda s: s.rule)

    # ------------------------------------------------------------------ policies

    def _inspecting(self) -> int:
        cfg = self._map("mauth_recv_cfg")
        return sum(1 for _, v in cfg.items() if v.mode != maps.RECV_OPEN or v.limit)

    def set_receiver_policy(self, policy: IfacePolicy) -> None:
        """What the filter does with reports on `policy.iface` (a guarded interface, else InvalidReceiver)."""
        if not isinstance(policy, IfacePolicy):
            raise DataPlaneError(f"{policy!r} is not an interface policy")
        ifindex = self._ifindex(policy.iface)
        key = ctypes.c_uint32(ifindex)
        self._map("mauth_recv_state").try_update(key, maps.RecvState(), _BPF_NOEXIST)
        cfg = self._map("mauth_recv_cfg")
        old = cfg.lookup(key)
        freed = old.freed if isinstance(old, maps.RecvCfg) else self._added(ifindex)
        cfg.update(key, maps.RecvCfg(mode=policy.mode.code, limit=policy.limit, freed=freed))
        gen = self._gen()
        gen.inspecting = self._inspecting()
        self._map("mauth_recv_gen").update(ctypes.c_uint32(0), gen)

    def _added(self, ifindex: int) -> int:
        state = self._map("mauth_recv_state").lookup(ctypes.c_uint32(ifindex))
        return state.added if isinstance(state, maps.RecvState) else 0

    def receiver_policies(self) -> list[IfaceReceivers]:
        """Every guarded interface's policy (open ones included), groups joined now and counters."""
        cfgs = {k.value: v for k, v in self._map("mauth_recv_cfg").items()}
        states = {k.value: v for k, v in self._map("mauth_recv_state").items()}
        names: dict[int, str] = {}
        for name in self.guarded:
            try:
                names[socket.if_nametoindex(name)] = name
            except OSError:
                continue
        for ifindex in cfgs:
            names.setdefault(ifindex, iface_name(ifindex))
        out = []
        for ifindex, name in names.items():
            c, st = cfgs.get(ifindex), states.get(ifindex)
            policy = IfacePolicy(name) if c is None else IfacePolicy(name, ReceiverMode.from_code(c.mode), c.limit)
            added = st.added if st is not None else 0
            freed = c.freed if c is not None else 0
            counters = dict(zip(RECV_COUNTERS, list(st.counters) if st is not None else [0] * len(RECV_COUNTERS),
                                strict=True))
            out.append(IfaceReceivers(policy, max(added - freed, 0), counters))
        return sorted(out, key=lambda r: r.policy.iface)

    # ------------------------------------------------------------------ what the program recorded

    def denied_joins(self) -> list[DeniedJoin]:
        """The refused joins the program recorded (the most recent RECV_DENIED of them, LRU)."""
        out = []
        for k, v in self._map("mauth_recv_denied").items():
            fam = k.family
            src = bytes(k.src)
            out.append(DeniedJoin(
                iface_name(k.ifindex), _address(fam, k.rcv), _address(fam, k.grp),
                _address(fam, k.src) if any(src) else None, maps.REASONS.get(v.reason, f"unknown_{v.reason}"),
                v.records, v.last_seen, v.version))
        return sorted(out, key=lambda d: (d.iface, d.receiver.version, d.receiver.packed, d.group.packed,
                                          d.source.packed if d.source is not None else b""))

    def clear_denied_joins(self) -> int:
        """Forget every refused join; how many there were."""
        denied = self._map("mauth_recv_denied")
        return sum(1 for k in list(denied.keys()) if denied.delete(k))

    def joined_groups(self) -> list[JoinedGroup]:
        """The groups joined on each inspecting interface, as the program last saw them."""
        out = []
        for k, v in self._map("mauth_recv_joined").items():
            out.append(JoinedGroup(iface_name(k.ifindex), _address(k.family, k.grp), _address(k.family, v.reporter),
                                   v.first_seen, v.last_seen, v.reports, v.left != 0))
        return sorted(out, key=lambda j: (j.iface, j.group.version, j.group.packed))

    def sweep_groups(self, timeout_ns: int, grace_ns: int) -> int:
        """Remove groups unreported for `timeout_ns`, or left `grace_ns` ago; how many went (each frees a place).

        A report the program counts between the read and the delete is lost
        with its entry; the host reports again within the interval.
        """
        return self._sweep(time.clock_gettime_ns(time.CLOCK_MONOTONIC), timeout_ns, grace_ns)

    def _sweep(self, now: int, timeout_ns: int, grace_ns: int) -> int:
        """sweep_groups() at CLOCK_MONOTONIC `now` (ns)."""
        joined = self._map("mauth_recv_joined")
        freed: dict[int, int] = {}
        for k, v in list(joined.items()):
            if sweep_due(v, now, timeout_ns, grace_ns) and joined.delete(k):
                freed[k.ifindex] = freed.get(k.ifindex, 0) + 1
        cfg = self._map("mauth_recv_cfg")
        for ifindex, n in freed.items():
            key = ctypes.c_uint32(ifindex)
            c = cfg.lookup(key)
            if isinstance(c, maps.RecvCfg):
                c.freed += n
                cfg.update(key, c)
        return sum(freed.values())
