"""Run every benchmark in turn: `python -m bench` (what `make bench` does).

Each one is a module of its own that measures, prints its table and writes
its section of docs/benchmarks.json; a new benchmark is one more line in
BENCHMARKS. They run one after another in separate processes, so one's
pinned CPU, loaded programs and memory cannot disturb the next. The whole
run must stay under 15 minutes on the 2-core machine docs/benchmarks.md
describes; each module prints how long it took.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = [
    "bench.xdp_cost",  # per-packet cost of the XDP filter vs an empty XDP program
]


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"== {module}", file=sys.stderr, flush=True)
        started = time.monotonic()
        rc = subprocess.run([sys.executable, "-m", module]).returncode
        print(f"== {module}: {'ok' if rc == 0 else f'exit {rc}'} in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
        if rc != 0:
            failed.append(module)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
