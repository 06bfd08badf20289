"""What every benchmark in bench/ shares: the machine's description, a private
bpffs, CPU pinning, robust summaries, the one JSON file of all figures, and
the benchmarks' own compiled BPF programs.

Strategy. Each benchmark is a module run as `python -m bench.<name>` that
measures, prints a table and stores its figures as one section of
docs/benchmarks.json, keyed by its name, leaving the other sections alone, so
`make bench` (which runs them all, see bench/__main__.py) regenerates the
whole file and a single benchmark can be rerun on its own. Benchmarks compare
against a floor measured in the same run and report medians of interleaved
rounds: this machine is shared and noisy, absolute figures drift, ratios to
a same-run floor much less.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lab.netns import private_bpffs as netns_private_bpffs

REPO = Path(__file__).resolve().parent.parent
JSON_PATH = REPO / "docs" / "benchmarks.json"
BENCH_BPF_DIR = REPO / "ebpf" / "bench"
BUILD_BENCH_BPF = REPO / "scripts" / "build_bench_bpf.sh"

_built = False


def build_bench_objects() -> None:
    """Compile the benchmarks' XDP programs (ebpf/bench/*.bpf.c) where an object is missing or older.

    scripts/build_bench_bpf.sh does the work and does nothing when every
    object is up to date; this runs it at most once per process.
    """
    global _built
    if _built:
        return
    proc = subprocess.run([str(BUILD_BENCH_BPF)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"could not build the benchmarks' BPF programs: {(proc.stderr or proc.stdout).strip()}")
    _built = True


def bench_object(name: str):
    """The benchmarks' BPF program `name` (ebpf/bench/NAME.bpf.c), built if needed and opened, not loaded.

    Returns a musersd.bpfobj.BPFObject: size its maps, then load() it.
    """
    from musersd.bpfobj import BPFObject

    build_bench_objects()
    return BPFObject(BENCH_BPF_DIR / f"{name}.bpf.o")


def load_bench_object(name: str):
    """bench_object(name), loaded into the kernel as it is."""
    obj = bench_object(name)
    try:
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _deb_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def libbpf_version() -> str | None:
    """The version of the libbpf.so.1 that loads the programs, as libbpf reports it, with Debian's package version."""
    import ctypes

    try:
        from musersd import bpfsys

        lib = bpfsys.lib()
        for fn in (lib.libbpf_major_version, lib.libbpf_minor_version):
            fn.argtypes, fn.restype = [], ctypes.c_uint32
        version = f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"
    except (OSError, AttributeError):
        version = None
    deb = _deb_version("libbpf1")
    if version and deb:
        return f"{version} (Debian {deb})"
    return version or deb


def machine() -> dict:
    """What the figures were measured on."""
    mem_kb = _first_line_with("/proc/meminfo", "MemTotal")
    jit = None
    with contextlib.suppress(OSError):
        jit = Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip()
    debian = spectre_v2 = None
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    with contextlib.suppress(OSError):
        spectre_v2 = Path("/sys/devices/system/cpu/vulnerabilities/spectre_v2").read_text().strip()
    return {
        "os": f"Debian {debian}" if debian else platform.platform(),
        "kernel": platform.release(),
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name"),
        "cpu_mhz": _first_line_with("/proc/cpuinfo", "cpu MHz"),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "virtualized": "hypervisor" in (_first_line_with("/proc/cpuinfo", "flags") or "").split(),
        "libbpf": libbpf_version(),
        "bpf_jit_enable": jit,
        "spectre_v2": spectre_v2,  # call/return mitigations in force
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def private_bpffs() -> Iterator[Path]:
    """A bpffs of our own in a temporary directory, unmounted and removed afterwards."""
    if os.geteuid() != 0:
        raise SystemExit("benchmarks load BPF programs: run them as root (make bench does)")
    with netns_private_bpffs("mauth-bench-") as base:
        yield base


def _cpu_busy() -> dict[int, int]:
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                busy[int(name[3:])] = sum(v) - v[3] - v[4]  # all but idle and iowait
    return busy


def quietest_cpu(sample_s: float = 0.5) -> int:
    """The allowed CPU that was least busy over the next `sample_s` seconds."""
    allowed = sorted(os.sched_getaffinity(0))
    before = _cpu_busy()
    time.sleep(sample_s)
    after = _cpu_busy()
    return min(allowed, key=lambda c: (after.get(c, 0) - before.get(c, 0), -c))


def pin_to_quietest_cpu(sample_s: float = 0.5) -> int:
    """Pin this process to the allowed CPU that was least busy over `sample_s`; returns it.

    BPF_PROG_TEST_RUN runs on the calling CPU (the kernel disables migration
    for the loop), so pinning keeps every measurement on one CPU's caches and
    per-CPU map slots. BPF_F_TEST_RUN_ON_CPU would not do: the kernel accepts
    it only for raw tracepoint programs, not XDP.
    """
    cpu = quietest_cpu(sample_s)
    os.sched_setaffinity(0, {cpu})
    return cpu


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def stored_section(name: str, path: Path = JSON_PATH) -> object:
    """The section `name` of the JSON file as stored, or None (no file, no such section, not JSON)."""
    try:
        return json.loads(path.read_text()).get(name)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def store_section(name: str, section: dict, path: Path = JSON_PATH) -> None:
    """Write `section` under key `name` in the JSON file, keeping every other section, and say so."""
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data[name] = section
    data = {k: data[k] for k in sorted(data)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote section {name!r} of {path}", file=sys.stderr)
