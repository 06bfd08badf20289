"""A compiled BPF object loaded through libbpf (libbpf.so.1, by ctypes).

Strategy: the filter is compiled once, at build time, by clang -target bpf
(scripts/build_bpf.sh) into an ELF object that travels with the package.
This module is the part of libbpf's object API that loading it needs, and
nothing more: open the object, size its maps, name their pin paths, fill
its read-only options, load it (libbpf creates the maps, adopts pins that
are compatible, pins the maps it created, relocates and loads the program),
hand out the program's fd, and attach or detach it at XDP.

Why ctypes and not a binding: libbpf's own Python bindings do not exist,
and the maintained third-party ones (libbpf-rs is Rust; pylibbpf and
friends are thin and unmaintained) add a compiled dependency for a dozen
calls. libbpf.so.1 is on every Debian 12 system with bpftool or iproute2,
keeps its ABI within a major version, and these functions are all in its
LIBBPF_1.0.0 version node.

libbpf reports through a print callback; while an object loads, this module
collects what it prints (the verifier's log among it), so that a failed load
ends in one sentence with the reason, and the whole log goes to the debug
log.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from pathlib import Path

from .bpfsys import BPFSysError
from .bpfsys import lib as _syslib

log = logging.getLogger(__name__)

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

_LIBBPF_WARN, _LIBBPF_INFO, _LIBBPF_DEBUG = 0, 1, 2
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class BPFObjectError(BPFSysError):
    """Opening, loading or attaching a BPF object failed; str() is one sentence."""


def _lib() -> ctypes.CDLL:
    lib = _syslib()
    if getattr(lib, "_mauth_obj_api", False):
        return lib
    vp, cp, ci, cu32, csz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "bpf_object__open_file": ([cp, vp], vp),
        "bpf_object__load": ([vp], ci),
        "bpf_object__close": ([vp], None),
        "bpf_object__find_map_by_name": ([vp, cp], vp),
        "bpf_object__find_program_by_name": ([vp, cp], vp),
        "bpf_map__set_max_entries": ([vp, cu32], ci),
        "bpf_map__max_entries": ([vp], cu32),
        "bpf_map__key_size": ([vp], cu32),
        "bpf_map__value_size": ([vp], cu32),
        "bpf_map__set_pin_path": ([vp, cp], ci),
        "bpf_map__is_pinned": ([vp], ctypes.c_bool),
        "bpf_map__initial_value": ([vp, ctypes.POINTER(csz)], vp),
        "bpf_map__fd": ([vp], ci),
        "bpf_program__fd": ([vp], ci),
        "bpf_xdp_attach": ([ci, ci, cu32, vp], ci),
        "bpf_xdp_detach": ([ci, cu32, vp], ci),
        "libbpf_set_print": ([_PRINT_FN], vp),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    # A mark on the process's one CDLL (bpfsys.lib) that its object-API signatures are set;
    # CDLL declares no such attribute.
    lib._mauth_obj_api = True  # type: ignore[attr-defined]
    lib.libbpf_set_print(_collect)  # for the process: libbpf's output goes to the debug log
    return lib


_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int

# libbpf's print callback is process-wide: one object loads at a time, and
# what libbpf prints meanwhile is kept to say why a load failed.
_load_lock = threading.Lock()
_printed: list[str] = []


@_PRINT_FN
def _collect(level: int, fmt: bytes, args: int) -> int:
    # Warnings are rare and may carry the whole verifier log (up to libbpf's 16 MiB).
    buf = ctypes.create_string_buffer(1 << 24 if level == _LIBBPF_WARN else 4096)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    log.debug("libbpf: %s", text.rstrip())
    if level <= _LIBBPF_INFO:
        _printed.append(text)
    return 0


def _errno(ret: int | None = None) -> int:
    if ret is not None and ret < 0:
        return -ret
    return ctypes.get_errno() or 1


# The verifier's closing statistics, which follow its reason for refusing.
_STATS = ("processed ", "verification time", "stack depth", "max_states_per_insn")


def _reason(printed: list[str]) -> str:
    """The line of libbpf's output that says why, without its 'libbpf: ' prefix."""
    lines = [ln.strip() for chunk in printed for ln in chunk.splitlines() if ln.strip()]
    # The verifier's own last word: the last line of its log before its statistics and
    # libbpf's "-- END PROG LOAD LOG --"; "processed ..." only when that is all there is.
    for i, ln in enumerate(lines):
        if "END PROG LOAD LOG" in ln:
            log_lines = lines[:i]
            for cand in reversed(log_lines):
                if "BEGIN PROG LOAD LOG" in cand:
                    break
                if not cand.startswith(_STATS):
                    return cand
            if log_lines and "BEGIN PROG LOAD LOG" not in log_lines[-1]:
                return log_lines[-1]
    for ln in reversed(lines):
        if ln.startswith("libbpf: ") and "failed to load object" not in ln:
            return ln[len("libbpf: "):]
    return lines[-1] if lines else "no reason given"


# What the kernel needs of a process that loads the filter (systemd/musersd.service).
_PRIVILEGES = "loading needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"


class BPFObject:
    """One opened BPF object file: size and pin its maps, set its options, load it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise BPFObjectError(2, f"the BPF object {self.path} does not exist; build it with `make setup`")
        with _load_lock:
            self._obj = _lib().bpf_object__open_file(os.fsencode(self.path), None)
        if not self._obj:
            code = _errno()
            raise BPFObjectError(code, f"could not open the BPF object {self.path}: {os.strerror(code)}")
        self.loaded = False

    def _map(self, name: str) -> int:
        m = _lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise BPFObjectError(2, f"the BPF object {self.path.name} has no map {name}")
        return m

    def set_max_entries(self, name: str, entries: int) -> None:
        ret = _lib().bpf_map__set_max_entries(self._map(name), entries)
        if ret < 0:
            raise BPFObjectError(-ret, f"could not size map {name} to {entries} entries: {os.strerror(-ret)}")

    def max_entries(self, name: str) -> int:
        return _lib().bpf_map__max_entries(self._map(name))

    def key_size(self, name: str) -> int:
        """The size of map `name`'s key, as the object's BTF declares it."""
        return _lib().bpf_map__key_size(self._map(name))

    def value_size(self, name: str) -> int:
        """The size of one value of map `name` (for a per-CPU map: of one CPU's value)."""
        return _lib().bpf_map__value_size(self._map(name))

    def set_pin_path(self, name: str, path: str | os.PathLike) -> None:
        """Pin map `name` at `path` when it is created, or adopt the map pinned there."""
        ret = _lib().bpf_map__set_pin_path(self._map(name), os.fsencode(path))
        if ret < 0:
            raise BPFObjectError(-ret, f"could not set the pin path of {name}: {os.strerror(-ret)}")

    def set_rodata(self, section: str, value: ctypes.Structure) -> None:
        """Fill the read-only data section `section` (e.g. ".rodata.opts") with `value` before the load."""
        m = self._map(section)
        size = ctypes.c_size_t()
        ptr = _lib().bpf_map__initial_value(m, ctypes.byref(size))
        if not ptr:
            raise BPFObjectError(22, f"the section {section} of {self.path.name} has no initial value")
        if size.value != ctypes.sizeof(value):
            raise BPFObjectError(
                22, f"the section {section} of {self.path.name} is {size.value} bytes, not {ctypes.sizeof(value)}"
            )
        ctypes.memmove(ptr, ctypes.byref(value), size.value)

    def load(self) -> None:
        """Create or adopt the maps, pin the new ones, and load the programs into the kernel."""
        lib = _lib()
        with _load_lock:
            _printed.clear()
            ret = lib.bpf_object__load(self._obj)
            printed = list(_printed)
            _printed.clear()
        if ret < 0:
            reason = _reason(printed)
            # EPERM; or EACCES from a verifier rule that only privilege lifts ("pointer -= pointer prohibited")
            if -ret == errno.EPERM or (-ret == errno.EACCES and "prohibited" in reason):
                reason = f"{reason} ({_PRIVILEGES})"
            raise BPFObjectError(-ret, f"the kernel refused {self.path.name}: {reason}")
        self.loaded = True

    def program_fd(self, name: str) -> int:
        prog = _lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not prog:
            raise BPFObjectError(2, f"the BPF object {self.path.name} has no program {name}")
        fd = _lib().bpf_program__fd(prog)
        if fd < 0:
            raise BPFObjectError(-fd, f"the program {name} is not loaded")
        return fd

    def map_fd(self, name: str) -> int:
        fd = _lib().bpf_map__fd(self._map(name))
        if fd < 0:
            raise BPFObjectError(-fd, f"the map {name} is not created")
        return fd

    def close(self) -> None:
        """Close this process's fds of the object; pins and attachments stay."""
        if self._obj:
            _lib().bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BPFObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def xdp_attach(ifindex: int, prog_fd: int, flags: int) -> None:
    """Attach `prog_fd` at XDP on `ifindex` (this thread's namespace), replacing what is there in one step."""
    ret = _lib().bpf_xdp_attach(ifindex, prog_fd, flags, None)
    if ret < 0:
        raise BPFObjectError(-ret, os.strerror(-ret))


def xdp_detach(ifindex: int, flags: int) -> None:
    ret = _lib().bpf_xdp_detach(ifindex, flags, None)
    if ret < 0:
        raise BPFObjectError(-ret, os.strerror(-ret))
