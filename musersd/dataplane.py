"""The data plane: the only code in mauth that loads the filter and touches its maps.

Strategy. The XDP program (ebpf/mauth_xdp.c, compiled once at build time into
musersd/mauth_xdp.bpf.o) keeps all of its state in maps pinned under
`<pin-dir>/v<layout>/`. Loading opens the object with libbpf (bpfobj.py),
sizes its maps, names their pin paths and sets the program's read-only
options (SAP groups, whether denied pairs are recorded, the denied table's
sets); libbpf then creates each pinned map that is missing and adopts each one
that exists, so a restarted musersd picks up the rules, counters and mode
where the last one left them. Attaching a freshly loaded program to an interface replaces
the old one in a single netlink operation: there is no instant at which the
interface is unguarded. Neither a crash nor a clean exit of this process
detaches anything; only `detach()` does.

libbpf refuses to adopt a pin of another type or size, but only with a
line in its log; `_check_pins()` compares every existing pin with what this
layout expects before the load and refuses a mismatch with one sentence
that says what to do.

Per-rule counters sit in a per-CPU array indexed by a slot. Slots are
allocated here; the set in use is recomputed from the rule maps on open, so
nothing but the maps themselves holds state across restarts. One process
writes the maps at a time (musersd); others may read.

Each address family has its own maps (maps.FAMILIES): exact rules live in a
hash map, prefix rules in two LPM tries (ebpf/mauth.h gives the lookup order),
denied pairs in a table of their own; stats slots are shared, rate limits in a map of token buckets keyed by the
rule's slot. Writes are ordered so that the program never sees a half-made
rule: a rule's bucket goes in before the rule that points at it, a trie's
bit in cfg is set only once the trie holds a rule and cleared only once it
is empty again. A trie lookup answers with the longest match, not the exact
key, so the prefix rules' keys are also indexed here (rebuilt from the tries
on open and whenever the index does not know a key).

Every method that changes state validates first and raises `DataPlaneError`
(one sentence) without changing anything when its input is bad.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import secrets
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import bpfobj, bpfsys, maps
from .maps import FAMILIES, Key4, Mode, RuleVal
from .rules import IPAddress, Rule, RuleError, RuleKey

log = logging.getLogger(__name__)

DEFAULT_PIN_DIR = "/sys/fs/bpf/mauth"
DEFAULT_MAX_RULES = 65536
DEFAULT_MAX_DENIED = 4096
BPF_FS_MAGIC = 0xCAFE4A11

_RULE_VAL = struct.Struct("=IBBH")  # RuleVal as bytes: slot, max_ttl, flags, pad
_KEY4 = struct.Struct("!II")  # Key4 as bytes: source, group in network order
assert _RULE_VAL.size == ctypes.sizeof(RuleVal) and _KEY4.size == ctypes.sizeof(Key4)

_BPF_F_LOCK = 4  # update a map value that holds a bpf_spin_lock under that lock

# The maps of each kind, over both families, and how a trie's key reads back as a rule key.
_RULE_MAPS = tuple(f.rules for f in FAMILIES.values())
_PREFIX_MAPS = tuple(m for f in FAMILIES.values() for m in (f.src_prefix, f.grp_prefix))
_DENIED_MAPS = tuple(f.denied for f in FAMILIES.values())
_SOURCE_TRIES = frozenset(f.src_prefix for f in FAMILIES.values())


def _prefix_key(cname: str, k) -> RuleKey:
    """The RuleKey of a prefix trie's key (a full-length prefix is never written, but reads back as a host)."""
    net = k.prefix_network
    side = net.network_address if net.prefixlen == net.max_prefixlen else net
    if cname in _SOURCE_TRIES:
        return RuleKey(side, k.exact_address)
    return RuleKey(k.exact_address, side)


XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
ATTACH_MODES = ("auto", "native", "generic")


class DataPlaneError(Exception):
    """The data plane refused an operation; the message says why in one sentence."""


class RuleExists(DataPlaneError):
    pass


class RuleNotFound(DataPlaneError):
    pass


class TableFull(DataPlaneError):
    pass


@dataclass(frozen=True)
class RuleStats:
    rule: Rule
    packets: int
    bytes: int
    last_seen: float | None  # Unix time of the last passed packet, None if never

    def as_dict(self) -> dict:
        return {
            "source": str(self.rule.source),
            "group": str(self.rule.group),
            "max_ttl": self.rule.max_ttl,
            "pps": self.rule.pps,
            "bps": self.rule.bps,
            "packets": self.packets,
            "bytes": self.bytes,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class DeniedEntry:
    source: IPAddress
    group: IPAddress
    packets: int
    bytes: int
    last_ttl: int
    reason: str
    last_seen: float | None

    def as_dict(self) -> dict:
        return {
            "source": str(self.source),
            "group": str(self.group),
            "packets": self.packets,
            "bytes": self.bytes,
            "last_ttl": self.last_ttl,
            "reason": self.reason,
            "last_seen": self.last_seen,
        }


def _mono_to_unix(ns: int) -> float | None:
    """Convert a bpf_ktime_get_coarse_ns() stamp (CLOCK_MONOTONIC) to Unix time."""
    if ns == 0:
        return None
    age = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ns
    return time.time() - max(age, 0) / 1e9


_TICK_MASK = (1 << 32) - 1


def _tick_age(tick: int, now_ns: int) -> int:
    """Nanoseconds since a denied entry's last_seen (the coarse clock >> TICK_SHIFT, modulo 2^32)."""
    return (((now_ns >> maps.TICK_SHIFT) - tick) & _TICK_MASK) << maps.TICK_SHIFT


def sap_group_list(groups: Iterable[str]) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Validate the SAP groups given to the program: routable multicast, distinct, at most four per family."""
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for g in groups:
        try:
            addr = ipaddress.ip_address(str(g).strip())
        except ValueError:
            raise DataPlaneError(f"SAP group {g!r} is not an IP address") from None
        if addr.version == 4 and (not addr.is_multicast or addr in _LINK_LOCAL_GROUPS):
            raise DataPlaneError(f"SAP group {addr} is not a routable multicast group (224.0.1.0-239.255.255.255)")
        if addr.version == 6 and (not addr.is_multicast or addr.packed[1] & 0x0F <= 2):
            raise DataPlaneError(f"SAP group {addr} is not a routable IPv6 multicast group (ff00::/8, scope 3 or wider)")
        if addr not in out:
            out.append(addr)
    for version in (4, 6):
        n = sum(1 for a in out if a.version == version)
        if n > maps.MAX_SAP_GROUPS:
            raise DataPlaneError(f"at most {maps.MAX_SAP_GROUPS} IPv{version} SAP groups can be given, not {n}")
    return tuple(out)


_LINK_LOCAL_GROUPS = ipaddress.IPv4Network("224.0.0.0/24")


def is_bpffs(path: str | os.PathLike) -> bool:
    try:
        return os.statvfs(path) is not None and _fs_magic(path) == BPF_FS_MAGIC
    except OSError:
        return False


def _fs_magic(path) -> int:
    # os.statvfs has no f_type; read it with statfs(2) through ctypes.
    class _StatFS(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = _StatFS()
    if libc.statfs(os.fsencode(str(path)), ctypes.byref(buf)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return buf.f_type & 0xFFFFFFFF


def interface_index(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise DataPlaneError(f"interface {iface!r} does not exist") from None


def xdp_status(iface: str) -> tuple[str | None, int]:
    """(attach mode, program id) of the XDP program on `iface`; (None, 0) if none."""
    from pyroute2 import IPRoute

    interface_index(iface)
    with IPRoute() as ipr:
        link = ipr.get_links(ifname=iface)[0]
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None, 0
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") or 0
    prog = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    # pyroute2 >= 0.9 decodes the attach mode to a name; older ones give the number.
    mode = {
        0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi",
        "none": None, "xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload", "multi": "multi",
    }.get(attached, "unknown")
    return mode, prog


def detach(iface: str) -> bool:
    """Detach whatever XDP program is on `iface` (in this thread's namespace); False if none."""
    current, _ = xdp_status(iface)
    if current is None:
        return False
    flags = XDP_FLAGS_DRV_MODE if current == "native" else XDP_FLAGS_SKB_MODE
    try:
        bpfobj.xdp_detach(interface_index(iface), flags)
    except bpfobj.BPFSysError as exc:
        raise DataPlaneError(f"could not detach the XDP program from {iface}: {exc}") from None
    log.info("iface=%s XDP program detached", iface)
    return True


class DataPlane:
    """The filter's maps and program on this router."""

    def __init__(
        self,
        pin_dir: str | os.PathLike = DEFAULT_PIN_DIR,
        *,
        max_rules: int | None = None,
        max_denied: int | None = None,
        sap_groups: "Iterable[str]" = maps.DEFAULT_SAP_GROUPS,
        record_denied: bool = True,
    ):
        """`max_rules`/`max_denied` None: the size of the pinned maps, or the default for new ones.

        `sap_groups`: the SAP groups (at most four multicast addresses of
        each family, none for no exception) whose announcements from senders without a
        rule are delivered to the router with TTL 1 instead of dropped.
        `record_denied` False: the program keeps no record of denied pairs
        (the tables stay, empty; every drop is still counted by reason).
        """
        if max_rules is not None and not 1 <= max_rules <= 16 * 1024 * 1024:
            raise DataPlaneError(f"max rules {max_rules} is outside 1-16777216")
        if max_denied is not None and not 16 <= max_denied <= 1024 * 1024:
            raise DataPlaneError(f"denied table size {max_denied} is outside 16-1048576")
        if max_denied is not None:  # whole sets of the set-associative table
            max_denied = -(-max_denied // maps.DENIED_WAYS) * maps.DENIED_WAYS
        self.sap_groups = sap_group_list(sap_groups)
        self.record_denied = record_denied
        self.pin_dir = Path(pin_dir)
        self.layout_dir = self.pin_dir / f"v{maps.LAYOUT}"
        self.max_rules = max_rules
        self.max_denied = max_denied
        self._obj: bpfobj.BPFObject | None = None
        self._prog_fd = -1
        self._maps: dict[str, bpfsys.Map] = {}
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._prefix: dict[RuleKey, int] = {}  # prefix rules -> slot (see _value())
        # Slots from here up have never been handed out since the maps were
        # created, so their per-CPU stats are still zero. Unknown for adopted
        # maps (a removed rule leaves its counters behind): then nothing is.
        self._fresh_from = 1 << 32
        self.created = False  # True when load() made the maps afresh

    # ------------------------------------------------------------------ setup

    def _pin_path(self, cname: str) -> Path:
        return self.layout_dir / maps.MAPS[cname][0]

    def _expected(self, cname: str) -> tuple[str, int, int, int]:
        _, mtype, ktype, vtype, _ = maps.MAPS[cname]
        if cname == "mauth_cfg":
            entries = 1
        elif cname == "mauth_reasons":
            entries = maps.MAX_REASONS
        elif cname in _DENIED_MAPS:
            entries = self.max_denied // maps.DENIED_WAYS
        else:  # the rule maps, rates and stats: one entry per rule at most
            entries = self.max_rules
        return mtype, ctypes.sizeof(ktype), ctypes.sizeof(vtype), entries

    def _pinned_entries(self, cname: str) -> int | None:
        path = self._pin_path(cname)
        if not path.exists():
            return None
        fd = bpfsys.obj_get(str(path))
        try:
            return bpfsys.map_info(fd).max_entries
        finally:
            os.close(fd)

    def _settle_sizes(self) -> None:
        """Unset sizes take the pinned maps' sizes, or the defaults."""
        if self.max_rules is None:
            self.max_rules = self._pinned_entries("mauth_rules4") or DEFAULT_MAX_RULES
        if self.max_denied is None:
            sets = self._pinned_entries("mauth_denied4")
            self.max_denied = sets * maps.DENIED_WAYS if sets else DEFAULT_MAX_DENIED

    def _check_pins(self) -> int:
        """Refuse pins of another shape; return how many of the maps exist."""
        self._settle_sizes()
        found = 0
        for cname in maps.MAPS:
            path = self._pin_path(cname)
            if not path.exists():
                continue
            found += 1
            fd = bpfsys.obj_get(str(path))
            try:
                info = bpfsys.map_info(fd)
            finally:
                os.close(fd)
            mtype, ksize, vsize, entries = self._expected(cname)
            got = (info.type, info.key_size, info.value_size, info.max_entries)
            if got != (mtype, ksize, vsize, entries):
                if info.max_entries != entries and (info.type, info.key_size, info.value_size) == (
                    mtype,
                    ksize,
                    vsize,
                ):
                    unit = "entries"
                    if cname in _DENIED_MAPS:  # sets of DENIED_WAYS pairs: speak in pairs
                        unit, have, want = "denied pairs", info.max_entries * maps.DENIED_WAYS, self.max_denied
                    else:
                        have, want = info.max_entries, entries
                    raise DataPlaneError(
                        f"pinned map {path} holds {have} {unit} but {want} were asked for; "
                        f"use the size it was created with or remove {self.layout_dir} to start empty"
                    )
                raise DataPlaneError(
                    f"pinned map {path} is a {info.type} map of {info.key_size}/{info.value_size}-byte "
                    f"entries, not the {mtype} of {ksize}/{vsize} that layout {maps.LAYOUT} needs; "
                    f"remove {self.layout_dir} to start empty"
                )
        return found

    def _prepare_pin_dir(self) -> None:
        if not self.pin_dir.exists():
            parent = self.pin_dir.parent
            if not is_bpffs(parent):
                raise DataPlaneError(f"pin directory {self.pin_dir} is not on a bpffs (mount -t bpf bpf {parent})")
            self.pin_dir.mkdir(mode=0o700)
        elif not is_bpffs(self.pin_dir):
            raise DataPlaneError(f"pin directory {self.pin_dir} is not on a bpffs")
        self.layout_dir.mkdir(mode=0o700, exist_ok=True)

    def opts(self) -> maps.Opts:
        """The program's read-only options for this data plane (struct mauth_opts)."""
        opts = maps.Opts(denied_sets=self.max_denied // maps.DENIED_WAYS, record_denied=int(self.record_denied))
        # A group as the program loads it: its network-order bytes read as native u32 words.
        for i, g in enumerate(g for g in self.sap_groups if g.version == 4):
            opts.sap4[i] = int.from_bytes(g.packed, sys.byteorder)
        for i, g in enumerate(g for g in self.sap_groups if g.version == 6):
            for w in range(4):
                opts.sap6[i][w] = int.from_bytes(g.packed[4 * w:4 * w + 4], sys.byteorder)
        return opts

    def _object(self) -> bpfobj.BPFObject:
        """The compiled program, opened, with its maps sized and pinned and its options set."""
        obj = bpfobj.BPFObject(maps.OBJECT)
        try:
            for cname in maps.MAPS:
                _, _, _, entries = self._expected(cname)
                obj.set_max_entries(cname, entries)
                obj.set_pin_path(cname, self._pin_path(cname))
            obj.set_rodata(".rodata.opts", self.opts())
        except Exception:
            obj.close()
            raise
        return obj

    def load(self) -> "DataPlane":
        """Load the compiled program, creating the pinned maps or adopting existing ones."""
        self._prepare_pin_dir()
        existing = self._check_pins()
        try:
            obj = self._object()
        except bpfobj.BPFSysError as exc:
            raise DataPlaneError(f"could not load the XDP program: {exc}") from None
        try:
            obj.load()
            prog_fd = obj.program_fd("mauth_xdp")
        except bpfobj.BPFSysError as exc:
            obj.close()
            raise DataPlaneError(f"could not load the XDP program: {exc}") from None
        self.close()
        self._obj, self._prog_fd = obj, prog_fd
        self._open_maps()
        cfg = self._cfg()
        if cfg.layout == 0:
            self.created = True
            if not existing:
                self._fresh_from = 0
            cfg.layout = maps.LAYOUT
            cfg.max_rules = self.max_rules
            cfg.state_id = secrets.randbits(63) or 1
            cfg.denied_seed = secrets.randbits(32)
            cfg.mode = Mode.ENFORCE.code
            self._maps["mauth_cfg"].update(ctypes.c_uint32(0), cfg)
            log.info("created pinned maps under %s (capacity %d rules)", self.layout_dir, self.max_rules)
            for old in range(1, maps.LAYOUT):
                if (self.pin_dir / f"v{old}").exists():
                    log.warning("maps of layout %d remain under %s; this program does not use them, so the router"
                                " starts without rules (state id changed); remove that directory to free them",
                                old, self.pin_dir / f"v{old}")
        else:
            # A crash between a trie write and the cfg write leaves the bit stale.
            self._sync_prefix_flags()
            log.info(
                "adopted pinned maps under %s (%d rules, mode %s)",
                self.layout_dir,
                self.rule_count(),
                self.mode.value,
            )
        if not self.record_denied:
            self._zero_denied()  # what an earlier program recorded would only grow stale
            log.info("the filter records no denied pairs; drops are counted by reason only")
        if existing and existing != len(maps.MAPS):
            log.warning("only %d of %d maps were pinned under %s; the others were created empty",
                        existing, len(maps.MAPS), self.layout_dir)
        return self

    def open(self) -> "DataPlane":
        """Open existing pinned maps without loading a program (read, and write rules)."""
        if not self.layout_dir.exists() or self._check_pins() != len(maps.MAPS):
            raise DataPlaneError(f"no mauth maps are pinned under {self.layout_dir}; is musersd running?")
        self._open_maps()
        cfg = self._cfg()
        if cfg.layout != maps.LAYOUT:
            raise DataPlaneError(f"maps under {self.layout_dir} were never initialised by musersd")
        self.max_rules = cfg.max_rules
        return self

    def _open_maps(self) -> None:
        self.close_maps()
        for cname, (_, _, ktype, vtype, percpu) in maps.MAPS.items():
            fd = bpfsys.obj_get(str(self._pin_path(cname)))
            self._maps[cname] = bpfsys.Map(fd, ktype, vtype, cname, percpu=percpu)
        self._scan_slots()

    def close_maps(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()

    def close(self) -> None:
        """Release this process's handles. Pins, program and attachments stay."""
        self.close_maps()
        if self._obj is not None:
            self._obj.close()
            self._obj = None
            self._prog_fd = -1

    def __enter__(self) -> "DataPlane":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prog_fd(self) -> int:
        if self._obj is None:
            raise DataPlaneError("the XDP program is not loaded in this process")
        return self._prog_fd

    def _map(self, cname: str) -> bpfsys.Map:
        try:
            return self._maps[cname]
        except KeyError:
            raise DataPlaneError("the data plane is not open; call load() or open() first") from None

    def _cfg(self) -> maps.Cfg:
        cfg = self._map("mauth_cfg").lookup(ctypes.c_uint32(0))
        assert cfg is not None, "array maps always hold index 0"
        return cfg

    # ------------------------------------------------------------------ attach

    def attach(self, iface: str, mode: str = "auto") -> str:
        """Attach the loaded program to `iface`, replacing any program there; returns the mode used."""
        if mode not in ATTACH_MODES:
            raise DataPlaneError(f"XDP mode {mode!r} is not one of {', '.join(ATTACH_MODES)}")
        ifindex = interface_index(iface)
        if self._obj is None:
            raise DataPlaneError("the XDP program is not loaded in this process; call load() first")
        current, prog = xdp_status(iface)
        tries = {"auto": ["native", "generic"], "native": ["native"], "generic": ["generic"]}[mode]
        if current in ("native", "generic") and mode == "auto":
            # Replace in the mode already in use: that is atomic. Switching
            # between native and generic would need a detach first (a gap).
            tries = [current]
        last_error = None
        for attempt in tries:
            flags = XDP_FLAGS_DRV_MODE if attempt == "native" else XDP_FLAGS_SKB_MODE
            try:
                bpfobj.xdp_attach(ifindex, self._prog_fd, flags)
            except bpfobj.BPFSysError as exc:
                last_error = exc
                log.info("iface=%s native XDP refused (%s), trying generic", iface, exc)
                continue
            if prog:
                log.info("iface=%s replaced XDP program id %d in %s mode", iface, prog, attempt)
            log.info("iface=%s XDP program attached in %s mode", iface, attempt)
            return attempt
        raise DataPlaneError(f"could not attach the XDP program to {iface}: {last_error}")

    def detach(self, iface: str) -> bool:
        """Detach whatever XDP program is on `iface`; False if there was none."""
        return detach(iface)

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> Mode:
        return Mode.from_code(self._cfg().mode)

    def set_mode(self, mode: Mode | str) -> Mode:
        try:
            new = Mode(mode)
        except ValueError:
            raise DataPlaneError(f"mode {mode!r} is not enforce or monitor") from None
        cfg = self._cfg()
        cfg.mode = new.code
        self._map("mauth_cfg").update(ctypes.c_uint32(0), cfg)
        return new

    @property
    def state_id(self) -> int:
        return self._cfg().state_id

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
        if self._next_slot >= self.max_rules:
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
        self._next_slot += 1
        self._fresh_from = max(self._fresh_from, self._next_slot)
        return self._next_slot - 1

    def _alloc_slots(self, n: int) -> tuple[list[int], list[int]]:
        """n slots (free ones first, lowest first): (all of them, those whose stats need zeroing)."""
        if n > len(self._free_slots) + self.max_rules - self._next_slot:
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
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

    @staticmethod
    def _as_rule(rule: Rule | tuple) -> Rule:
        if isinstance(rule, Rule):
            return rule
        try:
            return Rule.make(*rule)
        except RuleError as exc:
            raise DataPlaneError(str(exc)) from None
        except TypeError:
            raise DataPlaneError(f"{rule!r} is not a (source, group, max_ttl) rule") from None

    @staticmethod
    def _as_key(key: RuleKey | Rule | tuple) -> RuleKey:
        if isinstance(key, Rule):
            return key.key
        if isinstance(key, RuleKey):
            return key
        try:
            return RuleKey.make(*key)
        except RuleError as exc:
            raise DataPlaneError(str(exc)) from None

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
        if value is None or key.is_exact:
            return value
        if self._prefix.get(key) != value.slot:
            self._scan_prefixes()
            if self._prefix.get(key) != value.slot:
                return None
        return value

    def _rule_of(self, key: RuleKey, value: RuleVal) -> Rule:
        """The Rule a map value stands for, with its rate limits from `rates`."""
        pps = bps = 0
        if value.flags & maps.RULE_F_RATE:
            rate = self._map("mauth_rates").lookup(ctypes.c_uint32(value.slot))
            if rate is not None:
                pps, bps = rate.pps, rate.bps
        return Rule(key, value.max_ttl, pps, bps)

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
        """Add a rule; RuleExists if (source, group) already has one."""
        rule = self._as_rule(rule)
        cname, key = self._locate(rule.key)
        rules = self._map(cname)
        # An exact key is checked here; a prefix key by the insert itself
        # (BPF_NOEXIST in a trie compares exact keys, where a lookup would not).
        if rule.key.is_exact and rules.lookup(key) is not None:
            raise RuleExists(f"a rule for {rule.key} already exists")
        slot = self._alloc_slot()
        self._zero_stats(slot)
        # The bucket goes in before the rule that points at it: the program
        # never sees MAUTH_RULE_F_RATE without an entry in rates.
        if rule.rate_limited:
            self._set_rate(slot, rule)
        value = RuleVal(slot=slot, max_ttl=rule.max_ttl, flags=maps.RULE_F_RATE if rule.rate_limited else 0)
        err = rules.try_update(key, value, bpfsys.BPF_NOEXIST)
        if err:
            if rule.rate_limited:
                self._clear_rate(slot)
            self._free_slot(slot)
            if err == errno.EEXIST:
                raise RuleExists(f"a rule for {rule.key} already exists")
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
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
        Exact rules without a rate limit go in by the batch; prefix and
        rate-limited rules (few, as a rule) one by one with add_rule().
        """
        new = [self._as_rule(r) for r in rules]
        if not new:
            return 0
        seen: set[RuleKey] = set()
        for r in new:
            if r.key in seen:
                raise RuleExists(f"the rule for {r.key} is given twice")
            seen.add(r.key)
        one_by_one = [r for r in new if not r.key.is_exact or r.rate_limited]
        new = [r for r in new if r.key.is_exact and not r.rate_limited]
        for r in one_by_one:
            if r.key in self._prefix or (r.key.is_exact and self._value(r.key) is not None):
                raise RuleExists(f"a rule for {r.key} already exists")
        if len(new) + len(one_by_one) > len(self._free_slots) + self.max_rules - self._next_slot:
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
        key4 = _KEY4.pack  # Key4 as bytes; int() of an address is cheaper than .packed
        packed = [key4(int(r.source), int(r.group)) if r.key.family == 4 else r.source.packed + r.group.packed
                  for r in new]
        wanted = set(packed)
        if new and self._next_slot - len(self._free_slots) > 0:
            for cname in _RULE_MAPS:
                for k in self._map(cname).keys():
                    if bytes(k) in wanted:
                        raise RuleExists(f"a rule for {RuleKey(k.source, k.group)} already exists")
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
                            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
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
        """Add or replace a rule, keeping its counters if it existed; True if it replaced one.

        A changed rate limit starts with full buckets; an unchanged one keeps
        its buckets as they are.
        """
        rule = self._as_rule(rule)
        cname, key = self._locate(rule.key)
        old = self._value(rule.key)
        if old is None:
            self.add_rule(rule)
            return False
        before = self._rule_of(rule.key, old)
        if rule.rate_limited:
            self._set_rate(old.slot, rule, before)
        value = RuleVal(slot=old.slot, max_ttl=rule.max_ttl, flags=maps.RULE_F_RATE if rule.rate_limited else 0)
        self._map(cname).update(key, value, bpfsys.BPF_EXIST)
        if before.rate_limited and not rule.rate_limited:
            self._clear_rate(old.slot)  # after the rule stopped pointing at it
        if rule.key.is_exact:
            self._forget_denied(bytes(key))
        else:
            self._forget_denied_where(rule.key.covers)
        return True

    def remove_rule(self, key: RuleKey | Rule | tuple) -> Rule:
        """Remove the rule for (source, group) and return it; RuleNotFound if there is none."""
        rkey = self._as_key(key)
        cname, k = self._locate(rkey)
        old = self._value(rkey)
        if old is None or not self._map(cname).delete(k):
            raise RuleNotFound(f"there is no rule for {rkey}")
        rule = self._rule_of(rkey, old)
        if old.flags & maps.RULE_F_RATE:
            self._clear_rate(old.slot)
        if not rkey.is_exact:
            del self._prefix[rkey]
            self._sync_prefix_flags()
        self._free_slot(old.slot)
        return rule

    def get_rule(self, key: RuleKey | Rule | tuple) -> RuleStats | None:
        rkey = self._as_key(key)
        value = self._value(rkey)
        if value is None:
            return None
        return self._stats_for(self._rule_of(rkey, value), value.slot)

    def _stats_for(self, rule: Rule, slot: int) -> RuleStats:
        per_cpu = self._map("mauth_stats").lookup(ctypes.c_uint32(slot))
        packets = sum(s.packets for s in per_cpu)
        nbytes = sum(s.bytes for s in per_cpu)
        last = max(s.last_seen for s in per_cpu)
        return RuleStats(rule, packets, nbytes, _mono_to_unix(last))

    def _entries(self):
        """(RuleKey, value) of every rule, exact and prefix, read from the maps."""
        for cname in _RULE_MAPS:
            for k, v in self._map(cname).items():
                yield RuleKey(k.source, k.group), v
        for cname in _PREFIX_MAPS:
            for k, v in self._map(cname).items():
                yield _prefix_key(cname, k), v

    def rules(self) -> list[RuleStats]:
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
        """Make the rule set equal to `wanted`, touching only the difference.

        Returns (added, replaced, removed). Validation happens before any change.
        """
        desired = {r.key: r for r in wanted}
        current = self._rule_table()
        added = replaced = removed = 0
        for key, rule in desired.items():
            old = current.get(key)
            if old is None:
                self.add_rule(rule)
                added += 1
            elif old != rule:
                self.replace_rule(rule)
                replaced += 1
        for key in current.keys() - desired.keys():
            self.remove_rule(key)
            removed += 1
        return added, replaced, removed

    # ------------------------------------------------------------------ counters

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-reason packet and byte counters, summed over CPUs."""
        reasons = self._map("mauth_reasons")
        out = {}
        for idx, name in maps.REASONS.items():
            per_cpu = reasons.lookup(ctypes.c_uint32(idx))
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
        for idx in range(self.max_denied // maps.DENIED_WAYS):
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
                        packets=packets,
                        bytes=nbytes,
                        last_ttl=ttl,
                        reason=maps.REASONS.get(reason, str(reason)),
                        last_seen=wall - age / 1e9,
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
        nsets = self.max_denied // maps.DENIED_WAYS
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
        nsets = self.max_denied // maps.DENIED_WAYS
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

    def test_run(self, frame: bytes, repeat: int = 1) -> bpfsys.TestRun:
        """Run the loaded program on one frame with BPF_PROG_TEST_RUN."""
        return bpfsys.prog_test_run(self.prog_fd, frame, repeat)
