#!/usr/bin/env bash
# mauth: compile the benchmarks' own XDP programs into the objects bench/ loads through libbpf.
#
#   ebpf/bench/NAME.bpf.c  ->  ebpf/bench/NAME.bpf.o   (for each NAME; gitignored)
#
# The same compiler and flags as scripts/build_bpf.sh (see there for why
# -mcpu=v1 and -g). Run by bench/common.py before a benchmark loads one of
# them; only the objects older than their source are rebuilt. Needs clang
# and libbpf-dev, as `make setup` installs them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/ebpf/bench"
CLANG="${CLANG:-clang}"

stale=()
for src in "$DIR"/*.bpf.c; do
    out="${src%.c}.o"
    if [ ! -e "$out" ] || [ "$src" -nt "$out" ]; then
        stale+=("$src")
    fi
done
[ "${#stale[@]}" -eq 0 ] && exit 0

command -v "$CLANG" >/dev/null || { echo "build_bench_bpf: $CLANG not found (apt install clang libbpf-dev)" >&2; exit 1; }
[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "build_bench_bpf: <bpf/bpf_helpers.h> not found (apt install libbpf-dev)" >&2; exit 1; }

multiarch="$(gcc -print-multiarch 2>/dev/null || true)"
strip="$(command -v llvm-strip || ls /usr/bin/llvm-strip-* 2>/dev/null | sort -V | tail -1 || true)"
for src in "${stale[@]}"; do
    out="${src%.c}.o"
    tmp="$out.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    "$CLANG" -O2 -g -target bpf -mcpu=v1 -Wall -Werror \
        ${multiarch:+-I "/usr/include/$multiarch"} \
        -c "$src" -o "$tmp"
    [ -n "$strip" ] && "$strip" -g "$tmp"
    mv -f "$tmp" "$out"
    trap - EXIT
    echo "build_bench_bpf: built $out" >&2
done
