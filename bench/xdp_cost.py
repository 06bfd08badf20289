"""Per-packet cost of the XDP filter, next to an empty XDP program (the floor).

    python -m bench.xdp_cost [--rules 1,1000,100000,1000000] [--rounds 21] [--repeat 2000000]

Method. BPF_PROG_TEST_RUN (`bpf_prog_test_run_opts`) runs a loaded program
`repeat` times on one frame inside the kernel and returns the mean
nanoseconds per run. That mean includes the harness's own per-run cost
(bh disable/enable, context setup), so an empty XDP program that only
returns XDP_PASS is measured in the same run, on the same frame and CPU: the
floor. For each rule count the filter is loaded with maps sized to exactly
that many rules (the fullest hash table, the longest chains), the rules go
in through `DataPlane.add_rules_bulk()`, and for each packet kind every
round measures floor, filter, floor. Per round the filter's added cost is
its time minus the mean of the two floors around it; the figures are the
medians over the rounds, so a noisy neighbour that slows one call moves a
quartile, not the result. Rounds take turns with six frame sizes (PAYLOADS)
so that no single placement of the kernel's test buffer decides them.
Kinds:

    passed         an authorized (source, group), TTL under the rule's max
    unauthorized   no rule for (source, group): dropped, denied table updated
    ttl            the rule exists but the TTL is above its max: dropped
    not_multicast  unicast IPv4: passed after the header checks

Then, in the same maps, the paths that prefix rules and rate limits add
(rows after the target's: the target is about exact rules). The middle rule
gets a packets-per-second limit too high to reach, and (from 3 rules up)
two exact rules make room for a source-prefix and a group-prefix rule:

    rate_limited           the passed frame, its rule now rate-limited: +bucket
    source_prefix          no exact rule; the source prefix for its group
    group_prefix           no exact rule nor source prefix; the source's group prefix
    unauthorized_prefixes  no rule at all, with both tries consulted: dropped

and (from 5 rules up, two more exact IPv4 rules making room for IPv6 ones)
the IPv6 paths, on a table of two IPv6 rules (IPv6 rules have maps of their
own, so IPv4's figures do not depend on them and the reverse):

    passed6        an authorized IPv6 (source, group), hop limit under the max
    unauthorized6  no rule: dropped, IPv6 denied table updated
    ttl6           hop limit above the rule's max: dropped
    passed6_ext    passed6 behind hop-by-hop and destination options headers

Last, bindings (docs/operations.md, "Binding a sender"), on a table of
BIND_RULES rules inside a network namespace of our own with two veths
(forwarding on; the rules' sources are routed through the first, so that the
reverse-path check passes). One rule's packet arrives on the first veth
(BPF_PROG_TEST_RUN's ctx.ingress_ifindex) and is measured, side by side in
the same rounds, with that same rule unbound and bound in turn (the binding
is rewritten with `DataPlane.set_binding()` before each call; a learning one
pins on the call's first run):

    unbound        the rule without a binding
    iface          bound to the ingress interface
    mac            bound to the frame's source MAC
    learn          learning its (interface, MAC): a spin lock per packet
    rpf            reverse path: a bpf_fib_lookup() per packet
    all            the four together
    layout4        the unbound rule under layout 4's program (commit 2650f1c's
                   ebpf/, built with clang as tests/integration/test_xdp_program.py
                   builds it), in maps of its own: what an unbound rule cost
                   before bindings existed

The floor runs with the same ingress interface. Besides added ns, each row
gives the per-round ratio of its filter time to the unbound rule's, and the
difference of their added costs on the CPU clock.

Last, receiver authorization (docs/operations.md, "Authorizing receivers"),
in the same namespace: the first veth is `closed` with a group limit
(RECV_LIMIT), the second has no policy (open). Two groups of rows, each
measured side by side in rounds of its own:

    data packets   passed, unauthorized and passed6 (BIND_RULES sender rules
                   and one IPv6 one) through layout 5's program (commit
                   LAYOUT5_COMMIT's ebpf/: today's maps without the receiver
                   maps and reasons), through today's program with no
                   receiver policy, and through today's program with
                   RECV_RULES receiver rules and the ingress interface
                   closed; each row's filter time is divided by layout 5's
                   in the same round (`vs_layout5`)
    reports        IGMPv2 on the open veth (not inspected: the base,
                   `vs_open`), through layout 5's program and through
                   today's with no interface inspecting; on the closed
                   veth, IGMPv2 allowed by the first rule and by the last of
                   RECV_RULES, refused after all RECV_RULES (dropped); IGMPv3
                   of 10 records all allowed (passes unchanged; by the first
                   rule, and by the last of RECV_RULES); IGMPv3 and MLDv2 of
                   10 records, every other one refused (compacted, shortened,
                   lengths and checksums fixed)

A report's rows cannot use `repeat`: the kernel's XDP test run
(net/bpf/test_run.c, bpf_test_run()) copies the frame in once per call and
runs the program `repeat` times on the same xdp_buff, never resetting data
or data_end between runs, so from the second run on a rewritten report is
the already rewritten frame (5 records, all allowed). Every report row
therefore runs REPORT_CALLS calls of one run each and takes the mean of
their durations; the floor is measured the same way, so the timer's own
cost per call (two ktime_get_ns()) falls out with it. The "floor" row of
each group runs the floor program in the filter's place: its added ns is
the noise floor of the method on this machine.

The kernel reports whole nanoseconds (it truncates total/repeat), so the
thread's CPU clock around each call is recorded too: a finer (sub-ns)
cross-check of the added cost that also excludes time the thread was not
running, but includes its own amortized syscall and rescheduling overhead.

Figures go to docs/benchmarks.json, section "xdp_cost"; a Markdown table is
printed. What they do not say: the cost on a real NIC and driver (DMA, page
handling, the rest of the stack), with caches cold, or with many flows.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lab import netns, reports
from lab.older_filter import LAYOUT4_COMMIT, LAYOUT5_COMMIT, build_filter_at, layout4, layout5
from mauthcore.receivers import MAX_RECEIVER_RULES, IfacePolicy, ReceiverRule
from mauthcore.rules import Rule, RuleKey
from musersd import bpfsys
from musersd.dataplane import DataPlane
from musersd.filter import Binding

from . import common

SECTION = "xdp_cost"
TARGET_ADDED_NS = 15.0
XDP_DROP, XDP_PASS = 1, 2

RULE_MAX_TTL = 16
SOURCE_BASE = int(ipaddress.IPv4Address("10.0.0.1"))  # rule i: source 10.0.0.1 + i
GROUP_BASE = int(ipaddress.IPv4Address("239.1.0.0"))  # rule i: group 239.1.0.0 + i % 4096
STRANGER = ipaddress.IPv4Address("192.0.2.66")  # never a rule's source
UNICAST = ipaddress.IPv4Address("10.200.0.1")

FLOOR_OBJECT, FLOOR_PROGRAM = "floor", "bench_floor"  # ebpf/bench/floor.bpf.c: returns XDP_PASS

KINDS = ("passed", "unauthorized", "ttl", "not_multicast")
EXTRA_KINDS = ("rate_limited", "source_prefix", "group_prefix", "unauthorized_prefixes",
               "passed6", "unauthorized6", "ttl6", "passed6_ext")
SENDER6 = ipaddress.IPv6Address("2001:db8::10")
STRANGER6 = ipaddress.IPv6Address("2001:db8::66")
GROUP6 = ipaddress.IPv6Address("ff0e::db8:1")
SOURCE_PREFIX = ipaddress.IPv4Network("172.16.0.0/12")  # to rule 0's group; no exact rule's source is in it
TRUSTED = ipaddress.IPv4Address("192.0.2.77")  # may send to GROUP_PREFIX
GROUP_PREFIX = ipaddress.IPv4Network("239.192.0.0/14")

# UDP payload bytes, one per round in turn. The program never reads past the
# IPv4 header, so its cost does not depend on the size, but the kernel
# allocates the test buffer by size (kmalloc-1k, -2k, -4k objects), so the
# size moves the packet in memory. With one fixed buffer, an unlucky
# placement (seen in about 1 in 20 map instances: a drop path 3-12 ns slower
# for as long as it lasted, consistent with 4K aliasing or cache-set
# conflicts against a map value; no PMU in the VM to tell) would colour every
# round; rotating it confines it to a quartile.
PAYLOADS = (18, 300, 600, 1200, 2000, 3000)

# Bindings: the variants of one rule, measured side by side (see the docstring).
BIND_KINDS = ("unbound", "iface", "mac", "learn", "rpf", "all", "layout4")
BIND_RULES = 1000
BIND_IFACES = ("mbench0", "mbench1")
BIND_ROUTE = "10.0.0.0/8"  # on mbench0: every rule's source (10.0.0.1 + i) routes back through it
SENDER_MAC = "02:00:00:00:00:01"  # udp_frame()'s source MAC

# Receivers: the data-packet rows and the report rows (see the docstring).
DATA_KINDS = ("passed", "unauthorized", "passed6")
DATA_VARIANTS = ("floor", "layout5", "no_policy", "closed512")
REPORT_KINDS = ("floor", "v2_layout5", "v2_no_policy", "v2_open", "v2_first", "v2_last512", "v2_refused512",
                "v3_allowed10", "v3_allowed10_last512", "v3_half10", "mld2_half10")
RECV_RULES = MAX_RECEIVER_RULES
RECV_LIMIT = 64  # above the groups the rows join on one interface (at most 21)
REPORT_CALLS = 5000  # one-run calls per report sample
REPORTER4, REPORTER6 = "10.1.0.5", "fe80::5"
ALLOWED4 = ReceiverRule.make("10.1.0.0/24", "239.9.0.0/16")  # sorts after every filler: the last rule
ALLOWED6 = ReceiverRule.make("fe80::/64", "ff0e::9:0/112")


def _csum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, ttl: int, payload: int = 32) -> bytes:
    """Ethernet + IPv4 (no options) + UDP + payload, consistent lengths and checksum."""
    eth = bytes.fromhex("01005e010101" "020000000001" "0800")
    udp = struct.pack("!HHHH", 4000, 5000, 8 + payload, 0) + b"\x00" * payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, ttl, 17, 0, src.packed, dst.packed)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return eth + ip + udp


def udp6_frame(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, hlim: int, payload: int = 32,
               ext: int = 0) -> bytes:
    """Ethernet + IPv6 + `ext` empty extension headers (hop-by-hop, then destination options) + UDP."""
    eth = bytes.fromhex("333300000db8" "020000000001" "86dd")
    udp = struct.pack("!HHHH", 4000, 5000, 8 + payload, 0) + b"\x00" * payload
    headers = b""
    for i in range(ext):  # 8 bytes each: next header, length 0, PadN of 4
        nxt = 60 if i + 1 < ext else 17
        headers += bytes([nxt, 0, 1, 4, 0, 0, 0, 0])
    first = (0 if ext else 17)
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(headers) + len(udp), first, hlim, src.packed, dst.packed)
    return eth + ip + headers + udp


def rule_key(i: int) -> RuleKey:
    return RuleKey(ipaddress.IPv4Address(SOURCE_BASE + i), ipaddress.IPv4Address(GROUP_BASE + i % 4096))


def make_rules(n: int) -> list[Rule]:
    """n distinct valid rules, built without re-parsing (checked on a sample)."""
    rules = [Rule(rule_key(i), RULE_MAX_TTL) for i in range(n)]
    for r in rules[:: max(1, n // 16)]:
        assert Rule.make(str(r.source), str(r.group), r.max_ttl) == r
    return rules


def frames_for(n: int, payload: int = PAYLOADS[0]) -> dict[str, tuple[bytes, int, str]]:
    """kind -> (frame, expected XDP action, reason counter it must bump)."""
    key = rule_key(n // 2)  # a rule from the middle of the table
    return {
        "passed": (udp_frame(key.source, key.group, 8, payload), XDP_PASS, "passed"),
        "unauthorized": (udp_frame(STRANGER, key.group, 8, payload), XDP_DROP, "unauthorized"),
        "ttl": (udp_frame(key.source, key.group, 64, payload), XDP_DROP, "ttl"),
        "not_multicast": (udp_frame(key.source, UNICAST, 8, payload), XDP_PASS, "not_multicast"),
    }


def add_extra_rules(dp: DataPlane, n: int) -> tuple[str, ...]:
    """Phase two: limit the middle rule, and from 3 rules up trade two exact rules for two prefix rules."""
    mid = rule_key(n // 2)
    dp.replace_rule(Rule(mid, RULE_MAX_TTL, pps=(1 << 32) - 1))  # a burst of 429 million packets: never dry
    if n < 3:
        return EXTRA_KINDS[:1]
    for i in (n - 1, n - 2):  # neither the middle rule nor rule 0, whose group the source prefix uses
        dp.remove_rule(rule_key(i))
    dp.add_rule(Rule.make(SOURCE_PREFIX, rule_key(0).group, RULE_MAX_TTL))
    dp.add_rule(Rule.make(TRUSTED, GROUP_PREFIX, RULE_MAX_TTL))
    if n < 5:
        return EXTRA_KINDS[:4]
    for i in (n - 3, n - 4):
        dp.remove_rule(rule_key(i))
    dp.add_rule(Rule.make(SENDER6, GROUP6, RULE_MAX_TTL))
    dp.add_rule(Rule.make(STRANGER6, ipaddress.IPv6Address("ff0e::db8:2"), RULE_MAX_TTL))
    return EXTRA_KINDS


def extra_frames_for(n: int, payload: int = PAYLOADS[0]) -> dict[str, tuple[bytes, int, str]]:
    key = rule_key(n // 2)
    return {
        "rate_limited": (udp_frame(key.source, key.group, 8, payload), XDP_PASS, "passed"),
        "source_prefix": (udp_frame(SOURCE_PREFIX[5 << 16 | 5], rule_key(0).group, 8, payload), XDP_PASS, "passed"),
        "group_prefix": (udp_frame(TRUSTED, GROUP_PREFIX[1 << 16 | 257], 8, payload), XDP_PASS, "passed"),
        "unauthorized_prefixes": (udp_frame(STRANGER, rule_key(0).group, 8, payload), XDP_DROP, "unauthorized"),
        "passed6": (udp6_frame(SENDER6, GROUP6, 8, payload), XDP_PASS, "passed"),
        "unauthorized6": (udp6_frame(STRANGER6, GROUP6, 8, payload), XDP_DROP, "unauthorized"),
        "ttl6": (udp6_frame(SENDER6, GROUP6, 64, payload), XDP_DROP, "ttl"),
        "passed6_ext": (udp6_frame(SENDER6, GROUP6, 8, payload, ext=2), XDP_PASS, "passed"),
    }


def timed_run(prog_fd: int, frame: bytes, repeat: int, ingress: int = 0) -> tuple[int, float]:
    """(kernel's ns per run, this thread's CPU ns per run) for one BPF_PROG_TEST_RUN."""
    t0 = time.thread_time_ns()
    run = bpfsys.prog_test_run(prog_fd, frame, repeat, ingress)
    t1 = time.thread_time_ns()
    return run.duration_ns, (t1 - t0) / repeat


def check_paths(dp: DataPlane, frames: dict) -> None:
    """Each frame must take the path it is named after, or the figures mean nothing."""
    for kind, (frame, action, reason) in frames.items():
        before = dp.counters()[reason]["packets"]
        got = dp.test_run(frame).retval
        after = dp.counters()[reason]["packets"]
        if got != action or after != before + 1:
            raise SystemExit(f"frame {kind!r} took the wrong path: action {got}, {reason} +{after - before}")


def summarize(samples: list[tuple[int, float, int, float, int, float]]) -> dict:
    """samples: per round (floor0, floor0_cpu, filter, filter_cpu, floor1, floor1_cpu)."""

    def block(idx_f0: int, idx_m: int, idx_f1: int, digits: int) -> dict:
        floors = [s[idx_f0] for s in samples] + [s[idx_f1] for s in samples]
        filt = [s[idx_m] for s in samples]
        added = [s[idx_m] - (s[idx_f0] + s[idx_f1]) / 2 for s in samples]
        ratio = [s[idx_m] / ((s[idx_f0] + s[idx_f1]) / 2) for s in samples]
        q1, med, q3 = common.quartiles(added)
        return {
            "floor_ns": round(common.quartiles(floors)[1], digits),
            "filter_ns": round(common.quartiles(filt)[1], digits),
            "added_ns": round(med, 2),
            "added_ns_iqr": [round(q1, 2), round(q3, 2)],
            "ratio": round(common.quartiles(ratio)[1], 2),
        }

    out = block(0, 2, 4, 1)
    out["cpu_clock"] = block(1, 3, 5, 2)
    return out


def measure(floor_fd: int, dp: DataPlane, n: int, rounds: int, repeat: int, kinds: tuple[str, ...] = KINDS,
            frames_fn=frames_for) -> dict[str, dict]:
    by_payload = [{k: v for k, v in frames_fn(n, p).items() if k in kinds} for p in PAYLOADS]
    samples: dict[str, list] = {k: [] for k in kinds}
    for frame, _, _ in by_payload[0].values():  # an untimed round warms programs, maps, caches
        timed_run(floor_fd, frame, repeat)
        timed_run(dp.prog_fd, frame, repeat)
    order = list(kinds)
    for r in range(rounds):
        frames = by_payload[r % len(by_payload)]
        for kind in order[r % len(order):] + order[: r % len(order)]:  # rotate who goes first
            frame = frames[kind][0]
            f0 = timed_run(floor_fd, frame, repeat)
            m = timed_run(dp.prog_fd, frame, repeat)
            f1 = timed_run(floor_fd, frame, repeat)
            samples[kind].append((*f0, *m, *f1))
    return {kind: summarize(s) for kind, s in samples.items()}


@contextlib.contextmanager
def bind_namespace():
    """A namespace with BIND_IFACES (veths, up, forwarding on), BIND_ROUTE on the first; {name: ifindex}."""
    ns = f"mauth-bench-{uuid.uuid4().hex[:6]}"
    netns.add(ns)
    try:
        netns.sh("sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", ns=ns)
        for name in BIND_IFACES:
            netns.sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p", ns=ns)
            netns.sh("ip", "link", "set", name, "up", ns=ns)
            netns.sh("ip", "link", "set", f"{name}p", "up", ns=ns)
        netns.sh("ip", "addr", "add", "10.255.255.254/8", "dev", BIND_IFACES[0], ns=ns)
        with netns.inside(ns):
            yield ns, {name: socket.if_nametoindex(name) for name in BIND_IFACES}
    finally:
        netns.delete(ns)


def bindings_of(ifindex: int) -> dict[str, Binding | None]:
    mac = SENDER_MAC
    return {"unbound": None, "iface": Binding.make(ifindex), "mac": Binding.make(mac=mac),
            "learn": Binding.make(learn=True), "rpf": Binding.make(rpf=True),
            "all": Binding.make(ifindex, rpf=True, mac=mac, learn=True)}


def measure_bindings(floor_fd: int, bpffs: Path, rounds: int, repeat: int) -> list[dict]:
    """The bound rows: one rule's packet, the rule unbound, bound each way, and under layout 4 (docstring)."""
    rules = make_rules(BIND_RULES)
    key = rule_key(BIND_RULES // 2)
    with tempfile.TemporaryDirectory(prefix="mauth-bench-v4-") as tmp, bind_namespace() as (_, ifx):
        ingress = ifx[BIND_IFACES[0]]
        obj4 = build_filter_at(LAYOUT4_COMMIT, Path(tmp))
        with layout4(obj4):
            old = DataPlane(bpffs / "layout4", max_rules=BIND_RULES).load()
            old.add_rules_bulk(rules)
        with old, DataPlane(bpffs / "bound", max_rules=BIND_RULES).load() as dp:
            dp.add_rules_bulk(rules)
            bindings = bindings_of(ingress)
            progs = {k: (dp, dp.prog_fd) for k in bindings} | {"layout4": (old, old.prog_fd)}

            def prepare(kind: str) -> None:
                if kind in bindings:
                    dp.set_binding(key, bindings[kind])

            for payload in PAYLOADS:  # every variant passes the packet, counted as passed
                frame = udp_frame(key.source, key.group, 8, payload)
                for kind in BIND_KINDS:
                    prepare(kind)
                    plane, fd = progs[kind]
                    with layout4(obj4) if kind == "layout4" else contextlib.nullcontext():
                        before = plane.counters()["passed"]["packets"]
                        got = bpfsys.prog_test_run(fd, frame, 1, ingress).retval
                        after = plane.counters()["passed"]["packets"]
                    if got != XDP_PASS or after != before + 1:
                        raise SystemExit(f"bound variant {kind!r} took the wrong path: action {got}")
                prepare("iface")  # and a binding does refuse: the same packet from the other veth
                if bpfsys.prog_test_run(dp.prog_fd, frame, 1, ifx[BIND_IFACES[1]]).retval != XDP_DROP:
                    raise SystemExit("a rule bound to one interface passed a packet from another")
            frames = [udp_frame(key.source, key.group, 8, p) for p in PAYLOADS]
            for kind in BIND_KINDS:  # warm
                prepare(kind)
                timed_run(progs[kind][1], frames[0], repeat, ingress)
            samples: dict[str, list] = {k: [] for k in BIND_KINDS}
            order = list(BIND_KINDS)
            for r in range(rounds):
                frame = frames[r % len(frames)]
                for kind in order[r % len(order):] + order[: r % len(order)]:
                    prepare(kind)
                    f0 = timed_run(floor_fd, frame, repeat, ingress)
                    m = timed_run(progs[kind][1], frame, repeat, ingress)
                    f1 = timed_run(floor_fd, frame, repeat, ingress)
                    samples[kind].append((*f0, *m, *f1))
    out = []
    for kind in BIND_KINDS:
        fig = summarize(samples[kind])
        fig["vs_unbound"], fig["vs_unbound_cpu_added_ns"] = versus(samples[kind], samples["unbound"])
        fig.update(kind=kind, rules=BIND_RULES, action="pass")
        out.append(fig)
    return out


def versus(rows: list[tuple], base: list[tuple]) -> tuple[float, float]:
    """(median over rounds of filter ns / the base's, median of added ns on the CPU clock minus the base's).

    `rows` and `base`: samples of the same rounds, as summarize() takes them.
    """
    ratio = common.quartiles([a[2] / b[2] for a, b in zip(rows, base, strict=True)])[1]
    cpu = common.quartiles([(a[3] - (a[1] + a[5]) / 2) - (b[3] - (b[1] + b[5]) / 2)
                            for a, b in zip(rows, base, strict=True)])[1]
    return round(ratio, 2), round(cpu, 2)


def rotated(order: list, r: int) -> list:
    """`order` starting at its (r mod len)th element: who goes first changes every round."""
    k = r % len(order)
    return order[k:] + order[:k]


def timed_calls(prog_fd: int, frame: bytes, calls: int, ingress: int = 0) -> tuple[float, float]:
    """(mean kernel ns, mean thread CPU ns) of `calls` BPF_PROG_TEST_RUN calls of one run each (reports)."""
    total = 0
    t0 = time.thread_time_ns()
    for _ in range(calls):
        total += bpfsys.prog_test_run(prog_fd, frame, 1, ingress).duration_ns
    t1 = time.thread_time_ns()
    return total / calls, (t1 - t0) / calls


def run_rounds(floor_fd: int, jobs: dict, rounds: int, timer) -> dict[str, list]:
    """Samples per job: every round, jobs in rotated order, each floor, program, floor (same frame, ingress).

    `jobs`: name -> function of the round giving (program fd, frame, ingress); `timer(fd, frame, ingress)`:
    (kernel ns, CPU ns) per run.
    """
    for job in jobs.values():  # an untimed pass warms programs, maps, caches
        fd, frame, ingress = job(0)
        timer(floor_fd, frame, ingress)
        timer(fd, frame, ingress)
    samples: dict[str, list] = {name: [] for name in jobs}
    for r in range(rounds):
        for name in rotated(list(jobs), r):
            fd, frame, ingress = jobs[name](r)
            f0 = timer(floor_fd, frame, ingress)
            m = timer(fd, frame, ingress)
            f1 = timer(floor_fd, frame, ingress)
            samples[name].append((*f0, *m, *f1))
    return samples


def filler_receivers(n: int) -> list[ReceiverRule]:
    """`n` IPv4 rules for REPORTER4's prefix that allow none of the rows' groups (239.2/16), all sorting
    before ALLOWED4: a report allowed by ALLOWED4 is judged against every one of them first."""
    return [ReceiverRule.make("10.1.0.0/24", f"239.2.{i >> 8}.{i & 255}") for i in range(n)]


def report_frames() -> dict[str, tuple[bytes, int, bytes | None]]:
    """kind -> (frame, XDP action, frame after the program or None if dropped) for the report rows.

    Half-refused reports alternate an allowed record (ALLOWED4/ALLOWED6's groups) with a refused one,
    so compaction moves every kept record after the first.
    """
    r = reports
    v2 = r.igmp_v2(REPORTER4, "239.9.1.1")
    all10 = r.igmp_v3(REPORTER4, [r.Record(r.TO_EX, f"239.9.3.{i}") for i in range(1, 11)])
    all10_512 = r.igmp_v3(REPORTER4, [r.Record(r.TO_EX, f"239.9.5.{i}") for i in range(1, 11)])
    half4 = [r.Record(r.TO_EX, f"239.9.4.{i}" if i % 2 else f"239.8.4.{i}") for i in range(1, 11)]
    half6 = [r.Record(r.TO_EX, f"ff0e::9:{i:x}" if i % 2 else f"ff0e::8:{i:x}") for i in range(1, 11)]
    return {
        "floor": (v2, XDP_PASS, v2),
        "v2_layout5": (v2, XDP_PASS, v2),
        "v2_no_policy": (v2, XDP_PASS, v2),
        "v2_open": (v2, XDP_PASS, v2),
        "v2_first": (v2, XDP_PASS, v2),
        "v2_last512": (v2, XDP_PASS, v2),
        "v2_refused512": (r.igmp_v2(REPORTER4, "239.8.1.1"), XDP_DROP, None),
        "v3_allowed10": (all10, XDP_PASS, all10),
        "v3_allowed10_last512": (all10_512, XDP_PASS, all10_512),
        "v3_half10": (r.igmp_v3(REPORTER4, half4), XDP_PASS, r.igmp_v3(REPORTER4, half4[::2])),
        "mld2_half10": (r.mld_v2(REPORTER6, half6), XDP_PASS, r.mld_v2(REPORTER6, half6[::2])),
    }


# The reason counter each report row bumps once per run (the floor has none): a v3 report, sent to
# 224.0.0.22, kept whole counts as link_local, as before receivers existed.
REPORT_REASONS = {"v2_layout5": "igmp", "v2_no_policy": "igmp", "v2_open": "igmp", "v2_first": "igmp",
                  "v2_last512": "igmp", "v2_refused512": "join_refused", "v3_allowed10": "link_local",
                  "v3_allowed10_last512": "link_local", "v3_half10": "join_refused", "mld2_half10": "join_refused"}


def measure_receivers(floor_fd: int, bpffs: Path, rounds: int, repeat: int, calls: int) -> dict:
    """The receiver rows (docstring): {"data": [...], "reports": [...]}."""
    rules = make_rules(BIND_RULES)
    six = Rule.make(SENDER6, GROUP6, RULE_MAX_TTL)
    closed, opened = BIND_IFACES
    with tempfile.TemporaryDirectory(prefix="mauth-bench-v5-") as tmp, bind_namespace() as (_, ifx):
        obj5 = build_filter_at(LAYOUT5_COMMIT, Path(tmp))
        with layout5(obj5):
            old = DataPlane(bpffs / "layout5", max_rules=BIND_RULES + 1).load()
            old.add_rules_bulk(rules + [six])
        planes = {name: DataPlane(bpffs / name, max_rules=BIND_RULES + 1, ifaces=BIND_IFACES).load()
                  for name in ("no_policy", "closed512", "first")}
        with old, planes["no_policy"], planes["closed512"], planes["first"]:
            for dp in planes.values():
                dp.add_rules_bulk(rules + [six])
            big, first = planes["closed512"], planes["first"]
            big.apply_receivers(filler_receivers(RECV_RULES - 1) + [ALLOWED4])
            first.apply_receivers([ALLOWED4, ALLOWED6])
            if [s.rule for s in big.receiver_rules()][-1] != ALLOWED4 or len(big.receiver_rules()) != RECV_RULES:
                raise SystemExit(f"the allowing rule is not the last of {RECV_RULES}")
            for dp in (big, first):
                dp.set_receiver_policy(IfacePolicy.make(closed, "closed", RECV_LIMIT))
            data_progs = {"floor": (None, floor_fd), "layout5": (old, old.prog_fd)} | {
                v: (planes[p], planes[p].prog_fd) for v, p in (("no_policy", "no_policy"), ("closed512", "closed512"))}

            def data_frames(payload: int) -> dict[str, tuple[bytes, int, str]]:
                both = frames_for(BIND_RULES, payload) | extra_frames_for(BIND_RULES, payload)
                return {k: both[k] for k in DATA_KINDS}

            for payload in PAYLOADS:  # every data frame takes its path under every program
                for kind, (frame, action, reason) in data_frames(payload).items():
                    for variant, (plane, fd) in data_progs.items():
                        if plane is None:
                            continue
                        with layout5(obj5) if variant == "layout5" else contextlib.nullcontext():
                            before = plane.counters()[reason]["packets"]
                            got = bpfsys.prog_test_run(fd, frame, 1, ifx[closed]).retval
                            after = plane.counters()[reason]["packets"]
                        if got != action or after != before + 1:
                            raise SystemExit(f"{kind} under {variant} took the wrong path: action {got}")
            by_payload = [data_frames(p) for p in PAYLOADS]
            data_jobs = {
                f"{kind}/{variant}": (lambda r, k=kind, fd=fd: (fd, by_payload[r % len(PAYLOADS)][k][0], ifx[closed]))
                for kind in DATA_KINDS for variant, (_, fd) in data_progs.items()
            }
            print(f"receivers: {len(data_jobs)} data-packet rows", file=sys.stderr)
            data = run_rounds(floor_fd, data_jobs, rounds, lambda fd, f, i: timed_run(fd, f, repeat, i))

            bare = planes["no_policy"]
            report_progs = {"floor": (None, floor_fd, closed), "v2_layout5": (old, old.prog_fd, closed),
                            "v2_no_policy": (bare, bare.prog_fd, closed),
                            "v2_open": (big, big.prog_fd, opened), "v2_first": (first, first.prog_fd, closed),
                            "v2_last512": (big, big.prog_fd, closed), "v2_refused512": (big, big.prog_fd, closed),
                            "v3_allowed10": (first, first.prog_fd, closed),
                            "v3_allowed10_last512": (big, big.prog_fd, closed),
                            "v3_half10": (first, first.prog_fd, closed), "mld2_half10": (first, first.prog_fd, closed)}
            frames = report_frames()
            for kind, (frame, action, out) in frames.items():  # each report takes its path, output byte for byte
                plane, fd, iface = report_progs[kind]
                with layout5(obj5) if kind == "v2_layout5" else contextlib.nullcontext():
                    was = plane.counters() if plane is not None else None
                    run = bpfsys.prog_test_run(fd, frame, 1, ifx[iface])
                    now = plane.counters() if plane is not None else None
                if run.retval != action or (out is not None and run.data != out):
                    raise SystemExit(f"report {kind!r} took the wrong path: action {run.retval}")
                if was is not None and now is not None:
                    moved = {r for r in now if now[r]["packets"] != was[r]["packets"]}
                    if moved != {REPORT_REASONS[kind]}:
                        raise SystemExit(f"report {kind!r} counted under {sorted(moved)}")
            report_jobs = {k: (lambda r, k=k: (report_progs[k][1], frames[k][0], ifx[report_progs[k][2]]))
                           for k in REPORT_KINDS}
            print(f"receivers: {len(report_jobs)} report rows, {calls:,} calls of one run per sample",
                  file=sys.stderr)
            reps = run_rounds(floor_fd, report_jobs, rounds, lambda fd, f, i: timed_calls(fd, f, calls, i))
            if any(p.groups >= RECV_LIMIT for dp in (big, first) for p in dp.receiver_policies()):
                raise SystemExit("a row's groups reached the limit: the rows would measure the limit's refusal")
    data_rows = []
    for kind in DATA_KINDS:
        base = data[f"{kind}/layout5"]
        verdict = "drop" if kind == "unauthorized" else "pass"
        for variant in DATA_VARIANTS:
            fig = summarize(data[f"{kind}/{variant}"])
            fig["vs_layout5"], fig["vs_layout5_cpu_added_ns"] = versus(data[f"{kind}/{variant}"], base)
            data_rows.append({"kind": kind, "variant": variant, "action": verdict} | fig)
    report_rows = []
    rules_of = {"v2_first": 1, "v3_allowed10": 1, "v3_half10": 1, "mld2_half10": 1}
    for kind in REPORT_KINDS:
        frame, action, out = frames[kind]
        fig = summarize(reps[kind])
        fig["vs_open"], fig["vs_open_cpu_added_ns"] = versus(reps[kind], reps["v2_open"])
        scanned = 0 if kind in ("floor", "v2_layout5", "v2_no_policy", "v2_open") else rules_of.get(kind, RECV_RULES)
        report_rows.append({"kind": kind, "action": "pass" if action == XDP_PASS else "drop",
                            "rules_scanned": scanned, "frame_bytes": len(frame),
                            "out_bytes": len(out) if out is not None else 0} | fig)
    return {"data": data_rows, "reports": report_rows}


def receivers_markdown(rec: dict) -> str:
    lines = [
        "| data packet | program | floor ns | filter ns | added ns | added ns (CPU clock) | ÷ layout 5 (filter ns) "
        "| − layout 5 (CPU clock added ns) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rec["data"]:
        c = r["cpu_clock"]
        lines.append(f"| {r['kind']} | {r['variant']} | {r['floor_ns']:g} | {r['filter_ns']:g} | {r['added_ns']:g} "
                     f"| {c['added_ns']:.2f} | {r['vs_layout5']:.2f} | {r['vs_layout5_cpu_added_ns']:+.2f} |")
    lines += [
        "",
        "| report | action | rules scanned | bytes in → out | floor ns | filter ns | added ns | added ns IQR "
        "| added ns (CPU clock) | ÷ open (filter ns) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rec["reports"]:
        c, (q1, q3) = r["cpu_clock"], r["added_ns_iqr"]
        lines.append(f"| {r['kind']} | {r['action']} | {r['rules_scanned']} | {r['frame_bytes']} → {r['out_bytes']} "
                     f"| {r['floor_ns']:g} | {r['filter_ns']:g} | {r['added_ns']:g} | {q1:g}–{q3:g} "
                     f"| {c['added_ns']:.2f} | {r['vs_open']:.2f} |")
    return "\n".join(lines)


def bind_markdown(rows: list[dict]) -> str:
    lines = [
        "| rule | floor ns | filter ns | added ns | added ns (CPU clock) | ÷ unbound (filter ns) "
        "| − unbound (CPU clock added ns) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        c = r["cpu_clock"]
        lines.append(f"| {r['kind']} | {r['floor_ns']:g} | {r['filter_ns']:g} | {r['added_ns']:g} "
                     f"| {c['added_ns']:.2f} | {r['vs_unbound']:.2f} | {r['vs_unbound_cpu_added_ns']:+.2f} |")
    return "\n".join(lines)


def markdown(results: list[dict], bulk: list[dict], bindings: list[dict] | None = None,
             receivers: dict | None = None) -> str:
    lines = [
        "| packet | rules | floor ns | filter ns | added ns | × floor | added ns (CPU clock) | ≤ 15 ns added |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for kind in KINDS + EXTRA_KINDS:
        for r in (x for x in results if x["kind"] == kind):
            c = r["cpu_clock"]
            meets = "n/a" if kind in EXTRA_KINDS else "yes" if r["meets_target"] else "**no**"
            lines.append(
                f"| {kind} | {r['rules']:,} | {r['floor_ns']:g} | {r['filter_ns']:g} | {r['added_ns']:g} "
                f"| {r['ratio']:.2f} | {c['added_ns']:.2f} | {meets} |"
            )
    lines += ["", "| rules | bulk load s | rules/s |", "| ---: | ---: | ---: |"]
    for b in bulk:
        lines.append(f"| {b['rules']:,} | {b['seconds']:.3f} | {b['rules_per_second']:,.0f} |")
    if bindings:
        lines += ["", bind_markdown(bindings)]
    if receivers:
        lines += ["", receivers_markdown(receivers)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.xdp_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default="1,1000,100000,1000000", help="comma-separated rule counts")
    ap.add_argument("--rounds", type=int, default=24, help="interleaved rounds per (rule count, packet kind)")
    ap.add_argument("--repeat", type=int, default=2_000_000, help="runs per BPF_PROG_TEST_RUN call (>= 1,000,000)")
    ap.add_argument("--no-json", action="store_true", help="print only; leave docs/benchmarks.json alone")
    ap.add_argument("--no-bindings", action="store_true", help="leave out the bound-rule rows")
    ap.add_argument("--only-bindings", action="store_true", help="only the bound-rule rows (with --no-json)")
    ap.add_argument("--no-receivers", action="store_true", help="leave out the receiver rows")
    ap.add_argument("--only-receivers", action="store_true",
                    help="only the receiver rows; without --no-json they replace the section's \"receivers\" alone")
    ap.add_argument("--report-calls", type=int, default=REPORT_CALLS,
                    help="one-run calls per report sample (reports cannot use --repeat: see the docstring)")
    args = ap.parse_args(argv)
    counts = [int(x.replace("_", "")) for x in args.rules.split(",")]
    if args.only_bindings:
        if not args.no_json:
            ap.error("--only-bindings leaves the other rows out: add --no-json")
        counts = []
    if args.only_receivers:
        if args.only_bindings or args.no_receivers:
            ap.error("--only-receivers runs the receiver rows alone: drop --only-bindings and --no-receivers")
        counts = []
        if not args.no_json and not isinstance(common.stored_section(SECTION), dict):
            ap.error(f"no {SECTION!r} section in {common.JSON_PATH} to add the receiver rows to: run without "
                     "--only-receivers")
    if args.report_calls < 1:
        ap.error("--report-calls must be at least 1")
    if args.repeat < 1_000_000 and not args.no_json:
        ap.error("--repeat below 1,000,000 is for trying things out: add --no-json")

    started = time.monotonic()
    cpu = common.pin_to_quietest_cpu()
    print(f"pinned to CPU {cpu}; {args.rounds} rounds x {args.repeat:,} runs per call", file=sys.stderr)
    floor_obj = common.load_bench_object(FLOOR_OBJECT)
    floor_fd = floor_obj.program_fd(FLOOR_PROGRAM)
    warm_until = time.monotonic() + 1.0  # the first second on a quiet vCPU runs slow
    while time.monotonic() < warm_until:
        timed_run(floor_fd, udp_frame(STRANGER, UNICAST, 8), 1_000_000)
    results, bulk = [], []
    try:
        with common.private_bpffs() as bpffs:
            for n in counts:
                pin_dir = bpffs / f"rules-{n}"
                rules = make_rules(n)
                with DataPlane(pin_dir, max_rules=n).load() as dp:
                    t0 = time.perf_counter()
                    dp.add_rules_bulk(rules)
                    secs = time.perf_counter() - t0
                    bulk.append({"rules": n, "seconds": round(secs, 4), "rules_per_second": round(n / secs)})
                    assert dp._next_slot == n  # every rule in, one slot each
                    for payload in PAYLOADS:
                        check_paths(dp, frames_for(n, payload))
                    frames = frames_for(n)
                    print(f"{n:,} rules loaded in {secs:.2f} s; measuring", file=sys.stderr)
                    for kind, fig in measure(floor_fd, dp, n, args.rounds, args.repeat).items():
                        fig.update(rules=n, kind=kind,
                                   action="pass" if frames[kind][1] == XDP_PASS else "drop")
                        fig["meets_target"] = fig["added_ns"] <= TARGET_ADDED_NS
                        results.append(fig)
                    kinds = add_extra_rules(dp, n)
                    for payload in PAYLOADS:
                        check_paths(dp, {k: v for k, v in extra_frames_for(n, payload).items() if k in kinds})
                    extra = extra_frames_for(n)
                    for kind, fig in measure(floor_fd, dp, n, args.rounds, args.repeat, kinds,
                                             extra_frames_for).items():
                        fig.update(rules=n, kind=kind, action="pass" if extra[kind][1] == XDP_PASS else "drop")
                        fig["meets_target"] = None  # the target is for exact rules without limits
                        results.append(fig)
                del rules
                shutil.rmtree(pin_dir, ignore_errors=True)
            bound = ([] if args.no_bindings or args.only_receivers
                     else measure_bindings(floor_fd, bpffs, args.rounds, args.repeat))
            recv_started = time.monotonic()
            recv = (None if args.no_receivers or args.only_bindings
                    else measure_receivers(floor_fd, bpffs, args.rounds, args.repeat, args.report_calls))
    finally:
        floor_obj.close()
    command = " ".join(["python -m bench.xdp_cost", *(argv if argv is not None else sys.argv[1:])])
    receivers = None if recv is None else {
        "generated": common.now_iso(),
        "command": command,
        "machine": common.machine(),
        "method": {
            "rules": BIND_RULES,
            "receiver_rules": RECV_RULES,
            "group_limit": RECV_LIMIT,
            "ingress": "veths in a namespace of the benchmark's own: the first closed (with the limit), the second"
                       " open (no policy)",
            "data": f"per round and row: floor, program, floor at --repeat {args.repeat:,}, frame sizes rotating;"
                    f" layout5 is commit {LAYOUT5_COMMIT}'s program in maps of its own; vs_layout5: median over"
                    " rounds of filter ns / layout5's filter ns for the same packet",
            "reports": f"per round and row: floor, program, floor, each {args.report_calls:,} calls of one run"
                       " (the kernel runs repeats on the same buffer, so a rewritten report would be judged"
                       " rewritten); vs_open: median over rounds of filter ns / the open interface's",
            "floor_rows": "the floor program in the filter's place: the method's noise floor",
            "rounds": args.rounds,
            "cpu": cpu,
        },
        **recv,
        "elapsed_s": round(time.monotonic() - recv_started, 1),
    }
    if args.only_receivers:
        assert receivers is not None
        print(receivers_markdown(receivers))
        if not args.no_json:
            section = common.stored_section(SECTION)
            assert isinstance(section, dict)
            section["receivers"] = receivers
            common.store_section(SECTION, section)
        return 0

    order = {k: i for i, k in enumerate(KINDS + EXTRA_KINDS)}
    results.sort(key=lambda r: (order[r["kind"]], r["rules"]))
    results = [{k: r[k] for k in ("kind", "rules", "action")} | r for r in results]
    spread = {
        kind: round(max(r["added_ns"] for r in results if r["kind"] == kind)
                    - min(r["added_ns"] for r in results if r["kind"] == kind), 2)
        for kind in KINDS + EXTRA_KINDS if any(r["kind"] == kind for r in results)
    }
    section = {
        "generated": common.now_iso(),
        "command": command,
        "machine": common.machine(),
        "method": {
            "harness": "BPF_PROG_TEST_RUN via libbpf bpf_prog_test_run_opts, one frame per call, cache-hot",
            "floor": "empty XDP program (return XDP_PASS, ebpf/bench/floor.bpf.c), same run, frame and CPU",
            "repeat": args.repeat,
            "rounds": args.rounds,
            "order": "per round and kind: floor, filter, floor; added = filter - mean(floors); medians of rounds",
            "frame_bytes": [len(udp_frame(STRANGER, UNICAST, 8, p)) for p in PAYLOADS],
            "frame_rotation": "one frame size per round in turn: moves the kernel's test buffer in memory",
            "cpu": cpu,
            "max_rules": "equal to the rule count (hash table at its fullest)",
            "kernel_resolution_ns": 1,
        },
        "target_added_ns": TARGET_ADDED_NS,
        "meets_target": all(r["meets_target"] for r in results if r["kind"] in KINDS),
        "added_ns_spread_over_rule_counts": spread,
        "results": results,
        "bulk_load": bulk,
        "bindings": bound,
        "bindings_method": {
            "rules": BIND_RULES,
            "ingress": "veth in a namespace of the benchmark's own, forwarding on, the sources routed through it",
            "variants": "one rule, rebound with DataPlane.set_binding() before each call; layout4: the same"
                        f" rules under commit {LAYOUT4_COMMIT}'s program, in maps of its own",
            "vs_unbound": "median over rounds of filter ns / the unbound rule's filter ns in the same round",
            "vs_unbound_cpu_added_ns": "median over rounds of added ns (CPU clock) minus the unbound rule's",
        },
        "receivers": receivers,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(markdown(results, bulk, bound, receivers))
    if counts:
        print(f"\nadded-ns spread from {counts[0]:,} to {counts[-1]:,} rules: "
              + ", ".join(f"{k} {v:g}" for k, v in spread.items()), file=sys.stderr)
    if not args.no_json:
        common.store_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
