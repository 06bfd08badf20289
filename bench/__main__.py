"""Run the benchmarks: `python -m bench` runs them all (what `make bench` does).

    python -m bench                        # every area, in the order below
    python -m bench forwarding control     # only these areas
    python -m bench --list                 # the areas and what they measure

Each area is a module of its own that measures, prints its table and
writes its section of docs/benchmarks.json (leaving the others alone); a
new benchmark is one more line in BENCHMARKS. Then bench.report rewrites
the generated tables of docs/benchmarks.md from that file. They run one after another in
separate processes, so one's pinned CPU, loaded programs, namespaces and
memory cannot disturb the next. The whole run must stay under 15 minutes on
the 2-core machine docs/benchmarks.md describes; each module prints how
long it took, and the total is printed at the end. The benchmarks' own XDP
programs (ebpf/bench/) are compiled first, once, by scripts/build_bench_bpf.sh.
"""

from __future__ import annotations

import subprocess
import sys
import time

from . import common

BENCHMARKS = {
    "xdp_cost": "per-packet cost of the XDP filter vs an empty XDP program (BPF_PROG_TEST_RUN)",
    "forwarding": "forwarding and drop rates of the lab router under each filter; upcalls under a flood",
    "control": "protocol command rates, loading and re-converging rules, memory, SQLite vs PostgreSQL, fail-over",
    "sap": "SAP announcements parsed per second",
    "loader": "loading the filter and starting musersd: the bcc loader against the libbpf loader",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["--list"], ["-l"]):
        for name, what in BENCHMARKS.items():
            print(f"{name:12s} {what}")
        return 0
    if any(a.startswith("-") for a in args):
        print("usage: python -m bench [--list] [AREA ...]", file=sys.stderr)
        return 2
    unknown = [a for a in args if a not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; the areas are: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    started = time.monotonic()
    common.build_bench_objects()
    for name in args or list(BENCHMARKS):
        module = f"bench.{name}"
        print(f"== {module}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", module]).returncode
        print(f"== {module}: {'ok' if rc == 0 else f'exit {rc}'} in {time.monotonic() - t0:.0f} s",
              file=sys.stderr, flush=True)
        if rc != 0:
            failed.append(module)
    if subprocess.run([sys.executable, "-m", "bench.report"]).returncode != 0:  # the tables of benchmarks.md
        failed.append("bench.report")
    print(f"== all: {time.monotonic() - started:.0f} s{'; failed: ' + ', '.join(failed) if failed else ''}",
          file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
