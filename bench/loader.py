"""Loading the filter: bcc's loader against libbpf's, side by side in one run.

    python -m bench.loader [--rounds 5] [--bcc-tree /tmp/mauth-bcc] [--bcc-commit 4546a4d]
                           [--libbpf-tree DIR] [--no-json]

Two source trees of mauth are measured in turn, round after round, the
order swapped every round:

    bcc      the tree at --bcc-commit (the last one whose musersd compiled
             ebpf/mauth_xdp.c at every start with bcc), a git worktree at
             --bcc-tree with a venv of its own made with
             --system-site-packages so that it sees Debian's python3-bpfcc
    libbpf   this tree (or the checkout at --libbpf-tree, for instance a
             worktree of a given commit), run by this tree's .venv: musersd
             loads the compiled object musersd/mauth_xdp.bpf.o through
             libbpf.so.1 (built by the tree's scripts/build_bpf.sh if missing)

Each tree's processes run in its own directory, so they import its own
musersd (checked for the load).

For each tree and round:

    load     a fresh Python process imports musersd.dataplane and runs
             DataPlane(pin_dir).load() once, with a fresh pin directory
             under /sys/fs/bpf, removed afterwards. It reports the seconds
             load() took, the seconds its imports took, and its peak RSS
             (VmHWM of /proc/self/status after the load). The parent times
             the process from spawn to exit.
    start    musersd (`python -m musersd.cli`, as the `musersd` command
             runs it) is spawned in a network namespace of its own
             guarding one end of a veth pair, with a fresh pin directory
             under /sys/fs/bpf; the time is taken from the spawn until it
             answers a protocol v2 HELLO on its UDP port, asked every 5 ms.
             Its peak RSS is its VmHWM at that moment. Then it is stopped,
             and the namespace and the pin directory are removed (also on
             failure).

    packet   (after the rounds above) one long-lived process per tree holds
             its DataPlane, loaded into a fresh pin directory with the rules
             of bench.xdp_cost at 1,000 rules (exact, rate-limited, prefix
             and IPv6 rules), and runs each of xdp_cost's packets through
             the loaded program with BPF_PROG_TEST_RUN (--repeat times a
             run); runs alternate between the trees, kind by kind, round
             by round, so both programs are timed side by side on the same
             machine state. The kernel's mean ns per packet is recorded.

Figures are medians over rounds; the ratio is bcc's median over libbpf's.
Targets (the libbpf loader, on this host): musersd serving within 0.5 s of
its spawn, and a peak RSS under 60 MB (MB: 10^6 bytes).

When the bcc tree cannot be had (no python3-bpfcc, no kernel headers at
/lib/modules/$(uname -r)/build, or its worktree or venv cannot be made),
the benchmark says so in one sentence and measures the libbpf loader only.

Figures go to docs/benchmarks.json, section "loader"; a Markdown table is
printed. What they do not say: the time to load on a cold page cache (the
rounds after the first run warm), or on another kernel (the verifier's time
is part of both loaders' figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lab import netns
from lab.daemons import write_key_file
from lab.netns import inside, sh
from musersd.dataplane import is_bpffs

from . import common

SECTION = "loader"
BPFFS = Path("/sys/fs/bpf")
DEFAULT_BCC_TREE = Path("/tmp/mauth-bcc")
DEFAULT_BCC_COMMIT = "4546a4d"
TARGET_START_S = 0.5
TARGET_RSS_MB = 60.0
PORT = 7575
START_TIMEOUT_S = 60.0
POLL_S = 0.005
MEASURES = ("load_s", "import_s", "process_s", "load_rss_mb", "start_s", "start_rss_mb")

# Run by each tree's Python in a fresh process: argv[1] is the pin directory.
LOAD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import musersd.dataplane
from musersd.dataplane import DataPlane
t1 = time.perf_counter()
dp = DataPlane(sys.argv[1]).load()
t2 = time.perf_counter()
dp.close()
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"module": musersd.dataplane.__file__, "import_s": t1 - t0, "load_s": t2 - t1, "vmhwm_kib": hwm}))
"""


# Run by each tree's Python in a long-lived process: argv[1] is the pin directory,
# the first line of stdin the rules (JSON), then one "frame-hex repeat" per line.
PACKET_CHILD = r"""
import json, sys
from musersd.dataplane import DataPlane
from mauthcore.rules import Rule
dp = DataPlane(sys.argv[1], max_rules=4096).load()
rules = [Rule.make(s, g, t, pps=p, bps=b) for s, g, t, p, b in json.loads(sys.stdin.readline())]
dp.apply(rules)
print(json.dumps({"rules": dp.rule_count()}), flush=True)
for line in sys.stdin:
    frame, repeat = line.split()
    r = dp.test_run(bytes.fromhex(frame), int(repeat))
    print(json.dumps({"retval": r.retval, "ns": r.duration_ns}), flush=True)
dp.close()
"""


class Tree:
    """One source tree of mauth and the Python that runs it."""

    def __init__(self, name: str, root: Path, python: Path, commit: str):
        self.name, self.root, self.python, self.commit = name, root, python, commit

    def describe(self) -> dict:
        return {"path": str(self.root), "commit": self.commit, "python": str(self.python)}


def _git(*args: str, cwd: Path = common.REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def libbpf_tree(path: Path) -> Tree:
    """The libbpf tree at `path`, its filter object built if missing, run by this tree's venv."""
    path = path.resolve()
    if not (path / "musersd" / "bpfobj.py").exists():
        raise SystemExit(f"{path} is not a tree whose musersd loads the filter through libbpf (no musersd/bpfobj.py)")
    if not (path / "musersd" / "mauth_xdp.bpf.o").exists():
        subprocess.run([str(path / "scripts" / "build_bpf.sh")], check=True)
    commit = _git("rev-parse", "--short", "HEAD", cwd=path)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=path))
    return Tree("libbpf", path, common.REPO / ".venv" / "bin" / "python",
                commit + (" with uncommitted changes" if dirty else ""))


def bcc_tree(path: Path, commit: str) -> tuple[Tree | None, str]:
    """(the bcc tree, made if missing, "") or (None, why it cannot be had)."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, "Debian's python3-bpfcc is not installed (/usr/bin/python3 cannot import bcc)"
    headers = Path("/lib/modules") / os.uname().release / "build"
    if not headers.exists():
        return None, f"there are no kernel headers at {headers}, which bcc compiles against"
    try:
        if not (path / ".git").exists():
            print(f"making the bcc tree: git worktree add {path} {commit}", file=sys.stderr)
            _git("worktree", "add", "--detach", str(path), commit)
        venv = path / ".venv"
        if not (venv / "bin" / "python").exists():
            print(f"making its venv: {venv} (--system-site-packages), mauth installed editable", file=sys.stderr)
            subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True,
                           capture_output=True, text=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", str(path)], check=True,
                           capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = (getattr(exc, "stderr", "") or "").strip().splitlines()
        return None, f"the bcc tree at {path} could not be made ({out[-1] if out else exc})"
    python = path / ".venv" / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import bcc, musersd.dataplane; print(musersd.dataplane.__file__)"],
                           cwd=path, capture_output=True, text=True)
    if check.returncode != 0 or not check.stdout.strip().startswith(str(path)):
        last = (check.stderr.strip().splitlines() or [check.stdout.strip()])[-1]
        return None, f"the bcc tree at {path} does not import bcc and its own musersd ({last})"
    return Tree("bcc", path, python, _git("rev-parse", "--short", "HEAD", cwd=path)), ""


def _fresh_pin_dir() -> Path:
    return BPFFS / f"mauth-loader-{uuid.uuid4().hex[:10]}"


def _vmhwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _mb(kib: int) -> float:
    return kib * 1024 / 1e6


def measure_load(tree: Tree) -> dict:
    """DataPlane(pin_dir).load() in a fresh process of `tree`."""
    pin_dir = _fresh_pin_dir()
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([str(tree.python), "-c", LOAD_CHILD, str(pin_dir)], cwd=tree.root,
                              capture_output=True, text=True, timeout=netns.patience(120))
        process_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"DataPlane.load() failed in the {tree.name} tree: {proc.stderr.strip()[-800:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["module"].startswith(str(tree.root)):
        raise SystemExit(f"the {tree.name} tree's process imported {out['module']}, not its own musersd")
    return {"load_s": out["load_s"], "import_s": out["import_s"], "process_s": process_s,
            "load_rss_mb": _mb(out["vmhwm_kib"])}


def _answers(ns: str, keys) -> bool:
    from mauthcore.protocol.udp import RouterClient

    with inside(ns):
        client = RouterClient("127.0.0.1", PORT, keys, timeout=0.05, tries=1, max_timeout=0.05)
    try:
        client.hello()
        return True
    except Exception:  # refused (not bound yet), timed out, or any protocol error: not serving
        return False
    finally:
        client.close()


def measure_start(tree: Tree, workdir: Path) -> dict:
    """musersd of `tree` from spawn to its first answer, in a namespace of its own."""
    from mauthcore.protocol.keys import load_keys

    ns = f"mldr{uuid.uuid4().hex[:8]}"
    pin_dir = _fresh_pin_dir()
    key = workdir / "router.key"
    if not key.exists():
        write_key_file(key)
    keys = load_keys(key)
    state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
    log = open(workdir / f"musersd-{tree.name}.log", "a")
    proc = None
    netns.add(ns)
    try:
        sh("ip", "link", "add", "guard0", "type", "veth", "peer", "name", "guard1", ns=ns)
        sh("ip", "link", "set", "guard0", "up", ns=ns)
        sh("ip", "link", "set", "guard1", "up", ns=ns)
        argv = ["nsenter", f"--net=/run/netns/{ns}", "--", str(tree.python), "-m", "musersd.cli",
                "--iface", "guard0", "--listen", f"127.0.0.1:{PORT}", "--key-file", str(key),
                "--pin-dir", str(pin_dir), "--state-dir", str(state)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=tree.root, stdout=log, stderr=subprocess.STDOUT)
        while True:
            if _answers(ns, keys):
                start_s = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                log.flush()
                tail = (workdir / f"musersd-{tree.name}.log").read_text()[-800:]
                raise SystemExit(f"musersd of the {tree.name} tree exited with {proc.returncode}: {tail}")
            if time.perf_counter() - t0 > netns.patience(START_TIMEOUT_S):
                raise SystemExit(f"musersd of the {tree.name} tree did not answer "
                                 f"within {netns.patience(START_TIMEOUT_S):g} s")
            time.sleep(POLL_S)
        rss_mb = _mb(_vmhwm_kib(proc.pid))  # nsenter execs musersd: the same pid
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        return {"start_s": start_s, "start_rss_mb": rss_mb}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        netns.delete(ns)  # the veth pair and the attached program go with it
        shutil.rmtree(pin_dir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


class _Recorder:
    """Takes the rule changes bench.xdp_cost makes to a DataPlane, to hand the result to each tree."""

    def __init__(self, rules):
        self.rules = {r.key: r for r in rules}

    def add_rule(self, rule):
        self.rules[rule.key] = rule

    replace_rule = add_rule

    def remove_rule(self, key):
        del self.rules[key]


def packet_workload(n: int = 1000) -> tuple[list, dict[str, tuple[bytes, int]]]:
    """bench.xdp_cost's rules at `n` rules (as JSON-able tuples) and its packets (kind -> frame, XDP action)."""
    from . import xdp_cost

    rec = _Recorder(xdp_cost.make_rules(n))
    xdp_cost.add_extra_rules(rec, n)
    rules = [(str(r.source), str(r.group), r.max_ttl, r.pps, r.bps) for r in rec.rules.values()]
    frames = xdp_cost.frames_for(n) | xdp_cost.extra_frames_for(n)
    return rules, {kind: (frame, action) for kind, (frame, action, _) in frames.items()}


def measure_packets(trees: list[Tree], rounds: int, repeat: int) -> dict[str, dict[str, float]]:
    """kind -> tree -> median ns per packet, both trees' programs run alternately."""
    rules, frames = packet_workload()
    procs: dict[str, subprocess.Popen] = {}
    pins = {t.name: _fresh_pin_dir() for t in trees}
    samples: dict[str, dict[str, list[int]]] = {k: {t.name: [] for t in trees} for k in frames}
    try:
        for t in trees:
            procs[t.name] = p = subprocess.Popen([str(t.python), "-c", PACKET_CHILD, str(pins[t.name])], cwd=t.root,
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            p.stdin.write(json.dumps(rules) + "\n")
            p.stdin.flush()
            ready = p.stdout.readline()
            if not ready:
                raise SystemExit(f"the {t.name} tree's DataPlane did not load the packet workload")
        for rnd in range(rounds):
            for kind, (frame, action) in frames.items():
                for t in (trees if rnd % 2 == 0 else trees[::-1]):
                    p = procs[t.name]
                    p.stdin.write(f"{frame.hex()} {repeat}\n")
                    p.stdin.flush()
                    out = json.loads(p.stdout.readline())
                    if out["retval"] != action:
                        raise SystemExit(f"the {t.name} tree's program gave {out['retval']} for {kind}, not {action}")
                    samples[kind][t.name].append(out["ns"])
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait(timeout=30)
        for pin in pins.values():
            shutil.rmtree(pin, ignore_errors=True)
    return {kind: {name: common.quartiles(v)[1] for name, v in per.items()} for kind, per in samples.items()}


def summarize(samples: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for name, rounds in samples.items():
        row = {}
        for m in MEASURES:
            q1, med, q3 = common.quartiles([r[m] for r in rounds])
            digits = 1 if m.endswith("_mb") else 3
            row[m] = round(med, digits)
            row[m + "_iqr"] = [round(q1, digits), round(q3, digits)]
        out[name] = row
    return out


def markdown(s: dict) -> str:
    res = s["results"]
    lines = []
    if s.get("bcc_unavailable"):
        lines += [f"The bcc loader was not measured: {s['bcc_unavailable']}.", ""]
    lines += [
        "| loader | DataPlane.load() s | imports s | process, spawn to exit s | peak RSS MB "
        "| musersd, spawn to first answer s | musersd peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("bcc", "libbpf"):
        if name in res:
            r = res[name]
            lines.append(f"| {name} | {r['load_s']:.3f} | {r['import_s']:.3f} | {r['process_s']:.3f} "
                         f"| {r['load_rss_mb']:.1f} | {r['start_s']:.3f} | {r['start_rss_mb']:.1f} |")
    if s.get("ratio_bcc_over_libbpf"):
        q = s["ratio_bcc_over_libbpf"]
        lines.append(f"| bcc / libbpf | {q['load_s']:.1f} | {q['import_s']:.1f} | {q['process_s']:.1f} "
                     f"| {q['load_rss_mb']:.1f} | {q['start_s']:.1f} | {q['start_rss_mb']:.1f} |")
    packets = s.get("packets")
    if packets:
        names = [n for n in ("bcc", "libbpf") if n in next(iter(packets.values()))]
        lines += ["", "| packet | " + " | ".join(f"{n} ns" for n in names)
                  + (" | libbpf - bcc ns |" if len(names) == 2 else " |"),
                  "| --- |" + " ---: |" * (len(names) + (len(names) == 2))]
        for kind, per in packets.items():
            row = f"| {kind} | " + " | ".join(f"{per[n]:g}" for n in names)
            lines.append(row + (f" | {per['libbpf'] - per['bcc']:+g} |" if len(names) == 2 else " |"))
    t = s["targets"]
    lib = res["libbpf"]
    lines += ["", f"libbpf loader against the targets: musersd serving in {lib['start_s']:.3f} s "
                  f"(target under {t['start_s']:g} s: {'met' if s['meets_target']['start_s'] else '**missed**'}), "
                  f"peak RSS {lib['start_rss_mb']:.1f} MB "
                  f"(target under {t['rss_mb']:g} MB: {'met' if s['meets_target']['rss_mb'] else '**missed**'})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each measures every tree once, in turn")
    ap.add_argument("--bcc-tree", type=Path, default=DEFAULT_BCC_TREE, help="where the bcc tree is (made if missing)")
    ap.add_argument("--bcc-commit", default=DEFAULT_BCC_COMMIT, help="the commit the bcc tree checks out")
    ap.add_argument("--libbpf-tree", type=Path, default=common.REPO,
                    help="the libbpf tree (default: this one)")
    ap.add_argument("--packet-rounds", type=int, default=9, help="rounds of the per-packet comparison (0: none)")
    ap.add_argument("--repeat", type=int, default=200_000, help="BPF_PROG_TEST_RUN repetitions per packet run")
    ap.add_argument("--no-json", action="store_true", help="print only; leave docs/benchmarks.json alone")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    if os.geteuid() != 0:
        raise SystemExit("the loader benchmark loads BPF programs and makes network namespaces: run it as root")
    if not is_bpffs(BPFFS):
        raise SystemExit(f"{BPFFS} is not a mounted bpffs: run `make setup`")

    started = time.monotonic()
    trees = [libbpf_tree(args.libbpf_tree)]
    bcc, why = bcc_tree(args.bcc_tree, args.bcc_commit)
    if bcc is None:
        print(f"The bcc loader is not measured, because {why}; measuring the libbpf loader only.", file=sys.stderr)
    else:
        trees.insert(0, bcc)
    samples: dict[str, list[dict]] = {t.name: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="mauth-loader-") as tmp:
        workdir = Path(tmp)
        for rnd in range(args.rounds):
            order = trees if rnd % 2 == 0 else trees[::-1]
            loads = {t.name: measure_load(t) for t in order}
            starts = {t.name: measure_start(t, workdir) for t in order}
            for t in trees:
                samples[t.name].append(loads[t.name] | starts[t.name])
            print(f"round {rnd + 1}/{args.rounds}: " + "; ".join(
                f"{t.name} load {loads[t.name]['load_s']:.3f} s, start {starts[t.name]['start_s']:.3f} s"
                for t in order), file=sys.stderr)

    packets = measure_packets(trees, args.packet_rounds, args.repeat) if args.packet_rounds else None
    results = summarize(samples)
    ratio = None
    if "bcc" in results:
        ratio = {m: round(results["bcc"][m] / results["libbpf"][m], 2) for m in MEASURES}
    lib = results["libbpf"]
    section = {
        "generated": common.now_iso(),
        "command": " ".join(["python -m bench.loader", *(argv if argv is not None else sys.argv[1:])]),
        "machine": common.machine(),
        "method": {
            "rounds": args.rounds,
            "order": "per round: load for each tree, then start for each tree; the tree order swaps every round",
            "load": "fresh process: import musersd.dataplane, DataPlane(fresh pin dir under /sys/fs/bpf).load(); "
                    "peak RSS = the child's VmHWM after the load",
            "start": "python -m musersd.cli in a fresh network namespace guarding one veth end, fresh pin dir; "
                     f"spawn to the first answered protocol v2 HELLO, asked every {POLL_S * 1000:g} ms; "
                     "peak RSS = its VmHWM then",
            "packet": f"one process per tree with bench.xdp_cost's rules at 1,000 rules; BPF_PROG_TEST_RUN of each "
                      f"of its packets x {args.repeat}, trees alternating kind by kind, {args.packet_rounds} rounds; "
                      "the kernel's mean ns per packet, median over rounds",
            "summary": "medians over rounds (IQR alongside); ratio = bcc median / libbpf median",
            "rss_unit": "MB = 10^6 bytes",
        },
        "trees": {t.name: t.describe() for t in trees},
        "bcc_unavailable": why or None,
        "targets": {"start_s": TARGET_START_S, "rss_mb": TARGET_RSS_MB},
        "meets_target": {"start_s": lib["start_s"] < TARGET_START_S,
                         "rss_mb": max(lib["start_rss_mb"], lib["load_rss_mb"]) < TARGET_RSS_MB},
        "results": results,
        "ratio_bcc_over_libbpf": ratio,
        "packets": packets,
        "samples": {name: [{m: round(v, 4) for m, v in r.items()} for r in rounds]
                    for name, rounds in samples.items()},
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(markdown(section))
    if not args.no_json:
        common.store_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
