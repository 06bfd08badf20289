"""Forwarding and drop rates of the lab router, guarded by mauth and by the alternatives.

    python -m bench.forwarding [--rules 1000] [--rounds 3] [--seconds 1] [--guards none,mauth,...] [--no-json]

Set-up. The namespace lab (lab/topology.py) with one sender host s1, the
router, one receiver host r1. smcrouted, in the router namespace, forwards
by static (S,G) routes every flow we offer (authorized or not) from in0 to
out0, plus a (*,G) route for 239.2.0.0/16 used by the upcall test. The
generator (bench/livegen.py) injects 60-byte frames into s1's veth end; they
arrive at the router's in0 as XDP frames, as from a NIC driver.

The router's receive work is made measurable on its own: in0 runs its NAPI
poll in a kernel thread (`/sys/class/net/in0/threaded`, GRO on so that the
veth has a NAPI context even without XDP), pinned to one CPU; the generator
and the receiver's NAPI thread run on the other. Everything the router does
for a packet (XDP, the IP layer, netfilter, multicast routing, handing a
copy to out0) runs in that thread, so its CPU time from
/proc/<pid>/schedstat (nanoseconds of CPU, not ticks) is the router's CPU
time. The /proc/stat softirq column is no use here: without
CONFIG_IRQ_TIME_ACCOUNTING it is sampled at the tick and read zero during
floods. The receiver r1 drops what it gets in XDP, cheaply, on the other CPU.

Counting. Offered: frames the generator sent. Missed: frames the router's
veth ring had no room for (in0 rx_dropped; the analogue of a NIC's missed
counter under overload). Processed: in0 rx_packets, what the router's thread
took in. Forwarded: out0 tx_packets. Dropped: processed - forwarded, what
the guard (or the router) threw away. CPU ms per million packets: the
thread's CPU time over the packets it processed.

Guards, each installed in turn on in0 in every round (the order rotates):

    none          the bare router
    xdp-floor     an empty XDP program (XDP_PASS): what any XDP filter pays on veth
    mauth         the mauth XDP filter, loaded and attached by musersd's DataPlane
    xdp-filter    xdp-tools' xdp-filter, deny policy, an allow-list of sender
                  addresses (it cannot express group or TTL)
    nft-pre       nftables, prerouting at raw priority: a verdict map on
                  `ip saddr . ip daddr` jumping to a chain per max TTL
    nft-ingress   the same ruleset on in0's netdev ingress hook
    iptables      iptables (Debian's default, the nf_tables backend), raw
                  PREROUTING, one rule per (sender, group) with a TTL match
    nfqueue       musersd --backend nfqueue (the fallback where XDP cannot be
                  used): in0's multicast queued to musersd, pinned to the
                  router's CPU; its process CPU time is added to the router's

All hold the same rules: `--rules` (source, group, max TTL) triples over 50
sources of 192.0.2.0/26. Traffic profiles, each a fixed interleaving:

    authorized    16 authorized flows, TTL 8 (spread evenly over the rule list)
    mix           half authorized, a quarter from unauthorized senders, a
                  quarter authorized pairs with TTL 64, over their max TTL
    unauthorized  8 flows from senders with no rule

Before measuring, each guard gets a correctness check at a low rate (no
overload): the packets forwarded per profile must be exactly what its policy
says, or the run stops.

Upcalls. With the guard installed, a flood of 4,096 distinct (S,G) pairs
that no rule authorizes (half from authorized senders to other groups, half
from unknown senders) goes to groups under smcrouted's (*,G) route. Every
new pair that reaches the kernel's multicast routing makes it send an
IGMPMSG_NOCACHE upcall to smcrouted, which logs it at debug level ("New
multicast data from S to group G") and installs the route. We count those
log lines: upcalls that reached the routing daemon. (No kprobes in this
kernel to count them inside it.)

Rounds interleave the guards, and every figure is the median over rounds of
a ratio to the unguarded router measured in the same round.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.netns import LabError, inside, sh
from lab.topology import Lab
from mauthcore.rules import Rule
from musersd import bpfobj
from musersd.dataplane import DataPlane, interface_index

from . import common
from .livegen import Flow, LiveGen

SECTION = "forwarding"

SOURCES = [f"192.0.2.{10 + i}" for i in range(50)]  # senders with rules
ROGUES = ["192.0.2.60", "192.0.2.61", "192.0.2.62"]  # senders without
AUTH_FLOWS, ROGUE_FLOWS = 16, 8
OK_TTL, LOUD_TTL = 8, 64  # every rule's max TTL is in 16..32
UPCALL_PAIRS = 4096
UPCALL_RANGE = "239.2.0.0/16"
SMC_LEVEL = "debug"  # smcrouted logs each cache-miss upcall at debug level
PROFILES = ("authorized", "mix", "unauthorized")

FLOOR_OBJECT = "floor"  # ebpf/bench/floor.bpf.c: bench_floor (XDP_PASS) and bench_sink (XDP_DROP)

XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2
# The NAPI threads run SCHED_FIFO, as threaded NAPI usually is in production:
# at normal priority a neighbour's process on the router's CPU delays the
# thread's wake-up by milliseconds and the 256-frame veth ring overflows
# even at 100 kpps. The kernel's RT throttling still leaves others 5 %.
NAPI_RT_PRIORITY = 50


# ---------------------------------------------------------------- the rules and the traffic


def make_rules(n: int) -> list[Rule]:
    """n rules: source i // groups, group i % groups, max TTL 16..32."""
    groups = -(-n // len(SOURCES))
    if groups > 256 * 250:
        raise SystemExit(f"--rules {n} is too many for this lab")
    out = []
    for i in range(n):
        g = i % groups
        out.append(Rule.make(SOURCES[i // groups], f"239.1.{g // 250}.{g % 250 + 1}", 16 + i % 17))
    return out


def profiles(rules: list[Rule]) -> dict[str, list[Flow]]:
    n = len(rules)
    picked = [rules[(2 * k + 1) * n // (2 * AUTH_FLOWS)] for k in range(AUTH_FLOWS)]
    auth = [Flow(str(r.source), str(r.group), OK_TTL) for r in picked]
    loud = [Flow(str(r.source), str(r.group), LOUD_TTL) for r in picked]
    rogue = [Flow(ROGUES[j % len(ROGUES)], str(picked[j].group), OK_TTL) for j in range(ROGUE_FLOWS)]
    mix = []
    for j in range(AUTH_FLOWS // 2):  # A U A T: any run of 4 has the mix's proportions
        mix += [auth[2 * j], rogue[j], auth[2 * j + 1], loud[j]]
    return {"authorized": auth, "mix": mix, "unauthorized": rogue}


def upcall_flows(round_no: int, rules: list[Rule]) -> list[Flow]:
    """UPCALL_PAIRS pairs that no rule authorizes, in a /24-aligned block of its own per call."""
    net = ipaddress.IPv4Network(UPCALL_RANGE)
    base = int(net[0]) + round_no * 16 * 256
    srcs = [str(r.source) for r in rules[:: max(1, len(rules) // 8)]][:8] + ROGUES * 3
    srcs = srcs[:16]
    flows = []
    for i in range(UPCALL_PAIRS):
        g = ipaddress.IPv4Address(base + i // len(srcs) + 1)
        flows.append(Flow(srcs[i % len(srcs)], str(g), OK_TTL))
    return flows


def expected_share(guard: Guard, profile: str) -> float:
    """Fraction of the offered packets the guard's policy forwards."""
    if not guard.filters:
        return 1.0
    if profile == "authorized":
        return 1.0
    if profile == "unauthorized":
        return 0.0
    return 0.75 if guard.name == "xdp-filter" else 0.5  # xdp-filter lets the TTL-64 quarter through


# ---------------------------------------------------------------- the lab around the router


class Router:
    """The lab, with the router's receive path on `router_cpu` and the rest on `other_cpu`."""

    def __init__(self, routes: list[tuple[str, str]], router_cpu: int, other_cpu: int):
        self.lab = Lab(senders={"s1": [SOURCES[0]]}, receivers=("r1",), smcroute=False)
        self.routes, self.router_cpu, self.other_cpu = routes, router_cpu, other_cpu
        self.rt = self.lab.router.ns
        self.s1 = self.lab.senders["s1"].ns
        self.r1 = self.lab.receivers["r1"].ns
        self._floor: bpfobj.BPFObject | None = None
        self.extra_cpu = None  # a guard's own CPU time in ns, counted as the router's (nfqueue)

    def __enter__(self) -> Router:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.lab.start()
        self._floor = common.load_bench_object(FLOOR_OBJECT)
        self.floor_fd = self._floor.program_fd("bench_floor")
        with inside(self.r1):
            bpfobj.xdp_attach(interface_index("eth0"), self._floor.program_fd("bench_sink"), XDP_FLAGS_DRV_MODE)
        before = napi_threads()
        sh("ethtool", "-K", "in0", "gro", "on", ns=self.rt)
        sh("sh", "-c", "echo 1 > /sys/class/net/in0/threaded", ns=self.rt)
        self.in0_thread = _one_new(before, napi_threads(), "napi/in0-")
        before = napi_threads()
        sh("sh", "-c", "echo 1 > /sys/class/net/eth0/threaded", ns=self.r1)
        self.r1_thread = _one_new(before, napi_threads(), "napi/eth0-")
        for pid, cpu in ((self.in0_thread, self.router_cpu), (self.r1_thread, self.other_cpu)):
            os.sched_setaffinity(pid, {cpu})
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(NAPI_RT_PRIORITY))
        self._start_smcroute()
        self.src_mac = bytes.fromhex(
            json.loads(sh("ip", "-j", "link", "show", "dev", "eth0", ns=self.s1))[0]["address"].replace(":", ""))

    def smcroute_conf(self) -> str:
        lines = ["# mauth forwarding benchmark: static (S,G) routes for every offered flow",
                 "phyint in0 enable", "phyint out0 enable"]
        lines += [f"mroute from in0 source {s} group {g} to out0" for s, g in self.routes]
        lines.append(f"mroute from in0 group {UPCALL_RANGE} to out0")
        return "\n".join(lines) + "\n"

    def _start_smcroute(self) -> None:
        w = self.lab.workdir
        (w / "smcroute.conf").write_text(self.smcroute_conf())
        self.smc_sock = w / "smcroute.sock"
        proc = self.lab.spawn(self.rt, ["smcrouted", "-n", "-N", "-f", str(w / "smcroute.conf"), "-u",
                                        str(self.smc_sock), "-P", str(w / "smcroute.pid"), "-l", SMC_LEVEL],
                              "smcrouted")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"smcrouted exited: {self.lab.log('smcrouted')[-500:]}")
            if len(self.lab.kernel_mroutes()) >= len(self.routes):
                return
            time.sleep(0.05)
        raise LabError("smcrouted did not install the benchmark's routes within 15 s")

    def stop(self) -> None:
        if self._floor is not None:
            self._floor.close()  # the lab's namespaces go, and the sink with them
            self._floor = None
        self.lab.stop()

    # -- readings

    def counters(self) -> dict[str, int]:
        links = {link["ifname"]: link["stats64"]
                 for link in json.loads(sh("ip", "-j", "-s", "link", "show", ns=self.rt))}
        return {
            "processed": links["in0"]["rx"]["packets"],
            "missed": links["in0"]["rx"]["dropped"],
            "forwarded": links["out0"]["tx"]["packets"],
            "out_dropped": links["out0"]["tx"]["dropped"],
            "cpu_ns": thread_cpu_ns(self.in0_thread) + (self.extra_cpu() if self.extra_cpu else 0),
        }

    def upcalls_logged(self) -> int:
        return self.lab.log("smcrouted").count("New multicast data from")

    def mfc_entries(self) -> int:
        return len(self.lab.kernel_mroutes())

    def xdp_program(self) -> str | None:
        link = json.loads(sh("ip", "-j", "link", "show", "dev", "in0", ns=self.rt))[0]
        prog = (link.get("xdp") or {}).get("prog") or {}
        return prog.get("name")


def napi_threads() -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("napi/"):
                out[int(entry.name)] = comm
    return out


def _one_new(before: dict[int, str], after: dict[int, str], prefix: str) -> int:
    new = [pid for pid, comm in after.items() if pid not in before and comm.startswith(prefix)]
    if len(new) != 1:
        raise LabError(f"expected one new {prefix}* NAPI thread, found {len(new)}")
    return new[0]


def thread_cpu_ns(pid: int) -> int:
    """CPU time a thread has run, in ns (the scheduler's sum_exec_runtime)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


# ---------------------------------------------------------------- guards


@dataclass
class Guard:
    name: str
    label: str
    filters: bool = True  # enforces a sender policy at all
    note: str = ""
    router: Router | None = field(default=None, repr=False)

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        self.router = router

    def install(self) -> None:
        pass

    def remove(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def filter_drops(self) -> int | None:
        """The guard's own count of packets it dropped, where it has one."""
        return None


class Unguarded(Guard):
    def __init__(self):
        super().__init__("none", "none (unguarded)", filters=False)


class XdpFloor(Guard):
    def __init__(self):
        super().__init__("xdp-floor", "empty XDP program", filters=False,
                         note="XDP_PASS only: the price of running any XDP program on this veth")

    def install(self) -> None:
        with inside(self.router.rt):
            bpfobj.xdp_attach(interface_index("in0"), self.router.floor_fd, XDP_FLAGS_DRV_MODE)

    def remove(self) -> None:
        with inside(self.router.rt):
            bpfobj.xdp_detach(interface_index("in0"), XDP_FLAGS_DRV_MODE)


class Mauth(Guard):
    def __init__(self):
        super().__init__("mauth", "mauth (XDP)", note="(source, group) hash lookup, per-rule max TTL")

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        super().setup(router, rules, workdir)
        self.dp = DataPlane(workdir / "mauth", max_rules=max(len(rules), 1024)).load()
        self.dp.add_rules_bulk(rules)
        self.attach_mode = None

    def install(self) -> None:
        with inside(self.router.rt):
            self.attach_mode = self.dp.attach("in0")

    def remove(self) -> None:
        with inside(self.router.rt):
            self.dp.detach("in0")

    def teardown(self) -> None:
        self.dp.close()

    def filter_drops(self) -> int:
        c = self.dp.counters()
        return c["unauthorized"]["packets"] + c["ttl"]["packets"]


class MauthNoDenied(Mauth):
    def __init__(self):
        Guard.__init__(self, "mauth-nodenied", "mauth (XDP), no denied record",
                       note="musersd --denied-pairs 0: the same policy, no per-pair record of drops")

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        Guard.setup(self, router, rules, workdir)
        self.dp = DataPlane(workdir / "mauth-nodenied", max_rules=max(len(rules), 1024), record_denied=False).load()
        self.dp.add_rules_bulk(rules)
        self.attach_mode = None


class XdpFilter(Guard):
    """xdp-filter from xdp-tools: an allow-list of source addresses (its closest configuration).

    It pins its maps under the first bpffs it finds (/sys/fs/bpf). Each call
    runs in a mount namespace of its own where our private bpffs is bound
    over /sys/fs/bpf, so nothing lands in the machine's bpffs.
    """

    def __init__(self):
        super().__init__("xdp-filter", "xdp-filter (XDP)",
                         note="deny policy + allow-list of sender addresses: no group, no TTL; "
                              "also drops all other IPv4 and all non-IP traffic (ARP) from unlisted hosts")

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        super().setup(router, rules, workdir)
        self.bpffs = workdir
        self.sources = sorted({str(r.source) for r in rules}, key=ipaddress.IPv4Address)
        self.loaded_once = False
        self.version = _first_line(["xdp-filter", "load", "--version"])

    def _run(self, *args: str) -> str:
        script = 'mount --bind "$1" /sys/fs/bpf && ns="$2" && shift 2 && exec nsenter --net="$ns" xdp-filter "$@"'
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                               str(self.bpffs), f"/run/netns/{self.router.rt}", *args],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"xdp-filter {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        return proc.stdout

    def install(self) -> None:
        self._run("load", "--policy", "deny", "--features", "ipv4", "--mode", "native", "in0")
        if not self.loaded_once:  # the maps outlive `unload --keep-maps`
            for s in self.sources:
                self._run("ip", "--mode", "src", s)
            self.loaded_once = True

    def remove(self) -> None:
        self._run("unload", "--keep-maps", "in0")



class Nft(Guard):
    def __init__(self, hook: str):
        self.hook = hook
        if hook == "prerouting":
            super().__init__("nft-pre", "nftables, prerouting",
                             note="ip family, hook prerouting priority raw; vmap on saddr . daddr, chain per max TTL")
        else:
            super().__init__("nft-ingress", "nftables, ingress",
                             note="netdev family, in0 ingress hook; vmap on saddr . daddr, chain per max TTL")

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        super().setup(router, rules, workdir)
        self.family = "ip" if self.hook == "prerouting" else "netdev"
        self.file = workdir / f"{self.name}.nft"
        self.file.write_text(self.ruleset(rules))
        self.version = _first_line(["nft", "--version"])

    def ruleset(self, rules: list[Rule]) -> str:
        ttls = sorted({r.max_ttl for r in rules})
        lines = [f"table {self.family} mauth_bench {{",
                 "  map senders {",
                 "    type ipv4_addr . ipv4_addr : verdict",
                 "    elements = {"]
        lines += [f"      {r.source} . {r.group} : goto ttl_{r.max_ttl}," for r in rules]
        lines += ["    }", "  }"]
        for t in ttls:
            lines += [f"  chain ttl_{t} {{", f"    ip ttl > {t} drop", "    accept", "  }"]
        if self.hook == "prerouting":
            lines += ["  chain guard {", "    type filter hook prerouting priority raw; policy accept;",
                      '    iif != "in0" accept']
        else:
            lines += ["  chain guard {", '    type filter hook ingress device "in0" priority -500; policy accept;',
                      "    meta protocol != ip accept"]
        lines += ["    ip daddr != 224.0.0.0/4 accept",
                  "    ip daddr 224.0.0.0/24 accept",
                  "    ip protocol igmp accept",
                  "    ip saddr . ip daddr vmap @senders",
                  "    drop",
                  "  }", "}"]
        return "\n".join(lines) + "\n"

    def install(self) -> None:
        sh("nft", "-f", str(self.file), ns=self.router.rt)

    def remove(self) -> None:
        sh("nft", "delete", "table", self.family, "mauth_bench", ns=self.router.rt)


class Iptables(Guard):
    def __init__(self):
        super().__init__("iptables", "iptables, one rule per sender",
                         note="raw PREROUTING -> chain MAUTH: -s S -d G -m ttl --ttl-lt MAX+1 -j ACCEPT per rule, "
                              "then DROP (a linear scan)")

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        super().setup(router, rules, workdir)
        self.version = _first_line(["iptables", "--version"])
        self.nft_backend = "nf_tables" in self.version
        lines = ["*raw", ":PREROUTING ACCEPT [0:0]", ":MAUTH - [0:0]",
                 "-A PREROUTING -i in0 -d 224.0.0.0/4 -j MAUTH",
                 "-A MAUTH -d 224.0.0.0/24 -j ACCEPT",
                 "-A MAUTH -p igmp -j ACCEPT"]
        lines += [f"-A MAUTH -s {r.source}/32 -d {r.group}/32 -m ttl --ttl-lt {r.max_ttl + 1} -j ACCEPT"
                  for r in rules]
        lines += ["-A MAUTH -j DROP", "COMMIT"]
        self.file = workdir / "iptables.rules"
        self.file.write_text("\n".join(lines) + "\n")

    def install(self) -> None:
        sh("sh", "-c", f"iptables-restore < {self.file}", ns=self.router.rt)

    def remove(self) -> None:
        if self.nft_backend:  # delete the table, or its empty base chain stays hooked in
            sh("nft", "delete", "table", "ip", "raw", ns=self.router.rt)
        else:
            sh("sh", "-c", "iptables -t raw -F && iptables -t raw -X", ns=self.router.rt)


class Nfqueue(Guard):
    """musersd --backend nfqueue: in0's routable multicast queued to musersd, which answers each packet.

    The verdicts, and the forwarding of what musersd accepts (nf_reinject()
    runs inside its verdict system call), take CPU time in musersd's process,
    not in in0's NAPI thread: that time is added to the router's, and musersd
    is pinned to the router's CPU. Its policy check runs at 5,000 pps, well
    within what user space answers; at the measured rates the queue overflows
    and the kernel drops the excess (fail closed).
    """

    check_rate = 5_000

    def __init__(self):
        super().__init__("nfqueue", "musersd --backend nfqueue",
                         note="mangle PREROUTING -j NFQUEUE; musersd judges each packet with policy.decide_ip "
                              "(dict lookup of (source, group)) and answers accept or drop")
        self.proc: subprocess.Popen | None = None

    def setup(self, router: Router, rules: list[Rule], workdir: Path) -> None:
        from lab.daemons import write_key_file
        from musersd.nfqueue import NfqueueFilter

        super().setup(router, rules, workdir)
        self.state = workdir / "nfqueue-state"
        self.max_rules = max(len(rules), 1024)
        f = NfqueueFilter(self.state, max_rules=self.max_rules).open()
        try:
            f.apply(rules)  # restored by musersd at each start
        finally:
            f.close()
        self.key = write_key_file(workdir / "nfqueue.key")

    def install(self) -> None:
        r = self.router
        mark = len(r.lab.log("musersd-nfqueue"))
        self.proc = r.lab.spawn(r.rt, [str(Path(sys.executable).parent / "musersd"), "--iface", "in0",
                                       "--backend", "nfqueue", "--state-dir", str(self.state),
                                       "--max-rules", str(self.max_rules), "--listen", "127.0.0.1:7599",
                                       "--key-file", str(self.key)], "musersd-nfqueue")
        deadline = time.monotonic() + 60
        while "serving on" not in r.lab.log("musersd-nfqueue")[mark:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"musersd --backend nfqueue did not start: {r.lab.log('musersd-nfqueue')[-500:]}")
            time.sleep(0.05)
        os.sched_setaffinity(self.proc.pid, {r.router_cpu})
        r.extra_cpu = self.cpu_ns

    def cpu_ns(self) -> int:
        return sum(thread_cpu_ns(int(t.name)) for t in Path(f"/proc/{self.proc.pid}/task").iterdir())

    def remove(self) -> None:
        self.router.extra_cpu = None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return ""
    return ((out.stdout or out.stderr).strip().splitlines() or [""])[0]


def all_guards() -> list[Guard]:
    return [Unguarded(), XdpFloor(), Mauth(), MauthNoDenied(), XdpFilter(), Nft("prerouting"), Nft("ingress"),
            Iptables(), *([Nfqueue()] if nfqueue_backend() else [])]


# ---------------------------------------------------------------- measuring


def nfqueue_backend() -> str | None:
    """musersd's NFQUEUE backend, if the project has one (it is measured only then)."""
    from musersd import cli

    for param in getattr(cli.main, "params", []):
        if param.name in ("backend",) and "nfqueue" in str(getattr(param.type, "choices", "")):
            return "musersd --backend nfqueue"
    return None


def measure(router: Router, gen: LiveGen, count: int | None = None, rate: float | None = None,
            seconds: float = 1.0) -> dict:
    """Counter deltas around one offer: `count` frames at `rate`, or a flood for `seconds`."""
    before = router.counters()
    if count is None:
        count, wall = gen.flood(seconds)
    else:
        wall = gen.send(count, rate)
    time.sleep(0.05)  # let the rings drain
    after = router.counters()
    d = {k: after[k] - before[k] for k in before}
    d["offered"] = count
    d["seconds"] = wall
    return d


def check_policy(router: Router, gen: LiveGen, guard: Guard, flows: dict[str, list[Flow]]) -> dict[str, int]:
    """At a rate with no overload, each profile must be forwarded exactly as the guard's policy says."""
    got = {}
    for prof, fl in flows.items():
        gen.use(fl)
        count = len(fl) * 100
        for _ in range(3):  # a miss (ring full) is no fault of the guard's: try again
            d = measure(router, gen, count, getattr(guard, "check_rate", 50_000))
            if not d["missed"]:
                break
        want = round(count * expected_share(guard, prof))
        if d["missed"] or d["processed"] != count or d["forwarded"] != want:
            raise SystemExit(
                f"{guard.name}: profile {prof} at a low rate: {d['processed']} of {count} processed, "
                f"{d['forwarded']} forwarded, {want} expected; its figures would mean nothing")
        got[prof] = d["forwarded"]
    return got


def upcall_test(router: Router, gen: LiveGen, guard: Guard, round_no: int, rules: list[Rule],
                rate: float, repeats: int) -> dict:
    flows = upcall_flows(round_no, rules)
    gen.use(flows)
    sh("smcroutectl", "-u", str(router.smc_sock), "flush", ns=router.rt, check=False)
    time.sleep(0.2)
    logged0, mfc0 = router.upcalls_logged(), router.mfc_entries()
    drops0 = guard.filter_drops()
    d = measure(router, gen, len(flows) * repeats, rate)
    time.sleep(0.5)  # smcrouted logs what is still queued on its socket
    out = {
        "pairs": len(flows),
        "packets": d["offered"],
        "forwarded": d["forwarded"],
        "upcalls": router.upcalls_logged() - logged0,
        "mfc_entries_added": max(0, router.mfc_entries() - mfc0),
    }
    if drops0 is not None:
        out["filter_drops"] = guard.filter_drops() - drops0
    return out


AUTHORIZED_SHARE = {"authorized": 1.0, "mix": 0.5, "unauthorized": 0.0}  # of each profile's packets


def summarize(samples: dict, guards: list[Guard]) -> list[dict]:
    """samples[guard][profile] -> list per round of measure() dicts, rounds aligned.

    Authorized forwarded: the forwarded packets that the (S,G,TTL) policy
    authorizes. The router takes in each profile's flows in their offered
    proportions (the ring drops the excess regardless of kind), so for a
    guard that forwards a share f of a profile whose authorized share is a,
    it is forwarded * a / f.
    """

    def med(values: list[float], digits: int = 3) -> float:
        return round(common.quartiles(values)[1], digits)

    def per_mpkt(r: dict) -> float:  # router CPU ms per million packets processed
        return r["cpu_ns"] / max(r["processed"], 1)

    rows = []
    for prof in PROFILES:
        base = samples["none"][prof]
        for g in guards:
            rounds = samples[g.name][prof]
            share = expected_share(g, prof)
            good = AUTHORIZED_SHARE[prof] / share if share else 0.0
            fwd = [r["forwarded"] / r["seconds"] for r in rounds]
            auth = [f * good for f in fwd]
            base_auth = [b["forwarded"] / b["seconds"] * AUTHORIZED_SHARE[prof] for b in base]
            cpu = [per_mpkt(r) for r in rounds]
            q1, _, q3 = common.quartiles(cpu)
            rows.append({
                "profile": prof,
                "guard": g.name,
                "offered_pps": med([r["offered"] / r["seconds"] for r in rounds], 0),
                "processed_pps": med([r["processed"] / r["seconds"] for r in rounds], 0),
                "forwarded_pps": med(fwd, 0),
                "authorized_forwarded_pps": med(auth, 0),
                "dropped_pps": med([(r["processed"] - r["forwarded"]) / r["seconds"] for r in rounds], 0),
                "missed_pps": med([r["missed"] / r["seconds"] for r in rounds], 0),
                "cpu_ms_per_mpkt": med(cpu, 1),
                "cpu_ms_per_mpkt_iqr": [round(q1, 1), round(q3, 1)],
                "router_cpu_busy": med([r["cpu_ns"] / 1e9 / r["seconds"] for r in rounds]),
                "forwarded_vs_none": med([f / (b["forwarded"] / b["seconds"]) for f, b in zip(fwd, base)]),
                "authorized_forwarded_vs_none": (med([a / ba for a, ba in zip(auth, base_auth)])
                                                 if AUTHORIZED_SHARE[prof] else None),
                "cpu_per_mpkt_vs_none": med([c / per_mpkt(b) for c, b in zip(cpu, base)]),
                "out0_tx_dropped": sum(r["out_dropped"] for r in rounds),
            })
    return rows


def markdown(rows: list[dict], labels: dict[str, str], upcalls: list[dict]) -> str:
    """The tables of docs/benchmarks.md, from the figures; `labels`: guard name -> its label."""
    lines = []
    for prof in PROFILES:
        lines += ["", f"profile: {prof}", "",
                  "| guard | forwarded kpps | of which authorized | dropped kpps | missed kpps "
                  "| router CPU ms / Mpkt | CPU / Mpkt × none | authorized forwarded × none | router CPU busy |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in (x for x in rows if x["profile"] == prof):
            ratio = r["authorized_forwarded_vs_none"]
            lines.append(
                f"| {labels[r['guard']]} | {r['forwarded_pps'] / 1e3:,.0f} "
                f"| {r['authorized_forwarded_pps'] / 1e3:,.0f} "
                f"| {r['dropped_pps'] / 1e3:,.0f} | {r['missed_pps'] / 1e3:,.0f} | {r['cpu_ms_per_mpkt']:,.0f} "
                f"| {r['cpu_per_mpkt_vs_none']:.2f} | {'-' if ratio is None else f'{ratio:.2f}'} "
                f"| {r['router_cpu_busy'] * 100:.0f} % |")
    lines += ["", "| guard | unauthorized pairs | packets | upcalls to smcrouted | MFC entries added | forwarded |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for u in upcalls:
        lines.append(f"| {labels[u['guard']]} | {u['pairs']:,} | {u['packets']:,} | {u['upcalls']:,} "
                     f"| {u['mfc_entries_added']:,} | {u['forwarded']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.forwarding", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=1000, help="rules every guard holds")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs every guard and profile once")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    ap.add_argument("--upcall-rate", type=float, default=200_000,
                    help="packets per second of the unauthorized-pairs flood")
    ap.add_argument("--guards", default=",".join(g.name for g in all_guards()),
                    help="comma-separated subset of guards (none is always measured)")
    ap.add_argument("--no-json", action="store_true", help="print only; leave docs/benchmarks.json alone")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    if os.geteuid() != 0:
        raise SystemExit("the forwarding benchmark builds network namespaces: run it as root")
    wanted = {x.strip() for x in args.guards.split(",")} | {"none"}
    guards = [g for g in all_guards() if g.name in wanted]
    unknown = wanted - {g.name for g in all_guards()}
    if unknown:
        ap.error(f"unknown guards: {', '.join(sorted(unknown))}")
    for tool in ("ethtool", "smcrouted", "nft", "iptables", "xdp-filter", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `make setup`")

    started = time.monotonic()
    router_cpu = common.quietest_cpu()
    other_cpu = next(c for c in sorted(os.sched_getaffinity(0)) if c != router_cpu)
    os.sched_setaffinity(0, {other_cpu})
    rules = make_rules(args.rules)
    flows = profiles(rules)
    routes = sorted({(f.source, f.group) for fl in flows.values() for f in fl})
    print(f"router on CPU {router_cpu}, generator on CPU {other_cpu}; {len(rules):,} rules; "
          f"{args.rounds} rounds x {args.seconds:g} s floods", file=sys.stderr)

    samples: dict = {g.name: {p: [] for p in PROFILES} for g in guards}
    checks, upcalls, setup_info = {}, [], {}
    with common.private_bpffs() as bpffs, Router(routes, router_cpu, other_cpu) as router:
        workdir = Path(tempfile.mkdtemp(prefix="mauth-fwd-", dir=router.lab.workdir))
        gen = LiveGen(router.s1, "eth0", router.src_mac)
        try:
            for g in guards:
                g.setup(router, rules, bpffs if g.name.startswith(("mauth", "xdp-filter")) else workdir)
            for g in guards:  # correctness first
                g.install()
                try:
                    checks[g.name] = check_policy(router, gen, g, flows)
                    setup_info[g.name] = {"xdp_program": router.xdp_program()}
                    if isinstance(g, Mauth):
                        setup_info[g.name]["attach_mode"] = g.attach_mode
                finally:
                    g.remove()
                print(f"{g.name}: policy check passed", file=sys.stderr)
            for rnd in range(args.rounds):
                order = guards[rnd % len(guards):] + guards[: rnd % len(guards)]
                for g in order:
                    g.install()
                    try:
                        gen.use(flows["mix"])
                        gen.flood(0.1)  # warm up
                        for prof in PROFILES:
                            gen.use(flows[prof])
                            samples[g.name][prof].append(measure(router, gen, seconds=args.seconds))
                    finally:
                        g.remove()
                print(f"round {rnd + 1}/{args.rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            for i, g in enumerate(guards):
                if g.name == "xdp-floor":
                    continue
                g.install()
                try:
                    u = upcall_test(router, gen, g, i, rules, args.upcall_rate, 25)
                finally:
                    g.remove()
                upcalls.append({"guard": g.name, **u})
                print(f"{g.name}: {u['upcalls']} upcalls", file=sys.stderr)
        finally:
            for g in guards:
                if g.router is not None:
                    g.teardown()
            gen.close()

    rows = summarize(samples, guards)
    mauth_upcalls = next((u["upcalls"] for u in upcalls if u["guard"] == "mauth"), None)
    section = {
        "generated": common.now_iso(),
        "command": " ".join(["python -m bench.forwarding", *(argv if argv is not None else sys.argv[1:])]),
        "machine": common.machine(),
        "method": {
            "generator": "bench/livegen.py: XDP live frames (BPF_F_TEST_XDP_LIVE_FRAMES), XDP_TX out of s1's veth",
            "frame_bytes": 60,
            "offered": "as fast as the generator goes (flood); see offered_pps per row",
            "upcall_flood_pps": args.upcall_rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "rules": len(rules),
            "router_cpu": router_cpu,
            "generator_cpu": other_cpu,
            "router_cpu_time": "in0's threaded-NAPI kernel thread, /proc/<pid>/schedstat (ns)",
            "counts": "processed = in0 rx_packets, missed = in0 rx_dropped, forwarded = out0 tx_packets",
            "summary": "median over rounds; ratios taken per round against the unguarded router",
            "upcall_counter": "smcrouted -l debug lines 'New multicast data from' (one per IGMPMSG_NOCACHE)",
        },
        "guards": {g.name: {"label": g.label, "note": g.note, **setup_info.get(g.name, {}),
                            **({"version": g.version} if getattr(g, "version", "") else {})} for g in guards},
        "nfqueue": nfqueue_backend() or "the project has no NFQUEUE backend: not measured",
        "policy_checks": checks,
        "results": rows,
        "upcalls": upcalls,
        "zero_upcalls_with_mauth": mauth_upcalls == 0 if mauth_upcalls is not None else None,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(markdown(rows, {g.name: g.label for g in guards}, upcalls))
    if not args.no_json:
        common.store_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
