"""The XDP data plane, part 1 of 3: the program and its pinned maps on this router.

Loading opens the compiled object (musersd/mauth_xdp.bpf.o) with libbpf
(bpfobj.py), sizes its maps, names their pin paths and sets the program's
read-only options; libbpf then creates each pinned map that is missing and
adopts each one that exists, so a restarted musersd picks up the rules,
counters and mode where the last one left them. Attaching a freshly loaded
program to an interface replaces the old one in a single netlink operation:
there is no instant at which the interface is unguarded. Neither a crash nor
a clean exit of this process detaches anything; only `detach()` does.

libbpf refuses to adopt a pin of another type or size, but only with a line
in its log; `_check_pins()` compares every existing pin with what this layout
expects before the load and refuses a mismatch with one sentence that says
what to do. The mode and the state id live in the cfg map, read here.

xdp_rules.py writes and reads the rules, xdp_counters.py the counters and the
denied table; dataplane.py puts the three together as `DataPlane`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Self

from mauthcore.protocol.model import Mode
from mauthcore.rules import RuleKey

from . import bpfobj, bpfsys, maps
from .filter import (
    DEFAULT_MAX_DENIED,
    DEFAULT_MAX_RULES,
    DataPlaneError,
    check_sizes,
    rpf_ifindex_list,
    sap_group_list,
)
from .maps import FAMILIES

log = logging.getLogger("musersd.dataplane")

DEFAULT_PIN_DIR = "/sys/fs/bpf/mauth"
BPF_FS_MAGIC = 0xCAFE4A11
XDP_FLAGS_SKB_MODE = bpfobj.XDP_FLAGS_SKB_MODE
XDP_FLAGS_DRV_MODE = bpfobj.XDP_FLAGS_DRV_MODE
ATTACH_MODES = ("auto", "native", "generic")

_DENIED_MAPS = tuple(f.denied for f in FAMILIES.values())


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


class XdpLoader:
    """The program and the maps: load or open, attach, mode, state id."""

    name = "xdp"
    families: tuple[int, ...] = (4, 6)

    if TYPE_CHECKING:  # the other parts of DataPlane (xdp_rules.py, xdp_counters.py), which load() and open() use
        def _scan_slots(self) -> None: ...
        def _sync_prefix_flags(self) -> None: ...
        def rule_count(self) -> int: ...
        def _zero_denied(self) -> None: ...

    def __init__(
        self,
        pin_dir: str | os.PathLike = DEFAULT_PIN_DIR,
        *,
        max_rules: int | None = None,
        max_denied: int | None = None,
        sap_groups: Iterable[str] = maps.SAP_GROUPS,
        record_denied: bool = True,
        rpf_ifaces: Iterable[str | int] = (),
        ifaces: Iterable[str] = (),
    ):
        """`max_rules`/`max_denied` None: the size of the pinned maps, or the default for new ones.

        `sap_groups`: the SAP groups (at most four multicast addresses of
        each family, none for no exception) whose announcements from senders without a
        rule are delivered to the router with TTL 1 instead of dropped.
        `record_denied` False: the program keeps no record of denied pairs
        (the tables stay, empty; every drop is still counted by reason).
        `rpf_ifaces`: interfaces (names or indexes, at most eight) on which
        every rule's packets must also pass the reverse-path check, as if
        each rule were bound with rpf (docs/operations.md, "Binding a sender").
        `ifaces`: the interfaces this router guards (musersd --iface), the only
        ones receiver rules and policies may name; `attach()` adds its own.
        """
        check_sizes(max_rules, max_denied)
        if max_denied is not None:  # whole sets of the set-associative table
            max_denied = -(-max_denied // maps.DENIED_WAYS) * maps.DENIED_WAYS
        self.sap_groups = sap_group_list(sap_groups)
        self.record_denied = record_denied
        self.rpf_ifindexes = rpf_ifindex_list(rpf_ifaces)
        self.guarded: dict[str, None] = dict.fromkeys(ifaces)
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
        self._fresh_from: int = 1 << 32
        self.created = False  # True when load() made the maps afresh

    # ------------------------------------------------------------------ setup

    def _pin_path(self, cname: str) -> Path:
        return self.layout_dir / maps.MAPS[cname][0]

    def _expected(self, cname: str) -> tuple[str, int, int, int]:
        _, mtype, ktype, vtype, _ = maps.MAPS[cname]
        if cname in maps.FIXED_ENTRIES:
            entries = maps.FIXED_ENTRIES[cname]
        elif cname in _DENIED_MAPS:
            entries = self._nsets
        else:  # the rule maps, rates and stats: one entry per rule at most
            entries = self._capacity
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

    # The sizes as the maps have them. _check_pins() settles both (_settle_sizes()) before the program is
    # made or a map opened, so every reader of the maps, and _expected() and opts() called after it, find ints.

    @property
    def _capacity(self) -> int:
        """max_rules, settled: how many rules the maps hold."""
        assert self.max_rules is not None, "_check_pins() settles the sizes before any map is used"
        return self.max_rules

    @property
    def _nsets(self) -> int:
        """The sets of each denied table: max_denied, settled, in sets of DENIED_WAYS pairs."""
        assert self.max_denied is not None, "_check_pins() settles the sizes before any map is used"
        return self.max_denied // maps.DENIED_WAYS

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
        opts = maps.Opts(denied_sets=self._nsets, record_denied=int(self.record_denied))
        for i, ifindex in enumerate(self.rpf_ifindexes):
            opts.rpf_ifindex[i] = ifindex
        # A group as the program loads it: its network-order bytes read as native u32 words.
        for i, g4 in enumerate(g for g in self.sap_groups if g.version == 4):
            opts.sap4[i] = int.from_bytes(g4.packed, sys.byteorder)
        for i, g6 in enumerate(g for g in self.sap_groups if g.version == 6):
            for w in range(4):
                opts.sap6[i][w] = int.from_bytes(g6.packed[4 * w:4 * w + 4], sys.byteorder)
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

    def _link_older_layout(self) -> Path | None:
        """Pin an adoptable older layout's maps (maps.ADOPTABLE_LAYOUTS) under this layout's directory too.

        Only when this layout's directory holds no pin and the older one holds
        every map this layout shares with it; returns the older directory, or
        None. The maps are the same objects, so the program still attached
        keeps enforcing them while the new one is loaded and attached.
        """
        if any(self._pin_path(c).exists() for c in maps.MAPS):
            return None
        for old in sorted(maps.ADOPTABLE_LAYOUTS, reverse=True):
            old_dir = self.pin_dir / f"v{old}"
            names = [maps.MAPS[c][0] for c in maps.MAPS if c not in maps.ADDED_SINCE[old]]
            if not all((old_dir / n).exists() for n in names):
                continue
            for n in names:
                fd = bpfsys.obj_get(str(old_dir / n))
                try:
                    bpfsys.obj_pin(fd, str(self.layout_dir / n))
                finally:
                    os.close(fd)
            return old_dir
        return None

    def _unlink_pins(self, directory: Path, names: Iterable[str]) -> None:
        for n in names:
            (directory / n).unlink(missing_ok=True)

    def load(self) -> Self:
        """Load the compiled program, creating the pinned maps or adopting existing ones.

        Pins of an adoptable older layout (maps.ADOPTABLE_LAYOUTS) are adopted
        too: the rules, counters, mode and state id carry over, the maps this
        layout added are created, and the older directory is unpinned once the
        program is loaded (the maps live on under this layout's directory).
        """
        self._prepare_pin_dir()
        older = self._link_older_layout()
        linked = [p.name for p in older.iterdir()] if older is not None else []
        try:
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
        except BaseException:
            if older is not None:  # as before: the older layout's pins alone, and nothing under this one
                self._unlink_pins(self.layout_dir, [maps.MAPS[c][0] for c in maps.MAPS])
            raise
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
            if cfg.layout != maps.LAYOUT:
                log.info("adopted the maps of layout %d from %s (state id kept); created the maps layout %d adds",
                         cfg.layout, older or self.layout_dir, maps.LAYOUT)
                cfg.layout = maps.LAYOUT
                self._map("mauth_cfg").update(ctypes.c_uint32(0), cfg)
                existing = len(maps.MAPS)  # the added maps were expected to be missing
            if older is not None:
                self._unlink_pins(older, linked)
                try:
                    older.rmdir()
                except OSError as exc:
                    log.warning("could not remove %s after adopting its maps: %s", older, exc)
            # A crash between a trie write and the cfg write leaves the bit stale.
            self._sync_prefix_flags()
            log.info(
                "adopted pinned maps under %s (%d rules, mode %s)",
                self.layout_dir,
                self.rule_count(),
                self.mode,
            )
        if not self.record_denied:
            self._zero_denied()  # what an earlier program recorded would only grow stale
            log.info("the filter records no denied pairs; drops are counted by reason only")
        if existing and existing != len(maps.MAPS):
            log.warning("only %d of %d maps were pinned under %s; the others were created empty",
                        existing, len(maps.MAPS), self.layout_dir)
        return self

    def open(self) -> Self:
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

    def __enter__(self) -> Self:
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
        assert isinstance(cfg, maps.Cfg), "array maps always hold index 0; mauth_cfg's value is a Cfg (maps.MAPS)"
        return cfg

    # ------------------------------------------------------------------ attach

    def attach(self, iface: str, mode: str = "auto") -> str:
        """Attach the loaded program to `iface`, replacing any program there; returns the mode used."""
        if mode not in ATTACH_MODES:
            raise DataPlaneError(f"XDP mode {mode!r} is not one of {', '.join(ATTACH_MODES)}")
        ifindex = interface_index(iface)
        self.guarded.setdefault(iface)
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
            new = Mode.parse(mode)
        except ValueError:
            raise DataPlaneError(f"mode {mode!r} is not enforce or monitor") from None
        cfg = self._cfg()
        cfg.mode = new.code
        self._map("mauth_cfg").update(ctypes.c_uint32(0), cfg)
        return new

    @property
    def state_id(self) -> int:
        return self._cfg().state_id

