"""Show the x86-64 code the kernel JIT made of the filter, with call targets named.

    python -m bench.jited            # disassembly, then a summary of calls and atomics
    python -m bench.jited --summary  # the summary only

What `bpftool prog dump jited` would show, if Debian's bpftool were built with
libbfd (it is not: "Error: No libbfd support"). The JIT image comes from
BPF_OBJ_GET_INFO_BY_FD, objdump disassembles it at its kernel address, and
/proc/kallsyms names the targets of calls, so a helper call, a hash lookup
or a `lock` instruction on the hot path is easy to spot. `bpftool prog dump
xlated id ID` works as it is and shows the same program after the
verifier's rewrites (inlined map lookups, for one).
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import re
import subprocess
import sys
import tempfile

from musersd import bpfsys
from musersd.dataplane import DataPlane

from . import common


class _ProgInfo(ctypes.Structure):
    # struct bpf_prog_info (include/uapi/linux/bpf.h), up to jited_func_lens.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
    ]


def _info(fd: int, info: _ProgInfo) -> None:
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ret = bpfsys.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret < 0:
        raise bpfsys.BPFSysError(-ret, "BPF_OBJ_GET_INFO_BY_FD")


def jited_image(prog_fd: int) -> tuple[bytes, int]:
    """(JIT image, its kernel address) of a loaded program (single function)."""
    probe = _ProgInfo()
    _info(prog_fd, probe)
    image = (ctypes.c_uint8 * probe.jited_prog_len)()
    ksym = ctypes.c_uint64()
    info = _ProgInfo(jited_prog_len=probe.jited_prog_len, jited_prog_insns=ctypes.addressof(image),
                     nr_jited_ksyms=1, jited_ksyms=ctypes.addressof(ksym))
    _info(prog_fd, info)
    return bytes(image), ksym.value


def _kernel_text_symbols() -> tuple[list[int], list[str]]:
    syms = []
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, kind, name = line.split()[:3]
            if kind in "tT":
                syms.append((int(addr, 16), name))
    syms.sort()
    return [a for a, _ in syms], [n for _, n in syms]


def disassemble(image: bytes, address: int) -> list[str]:
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(image)
        f.flush()
        out = subprocess.run(
            ["objdump", "-b", "binary", "-m", "i386:x86-64", f"--adjust-vma={address:#x}", "-D", f.name],
            capture_output=True, text=True, check=True,
        ).stdout
    addrs, names = _kernel_text_symbols()
    lines = []
    for line in out.splitlines():
        m = re.search(r"\bcall\s+(0x[0-9a-f]+)", line)
        if m:
            target = int(m.group(1), 16)
            i = bisect.bisect_right(addrs, target) - 1
            if i >= 0 and target - addrs[i] < 0x10000:
                line += f"   <{names[i]}{'+%#x' % (target - addrs[i]) if target != addrs[i] else ''}>"
        if re.match(r"\s*[0-9a-f]+:\t", line):
            lines.append(line)
    return lines


def summary(lines: list[str]) -> str:
    calls = [line.split("<")[-1].rstrip(">") for line in lines if "\tcall" in line and "<" in line]
    locked = sum(1 for line in lines if "\tlock " in line)
    out = [f"{len(lines)} instructions, {locked} lock-prefixed (atomic), {len(calls)} calls:"]
    out += [f"  {name} x{calls.count(name)}" for name in sorted(set(calls))]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.jited", description=__doc__.split("\n\n")[0])
    ap.add_argument("--summary", action="store_true", help="print only the count of instructions, calls, atomics")
    args = ap.parse_args(argv)
    with common.private_bpffs() as bpffs, DataPlane(bpffs / "jited").load() as dp:
        image, address = jited_image(dp.prog_fd)
        print(f"mauth_xdp: program id {bpfsys.prog_id(dp.prog_fd)}, {len(image)} bytes of x86-64", file=sys.stderr)
        lines = disassemble(image, address)
    if not args.summary:
        print("\n".join(lines))
        print()
    print(summary(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
