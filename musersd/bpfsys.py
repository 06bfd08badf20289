"""Thin ctypes bindings to libbpf's syscall wrappers: maps and programs by fd.

Strategy: bpfobj.py loads the compiled filter and pins its maps; everything
after that (opening a pinned map, checking its type and size, reading and
writing entries, batches, running the program on a test packet) is a plain
C function of libbpf (Debian's libbpf1) on a file descriptor, so this module
wraps exactly those and nothing else. Every failure raises `BPFSysError`
naming the call and the errno.

libbpf >= 1.0 returns -errno from these functions (and sets errno).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # typeshed's union of the ctypes data types (Structure, simple types, arrays, ...), stubs only
    from ctypes import _CDataType as CData

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# enum bpf_map_type (include/uapi/linux/bpf.h)
MAP_TYPES = {
    1: "hash",
    2: "array",
    5: "percpu_hash",
    6: "percpu_array",
    9: "lru_hash",
    10: "lru_percpu_hash",
    11: "lpm_trie",
}


class BPFSysError(OSError):
    """A bpf(2) operation failed; str() names the operation and the reason."""


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    lib = ctypes.CDLL(name, use_errno=True)
    c_int, c_void_p, c_char_p, c_uint64, c_uint32 = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_uint64,
        ctypes.c_uint32,
    )
    lib.bpf_obj_get.argtypes = [c_char_p]
    lib.bpf_obj_get.restype = c_int
    lib.bpf_obj_pin.argtypes = [c_int, c_char_p]
    lib.bpf_obj_pin.restype = c_int
    lib.bpf_map_lookup_elem.argtypes = [c_int, c_void_p, c_void_p]
    lib.bpf_map_lookup_elem.restype = c_int
    lib.bpf_map_update_elem.argtypes = [c_int, c_void_p, c_void_p, c_uint64]
    lib.bpf_map_update_elem.restype = c_int
    lib.bpf_map_delete_elem.argtypes = [c_int, c_void_p]
    lib.bpf_map_delete_elem.restype = c_int
    lib.bpf_map_get_next_key.argtypes = [c_int, c_void_p, c_void_p]
    lib.bpf_map_get_next_key.restype = c_int
    lib.bpf_obj_get_info_by_fd.argtypes = [c_int, c_void_p, ctypes.POINTER(c_uint32)]
    lib.bpf_obj_get_info_by_fd.restype = c_int
    lib.bpf_prog_test_run_opts.argtypes = [c_int, c_void_p]
    lib.bpf_prog_test_run_opts.restype = c_int
    lib.bpf_map_update_batch.argtypes = [c_int, c_void_p, c_void_p, ctypes.POINTER(c_uint32), c_void_p]
    lib.bpf_map_update_batch.restype = c_int
    lib.bpf_map_delete_batch.argtypes = [c_int, c_void_p, ctypes.POINTER(c_uint32), c_void_p]
    lib.bpf_map_delete_batch.restype = c_int
    lib.libbpf_num_possible_cpus.argtypes = []
    lib.libbpf_num_possible_cpus.restype = c_int
    return lib


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    return _load()


def _check(ret: int, what: str) -> int:
    if ret < 0:
        code = -ret if ret != -1 else ctypes.get_errno()
        raise BPFSysError(code, f"{what}: {os.strerror(code)}")
    return ret


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def obj_get(path: str) -> int:
    """Open a pinned object; returns a new fd (the caller closes it)."""
    return _check(lib().bpf_obj_get(os.fsencode(path)), f"open pinned object {path}")


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, os.fsencode(path)), f"pin at {path}")


class _MapInfo(ctypes.Structure):
    # struct bpf_map_info, first fields (the kernel fills up to info_len).
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


@dataclass(frozen=True)
class MapInfo:
    type: str
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return MapInfo(
        type=MAP_TYPES.get(info.type, str(info.type)),
        id=info.id,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        name=info.name.decode(errors="replace"),
    )


class _ProgInfo(ctypes.Structure):
    # struct bpf_prog_info, first fields.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
    ]


def prog_id(fd: int) -> int:
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "prog info")
    return info.id


class _BatchOpts(ctypes.Structure):
    # struct bpf_map_batch_opts (libbpf 1.x, tools/lib/bpf/bpf.h)
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


# Errors a batch update reports as an outcome (how far it got) rather than raising.
_BATCH_OUTCOMES = (errno.EEXIST, errno.ENOENT, errno.E2BIG, errno.ENOMEM, errno.ENOSPC)


class Map:
    """A BPF map by fd, with ctypes key and value types (value = per-CPU array if percpu)."""

    def __init__(self, fd: int, key_type: type[CData], value_type: type[CData], name: str, percpu: bool = False):
        self.fd = fd
        self.name = name
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        self.ncpus = possible_cpus() if percpu else 1
        # Per-CPU values are laid out as ncpus slots, each rounded up to 8 bytes.
        if percpu:
            assert ctypes.sizeof(value_type) % 8 == 0, "per-CPU values must be 8-byte multiples"
            self.slot_type: type[CData] = value_type * self.ncpus
        else:
            self.slot_type = value_type

    def lookup(self, key) -> object | None:
        value = self.slot_type()
        ret = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if ret < 0:
            code = -ret
            if code == errno.ENOENT:
                return None
            _check(ret, f"lookup in {self.name}")
        return value

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        ret = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags)
        _check(ret, f"update of {self.name}")

    def try_update(self, key, value, flags: int) -> int:
        """Update; return 0 or the positive errno (EEXIST, ENOENT, E2BIG) instead of raising."""
        ret = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags)
        if ret in (-errno.EEXIST, -errno.ENOENT, -errno.E2BIG, -errno.ENOMEM):
            return -ret
        _check(ret, f"update of {self.name}")
        return 0

    def delete(self, key) -> bool:
        """Delete a key; False if it was not there."""
        ret = lib().bpf_map_delete_elem(self.fd, ctypes.byref(key))
        if ret == -errno.ENOENT:
            return False
        _check(ret, f"delete from {self.name}")
        return True

    def try_update_batch(self, keys, values, count: int, flags: int = BPF_ANY) -> tuple[int, int]:
        """Update `count` entries with one BPF_MAP_UPDATE_BATCH call.

        `keys` is a ctypes array of key_type, `values` one of slot_type (for a
        per-CPU map each value holds every CPU's copy). The kernel applies the
        entries in order and stops at the first failure; returns (how many
        were applied, 0 or the positive errno that stopped it: EEXIST, E2BIG,
        ENOMEM...). Other failures raise.
        """
        n = ctypes.c_uint32(count)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=flags, flags=0)
        ret = lib().bpf_map_update_batch(
            self.fd, ctypes.byref(keys), ctypes.byref(values), ctypes.byref(n), ctypes.byref(opts)
        )
        if ret < 0 and -ret in _BATCH_OUTCOMES:
            return n.value, -ret
        _check(ret, f"batch update of {self.name}")
        return n.value, 0

    def update_batch(self, keys, values, count: int, flags: int = BPF_ANY) -> None:
        done, err = self.try_update_batch(keys, values, count, flags)
        if err:
            raise BPFSysError(err, f"batch update of {self.name} (entry {done} of {count}): {os.strerror(err)}")

    def delete_batch(self, keys, count: int) -> int:
        """Delete `count` keys with BPF_MAP_DELETE_BATCH; stops at the first missing key.

        Returns how many were deleted.
        """
        n = ctypes.c_uint32(count)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
        ret = lib().bpf_map_delete_batch(self.fd, ctypes.byref(keys), ctypes.byref(n), ctypes.byref(opts))
        if ret < 0 and -ret != errno.ENOENT:
            _check(ret, f"batch delete from {self.name}")
        return n.value

    def keys(self):
        """Iterate keys. Concurrent deletes may skip or restart entries (kernel semantics)."""
        key = self.key_type()
        nxt = self.key_type()
        prev = None
        while True:
            ret = lib().bpf_map_get_next_key(self.fd, prev, ctypes.byref(nxt))
            if ret == -errno.ENOENT:
                return
            _check(ret, f"iterate {self.name}")
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            yield self.key_type.from_buffer_copy(key)
            prev = ctypes.byref(key)

    def items(self):
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts (libbpf 1.x, tools/lib/bpf/bpf.h), batch_size included (live frames)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class TestRun:
    retval: int
    duration_ns: int  # mean per repetition, as the kernel measured it
    data: bytes = b""  # the frame as the program left it


class XdpMd(ctypes.Structure):
    # struct xdp_md (linux/bpf.h): the context a test run may pass in
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex")]


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1, ingress_ifindex: int = 0) -> TestRun:
    """Run a loaded XDP program on one frame (`repeat` times) with BPF_PROG_TEST_RUN.

    `ingress_ifindex`: the interface the frame comes in on (ctx->ingress_ifindex), an interface of the calling
    thread's network namespace; 0: none (the kernel then gives its loopback).
    """
    if len(frame) < 14:
        raise ValueError("BPF_PROG_TEST_RUN needs at least an Ethernet header (14 bytes)")
    buf = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    opts = TestRunOpts()
    opts.sz = ctypes.sizeof(opts)
    opts.data_in = ctypes.cast(buf, ctypes.c_void_p)
    opts.data_size_in = len(frame)
    opts.data_out = ctypes.cast(out, ctypes.c_void_p)
    opts.data_size_out = len(out)
    opts.repeat = repeat
    if ingress_ifindex:
        ctx = XdpMd(data_end=len(frame), ingress_ifindex=ingress_ifindex)
        opts.ctx_in = ctypes.cast(ctypes.byref(ctx), ctypes.c_void_p)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return TestRun(retval=opts.retval, duration_ns=opts.duration, data=out.raw[:opts.data_size_out])
