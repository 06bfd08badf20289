"""The XDP data plane, part 3 of 3: counters by reason and the denied table.

The program counts every verdict by reason in a per-CPU array, and records
denied (source, group) pairs in a set-associative per-CPU table (ebpf/mauth.h);
this sums the CPUs' copies, turns the program's coarse clock into Unix time,
and clears what a new rule makes stale.
"""

from __future__ import annotations

import ctypes
import ipaddress
import time
from typing import TYPE_CHECKING

from mauthcore.protocol.model import DeniedEntry, Reason, millis

from . import bpfsys, maps
from .maps import FAMILIES

_DENIED_MAPS = tuple(f.denied for f in FAMILIES.values())


def mono_to_unix(ns: int) -> float | None:
    """Convert a bpf_ktime_get_coarse_ns() stamp (CLOCK_MONOTONIC) to Unix time."""
    if ns == 0:
        return None
    age = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ns
    return time.time() - max(age, 0) / 1e9


_TICK_MASK = (1 << 32) - 1


def _tick_age(tick: int, now_ns: int) -> int:
    """Nanoseconds since a denied entry's last_seen (the coarse clock >> TICK_SHIFT, modulo 2^32)."""
    return (((now_ns >> maps.TICK_SHIFT) - tick) & _TICK_MASK) << maps.TICK_SHIFT




class XdpCounters:
    """Counters and the denied table (a part of DataPlane: needs XdpLoader's maps)."""

    if TYPE_CHECKING:  # what this part uses of XdpLoader (xdp_loader.py); DataPlane (dataplane.py) has it
        def _map(self, cname: str) -> bpfsys.Map: ...
        def _cfg(self) -> maps.Cfg: ...
        @property
        def _nsets(self) -> int: ...
        @property
        def prog_fd(self) -> int: ...

    # ------------------------------------------------------------------ counters

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-reason packet and byte counters, summed over CPUs."""
        reasons = self._map("mauth_reasons")
        out = {}
        for idx, name in maps.REASONS.items():
            per_cpu = reasons.lookup(ctypes.c_uint32(idx))
            # A per-CPU array holds every index below its size (a reason's is one), as one Counter per CPU.
            assert isinstance(per_cpu, ctypes.Array), "a per-CPU array map holds every index"
            out[name] = {
                "packets": sum(c.packets for c in per_cpu),
                "bytes": sum(c.bytes for c in per_cpu),
            }
        return out

    def reset_counters(self) -> None:
        reasons = self._map("mauth_reasons")
        for idx in range(maps.MAX_REASONS):
            reasons.update(ctypes.c_uint32(idx), reasons.slot_type())

    # The denied table is a per-CPU set-associative cache (ebpf/mauth.h):
    # set i holds DENIED_WAYS entries on each CPU, and a pair seen on several
    # CPUs has an entry on each. User space reads whole sets, adds a pair's
    # entries together, and forgets a pair by zeroing its entries. A zeroing
    # write replaces the set on every CPU at once, so a packet counted in the
    # same set on another CPU at that very instant can be lost from the table
    # (never from the verdict or the reason counters).

    def _denied_sets(self, cname: str):
        """(index, per-CPU set values) for every set of one denied table."""
        table = self._map(cname)
        for idx in range(self._nsets):
            yield idx, table.lookup(ctypes.c_uint32(idx))

    def denied(self) -> list[DeniedEntry]:
        """The denied (source, group) pairs of both families, most recently seen first."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        wall = time.time()
        out = []
        for fam in FAMILIES.values():
            pairs: dict[bytes, list] = {}  # key -> [packets, bytes, age in ns, last TTL, reason]
            for _, per_cpu in self._denied_sets(fam.denied):
                for dset in per_cpu:
                    for d in dset.way:
                        if not d.packets:
                            continue
                        key = bytes(d.src) + bytes(d.grp)
                        age = _tick_age(d.last_seen, now)
                        acc = pairs.get(key)
                        if acc is None:
                            pairs[key] = [d.packets, d.bytes, age, d.last_ttl, d.reason]
                            continue
                        acc[0] += d.packets
                        acc[1] += d.bytes
                        if age < acc[2]:
                            acc[2:] = [age, d.last_ttl, d.reason]
            half = fam.width // 8
            for key, (packets, nbytes, age, ttl, reason) in pairs.items():
                out.append(
                    DeniedEntry(
                        source=ipaddress.ip_address(key[:half]),
                        group=ipaddress.ip_address(key[half:]),
                        reason=Reason(reason + 1),  # the wire's value is the filter's MAUTH_R_* + 1
                        packets=packets,
                        octets=nbytes,
                        last_ttl=ttl,
                        last_seen=millis(wall - age / 1e9),
                    )
                )
        out.sort(key=lambda e: e.last_seen or 0, reverse=True)
        return out

    def clear_denied(self) -> int:
        """Empty the denied tables; returns how many pairs they held."""
        held = len(self.denied())
        self._zero_denied()
        return held

    def _zero_denied(self) -> None:
        nsets = self._nsets
        chunk = 1 << 12
        for cname in _DENIED_MAPS:
            table = self._map(cname)
            for start in range(0, nsets, chunk):
                n = min(chunk, nsets - start)
                keys = (ctypes.c_uint32 * n)(*range(start, start + n))
                table.update_batch(keys, (table.slot_type * n)(), n)

    def _forget_denied(self, key: bytes) -> None:
        """Drop a pair's entries (on every CPU) from the denied table (key: a Key4's or Key6's bytes)."""
        self._forget_denied_many({key})

    def _forget_denied_where(self, covers) -> None:
        """Drop the entries of every pair (source, group) for which covers(source, group) holds."""
        for fam in FAMILIES.values():
            table = self._map(fam.denied)
            for idx, per_cpu in self._denied_sets(fam.denied):
                hit = False
                for dset in per_cpu:
                    for d in dset.way:
                        if d.packets and covers(ipaddress.ip_address(bytes(d.src)), ipaddress.ip_address(bytes(d.grp))):
                            ctypes.memset(ctypes.addressof(d), 0, ctypes.sizeof(d))
                            hit = True
                if hit:
                    table.update(ctypes.c_uint32(idx), per_cpu)

    def _forget_denied_many(self, keys: set[bytes]) -> None:
        """_forget_denied() for many pairs: the pairs' own sets, or one pass over all sets."""
        nsets = self._nsets
        for fam in FAMILIES.values():
            mine = {k for k in keys if len(k) == fam.width // 4}
            if not mine:
                continue
            table = self._map(fam.denied)
            if len(mine) < nsets // 4:
                seed = self._cfg().denied_seed
                indexes = sorted({maps.denied_index(k, seed, nsets) for k in mine})
                sets = ((idx, table.lookup(ctypes.c_uint32(idx))) for idx in indexes)
            else:
                sets = self._denied_sets(fam.denied)
            for idx, per_cpu in sets:
                if self._zero_matching(per_cpu, mine):
                    table.update(ctypes.c_uint32(idx), per_cpu)

    @staticmethod
    def _zero_matching(per_cpu, keys: set[bytes]) -> bool:
        hit = False
        for dset in per_cpu:
            for d in dset.way:
                if d.packets and bytes(d.src) + bytes(d.grp) in keys:
                    ctypes.memset(ctypes.addressof(d), 0, ctypes.sizeof(d))
                    hit = True
        return hit

    def test_run(self, frame: bytes, repeat: int = 1, ingress: int = 0) -> bpfsys.TestRun:
        """Run the loaded program on one frame with BPF_PROG_TEST_RUN, as if it came in on ifindex `ingress`."""
        return bpfsys.prog_test_run(self.prog_fd, frame, repeat, ingress)
