#!/usr/bin/env bash
# mauth: compile the XDP filter once, into the object musersd loads through libbpf.
#
#   ebpf/mauth_xdp.c + ebpf/mauth.h  ->  musersd/mauth_xdp.bpf.o
#
# Needs clang (Debian's clang, 14 or newer) and libbpf's headers (libbpf-dev,
# for <bpf/bpf_helpers.h>); the kernel's UAPI headers come from the C
# library's (linux-libc-dev). A router needs none of these: only the object
# and libbpf.so.1. Run by `make setup` and by the Python package's build
# (setup.py), so a wheel carries the object. Does nothing when the object is
# newer than its sources. -g makes clang write BTF, which the maps with a
# spin lock need; the DWARF debug sections are then stripped (BTF stays).
# -mcpu=v1, the instruction set bcc compiled the filter with: with v3 (ALU32)
# the verifier (6.18, measured) loses the bounds in the denied table's search
# and gives up after a million instructions.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# MAUTH_EBPF_DIR: another copy of ebpf/ (an earlier commit's, lab/older_filter.py) built the same way.
EBPF="${MAUTH_EBPF_DIR:-$ROOT/ebpf}"
SRC="$EBPF/mauth_xdp.c"
OUT="${1:-$ROOT/musersd/mauth_xdp.bpf.o}"
CLANG="${CLANG:-clang}"

if [ -e "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "$EBPF/mauth.h" ]; then
    exit 0
fi
command -v "$CLANG" >/dev/null || { echo "build_bpf: $CLANG not found (apt install clang libbpf-dev)" >&2; exit 1; }
[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "build_bpf: <bpf/bpf_helpers.h> not found (apt install libbpf-dev)" >&2; exit 1; }

multiarch="$(gcc -print-multiarch 2>/dev/null || true)"
tmp="$OUT.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$CLANG" -O2 -g -target bpf -mcpu=v1 -Wall -Werror \
    -I "$EBPF" ${multiarch:+-I "/usr/include/$multiarch"} \
    -c "$SRC" -o "$tmp"
strip="$(command -v llvm-strip || ls /usr/bin/llvm-strip-* 2>/dev/null | sort -V | tail -1 || true)"
[ -n "$strip" ] && "$strip" -g "$tmp"
mv -f "$tmp" "$OUT"
trap - EXIT
echo "build_bpf: built $OUT" >&2
