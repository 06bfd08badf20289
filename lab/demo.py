"""`make demo`: the whole of mauth, live, in a namespace lab.

    s1  192.0.2.10  Campus TV encoder, TTL 8 ───────┐
    s2  192.0.2.70  Campus TV encoder, TTL 32 ──────┤ in0, in1, in2: guarded
        192.0.2.72  Lecture hall sender, no rule ───┤ by musersd's XDP filter
    a1  192.0.2.130 SAP announcer (3 sessions) ─────┘        │
                                               router: smcrouted, musersd,
                                               mauthserver (SQLite in the lab's
                                               temporary directory, API on the
                                               router's loopback)
                                                             │ out0
                                                   r1  198.51.100.2  receiver

The announcer announces three sessions with SAP: "Campus TV (SSM)", whose
source filter names 192.0.2.10 and 192.0.2.70 (max TTL 8 from its c= line),
the any-source "Lecture hall", and a "Lobby camera" nobody authorizes. The
filter lets the announcements reach the router itself with their TTL set to
1, so mauthserver hears them but they are never forwarded. The operator
authorizes the SSM session with `mauthctl authorize`; then traffic starts
from an authorized sender, from a sender exceeding its TTL and from an
unauthorized sender.

Interactive (the default on a terminal): traffic flows continuously, and
`mauthctl dashboard` opens (inside the router namespace, where the API is),
so the operator watches the denied senders and authorizes one; without a
dashboard a live summary is printed every second. Quitting the dashboard or
Ctrl-C removes every namespace and process.

Headless (`--headless`, `make demo HEADLESS=1`): phase 1 sends a fixed
number of packets from each sender; halfway the operator runs `mauthctl
authorize <Lecture hall> --sender 192.0.2.72`; phase 2 sends the same again.
The report gives, per sender and phase, what was sent, delivered at the
receiver and dropped and why (from the filter's own counters, `mauthctl
--json list/denied/stats`), then a JSON summary; the exit status is 0 only
if the policy held exactly.

`--at-router` (interactive only) builds the lab without forwarding and
counts what the filter passes where it arrives on the router, for a kernel
without multicast routing where `make demo` otherwise runs inside lab.vm's
guest; the test suite drives the dashboard and the live view that way on any
kernel, and proves the forwarding with the headless demo in the router tier.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mauthcore.constants import SAP_PORT

from .daemons import BIN, ROUTER_PORT, Mauthserver, Musersd, make_secrets, mauthctl
from .netns import LabError, inside, patience, private_bpffs
from .topology import Lab, Route
from .traffic import Receiver, Sender

DATA = Path(__file__).resolve().parent / "data"
AUTH, LOUD, ROGUE, ANNOUNCER = "192.0.2.10", "192.0.2.70", "192.0.2.72", "192.0.2.130"
SSM_GROUP, ASM_GROUP = "232.1.1.1", "239.1.1.1"
SAP_GROUPS = ("224.2.127.254", "239.255.255.255")  # where the announcer's sessions are announced
SESSIONS = {  # key -> (SDP file, session name)
    "ssm": ("campus_tv_ssm.sdp", "Campus TV (SSM)"),
    "asm": ("lecture_hall_asm.sdp", "Lecture hall (any source)"),
    "lobby": ("lobby_camera_asm.sdp", "Lobby camera"),
}
PER_PHASE = 200  # packets per sender per phase (headless)
BURST = 20
LIVE_RATE = 10.0  # packets per second per sender (interactive)
ANNOUNCE_INTERVAL = "10"  # seconds between SAP announcements (the RFC's 300 s is too slow to watch)


@dataclass(frozen=True)
class Flow:
    """One sender's traffic and what the filter must decide for it in each phase."""

    source: str
    host: str
    group: str
    ttl: int
    session: str  # key into SESSIONS
    expect: tuple[str, str]  # filter verdict in phase 1 and phase 2: "passed" or a drop reason
    story: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.group)


FLOWS = (
    Flow(AUTH, "s1", SSM_GROUP, 8, "ssm", ("passed", "passed"),
         "named by the SSM session's source filter, sends TTL 8 (max 8)"),
    Flow(LOUD, "s2", SSM_GROUP, 32, "ssm", ("ttl", "ttl"),
         "named by the source filter, but sends TTL 32 (max 8)"),
    Flow(ROGUE, "s2", ASM_GROUP, 8, "asm", ("unauthorized", "passed"),
         "no rule; authorized halfway for the any-source session"),
)


class DemoError(Exception):
    """The demo could not run; one sentence."""


def _ansi(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def say(text: str) -> None:
    print(f"{_ansi('1', '==>')} {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"    {line}")
    sys.stdout.flush()


# ---------------------------------------------------------------- what the filter says


@dataclass
class Snapshot:
    """The router filter's own counters, read with `mauthctl --router ... --json`."""

    passed: dict[tuple[str, str], int]  # per rule
    max_ttl: dict[tuple[str, str], int]
    denied: dict[tuple[str, str], tuple[str, int]]  # (reason, packets)
    reasons: dict[str, int] = field(default_factory=dict)  # filter-wide, per reason


class SapWatch:
    """Sockets at the receiver joined to the SAP groups: an announcement must never get this far."""

    def __init__(self, ns: str, iface_addr: str, groups: tuple[str, ...]):
        self.socks: list[socket.socket] = []
        self.count = 0
        with inside(ns):
            for group in groups:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((group, SAP_PORT))
                mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface_addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                s.setblocking(False)
                self.socks.append(s)

    def poll(self) -> int:
        while True:
            ready, _, _ = select.select(self.socks, [], [], 0)
            if not ready:
                return self.count
            for s in ready:
                try:
                    s.recv(65535)
                    self.count += 1
                except BlockingIOError:
                    pass

    def close(self) -> None:
        for s in self.socks:
            s.close()


class System:
    """The running system in a lab: router daemons, announcer, senders, receiver."""

    def __init__(self, lab: Lab, pin_dir: Path):
        self.lab, self.pin_dir = lab, pin_dir
        self.key, self.token = make_secrets(lab.workdir)
        self.musersd = Musersd(lab, pin_dir, key_file=self.key)
        self.server = Mauthserver(lab, self.key, self.token, routers={"router": f"127.0.0.1:{ROUTER_PORT}"})
        self.session_ids: dict[str, str] = {}
        self.rx: Receiver | None = None
        self.senders: dict[str, Sender] = {}
        self.sap_watch: SapWatch | None = None

    # -- start-up

    def start(self) -> None:
        self.musersd.start()
        mode = json.loads(self.router("--json", "stats"))["mode"]
        say(f"musersd guards {', '.join(self.musersd.ifaces)} with its XDP filter ({mode} mode), "
            f"protocol v2 on port {ROUTER_PORT}")
        self.server.start()
        self.server.converged()
        say(f"mauthserver is up: database {self.server.db}, API {self.server.url} (router namespace)")
        r1 = next(iter(self.lab.receivers.values()))
        self.rx = self.lab.receiver([SSM_GROUP, ASM_GROUP])
        self.sap_watch = SapWatch(r1.ns, r1.addrs[0], SAP_GROUPS)
        self.senders = {f.source: self.lab.sender(f.source) for f in FLOWS}
        announcer = self.lab.host_of(ANNOUNCER)
        for key, (sdp, _) in SESSIONS.items():
            self.lab.spawn(announcer.ns, [str(BIN / "mauthctl"), "announce", str(DATA / sdp), "--source", ANNOUNCER,
                                          "--interval", ANNOUNCE_INTERVAL], f"announce-{key}")
        say(f"{announcer.role} ({ANNOUNCER}, no rule) announces {len(SESSIONS)} sessions with SAP on "
            f"{', '.join(SAP_GROUPS)}; the filter lets SAP reach the router with TTL 1, never further")
        names = {name for _, name in SESSIONS.values()}
        try:
            heard = self.server.wait_for(lambda: self.server.call("sessions"),
                                         lambda ss: names <= {s["name"] for s in ss}, timeout=30)
        except AssertionError:
            raise DemoError(f"mauthserver did not hear the announced sessions within {patience(30):g} s "
                            "(MAUTH_KEEP_LAB=1 keeps the lab's logs for a look)") from None
        by_name = {s["name"]: s["id"] for s in heard}
        self.session_ids = {key: by_name[name] for key, (_, name) in SESSIONS.items()}
        self.operator("sessions")

    def close(self) -> None:
        if self.sap_watch:
            self.sap_watch.close()

    # -- the operator's commands, run as an operator would (in the router namespace)

    def server_argv(self) -> list[str]:
        return ["--server", self.server.url, "--token-file", str(self.token)]

    def operator(self, *args: str) -> str:
        """Run `mauthctl --server URL ARGS` and show it; raise DemoError if it fails."""
        print(f"    {_ansi('2', '$ mauthctl --server ' + self.server.url + ' ' + ' '.join(args))}")
        r = self.server.ctl(*args)
        if r.returncode != 0:
            raise DemoError(f"mauthctl {' '.join(args)} failed: {r.stderr.strip()}")
        show(r.stdout)
        return r.stdout

    def router(self, *args: str) -> str:
        """`mauthctl --router 127.0.0.1:7575 --key-file KEY ARGS` in the router namespace."""
        r = mauthctl(self.lab, self.lab.router.ns, "--router", f"127.0.0.1:{ROUTER_PORT}", "--key-file",
                     str(self.key), *args)
        if r.returncode != 0:
            raise DemoError(f"mauthctl --router {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def authorize(self, session: str, *senders: str) -> None:
        args = ["authorize", self.session_ids[session]]
        for s in senders:
            args += ["--sender", s]
        self.operator(*args)
        self.server.converged()

    def authorize_hint(self) -> str:
        """The command that authorizes the unauthorized sender, for the operator to paste."""
        argv = ["ip", "netns", "exec", self.lab.router.ns, str(BIN / "mauthctl"), *self.server_argv(),
                "authorize", self.session_ids["asm"], "--sender", ROGUE]
        return shlex.join(argv)

    def snapshot(self, with_stats: bool = True) -> Snapshot:
        rules = json.loads(self.router("--json", "list"))
        denied = json.loads(self.router("--json", "denied"))
        snap = Snapshot(
            passed={(r["source"], r["group"]): r["packets"] for r in rules},
            max_ttl={(r["source"], r["group"]): r["max_ttl"] for r in rules},
            denied={(d["source"], d["group"]): (d["reason"], d["packets"]) for d in denied},
        )
        if with_stats:
            stats = json.loads(self.router("--json", "stats"))
            snap.reasons = {name: v["packets"] for name, v in stats["reasons"].items()}
        return snap


# ---------------------------------------------------------------- headless


def send_phase(system: System) -> None:
    for _ in range(PER_PHASE // BURST):
        for f in FLOWS:
            system.senders[f.source].send(f.group, BURST, ttl=f.ttl)
        time.sleep(0.05)
    system.rx.drain(quiet=patience(0.3), limit=patience(10.0))


def measure(system: System, phase: int, before: Snapshot, after: Snapshot, rx_before: dict) -> list[dict]:
    """Per flow: sent, delivered at the receiver, and what the filter counted, against what the policy says."""
    rows = []
    for f in FLOWS:
        delivered = system.rx.got(f.source, f.group) - rx_before[f.key]
        passed = after.passed.get(f.key, 0) - before.passed.get(f.key, 0)
        reason, n_after = after.denied.get(f.key, (None, 0))
        dropped = n_after - before.denied.get(f.key, (None, 0))[1]
        verdict = f.expect[phase - 1]
        want_passed = PER_PHASE if verdict == "passed" else 0
        row = {
            "phase": phase, "sent": PER_PHASE, "delivered": delivered, "dropped": dropped,
            "why": reason if dropped else None, "filter_passed": passed,
            "expected": {"delivered": want_passed, "dropped": PER_PHASE - want_passed,
                         "why": None if verdict == "passed" else verdict},
        }
        row["held"] = (delivered == passed == want_passed and dropped == PER_PHASE - want_passed
                       and row["why"] == row["expected"]["why"])
        rows.append(row)
    return rows


def explain(flow: Flow, row: dict, snap: Snapshot) -> str:
    rule = snap.max_ttl.get(flow.key)
    if row["why"] == "ttl":
        return f"ttl: sends TTL {flow.ttl}, rule max TTL {rule}"
    if row["why"]:
        return f"{row['why']}: no rule" if rule is None else row["why"]
    return f"passed: rule max TTL {rule}" if rule is not None else "no rule"


def headless(system: System) -> int:
    system.authorize("ssm")
    for f in FLOWS[:2]:
        if system.musersd.rules().get(f.key) != 8:
            raise DemoError(f"the SSM session's rule for {f.source} did not reach the router")
    say(f"phase 1: {PER_PHASE} packets from each sender: "
        + ", ".join(f"{f.source} -> {f.group} TTL {f.ttl}" for f in FLOWS))
    rx_before = {f.key: system.rx.got(*f.key) for f in FLOWS}
    before = system.snapshot()
    send_phase(system)
    after1 = system.snapshot()
    phase1 = measure(system, 1, before, after1, rx_before)
    say("the filter's denied senders after phase 1:")
    print(f"    {_ansi('2', f'$ mauthctl --router 127.0.0.1:{ROUTER_PORT} denied')}")
    show(system.router("denied"))

    say(f"halfway: the operator authorizes {ROGUE} for the any-source session")
    system.authorize("asm", ROGUE)
    rule_ttl = system.musersd.rules().get((ROGUE, ASM_GROUP))
    say("phase 2: the same traffic again")
    rx_before = {f.key: system.rx.got(*f.key) for f in FLOWS}
    before = system.snapshot()
    send_phase(system)
    time.sleep(patience(0.5))  # anything still in flight reaches the receiver before the SAP check
    after2 = system.snapshot()
    phase2 = measure(system, 2, before, after2, rx_before)
    sap_forwarded = system.sap_watch.poll()

    senders = []
    for f, r1, r2 in zip(FLOWS, phase1, phase2):
        senders.append({
            "sender": f.source, "host": f.host, "group": f.group, "ttl": f.ttl,
            "session": SESSIONS[f.session][1], "story": f.story, "phases": [r1, r2],
            "sent": r1["sent"] + r2["sent"], "delivered": r1["delivered"] + r2["delivered"],
            "dropped": r1["dropped"] + r2["dropped"],
        })
    checks = [
        {"check": f"{s['sender']} phase {r['phase']}: delivered {r['expected']['delivered']}, dropped "
                  f"{r['expected']['dropped']}" + (f" ({r['expected']['why']})" if r['expected']['why'] else ""),
         "ok": r["held"]}
        for s in senders for r in s["phases"]
    ]
    checks.append({"check": f"authorizing the any-source session gave {ROGUE} a rule (max TTL 16 from c=)",
                   "ok": rule_ttl == 16})
    sap_local = after2.reasons.get("sap_local", 0)
    checks.append({"check": "the router heard the unauthorized announcer's SAP (sap_local > 0)",
                   "ok": sap_local > 0})
    checks.append({"check": "no SAP packet was forwarded to the receiver", "ok": sap_forwarded == 0})
    held = all(c["ok"] for c in checks)

    print()
    print(f"{'SENDER':<12} {'HOST':<4} {'GROUP':<15} {'TTL':>3} {'PHASE':>5} {'SENT':>5} {'DELIVERED':>9} "
          f"{'DROPPED':>7}  WHY (the filter's counters)")
    for f, s in zip(FLOWS, senders):
        for r, snap in zip(s["phases"], (after1, after2)):
            mark = "" if r["held"] else "   <-- POLICY VIOLATED"
            print(f"{s['sender']:<12} {s['host']:<4} {s['group']:<15} {s['ttl']:>3} {r['phase']:>5} {r['sent']:>5} "
                  f"{r['delivered']:>9} {r['dropped']:>7}  {explain(f, r, snap)}{mark}")
    print(f"{ANNOUNCER:<12} a1   {'SAP groups':<15} {'-':>3} {'1-2':>5} {sap_local:>5} {'-':>9} {'-':>7}  "
          f"sap_local: heard by the router with TTL 1; {sap_forwarded} forwarded to r1")
    print("filter totals: " + ", ".join(f"{k} {v}" for k, v in sorted(after2.reasons.items()) if v))
    for c in checks:
        if not c["ok"]:
            print(f"FAILED: {c['check']}")
    summary = {
        "policy_held": held, "packets_per_phase": PER_PHASE, "senders": senders,
        "announcer": {"address": ANNOUNCER, "host": "a1", "sap_local": sap_local, "sap_forwarded": sap_forwarded},
        "sessions": [{"key": k, "id": system.session_ids[k], "name": name} for k, (_, name) in SESSIONS.items()],
        "filter": after2.reasons, "checks": checks,
    }
    print(json.dumps(summary, sort_keys=True))
    say("policy held" if held else "POLICY VIOLATED")
    return 0 if held else 1


# ---------------------------------------------------------------- interactive


class Traffic:
    """Every sender sends continuously; the receiver counts; both in background threads."""

    def __init__(self, system: System, rate: float = LIVE_RATE):
        self.system, self.gap = system, 1.0 / rate
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True, name="senders"),
                        threading.Thread(target=self._receive, daemon=True, name="receiver")]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)

    def _send(self) -> None:
        try:
            while not self.stop.wait(self.gap):
                for f in FLOWS:
                    self.system.senders[f.source].send(f.group, 1, ttl=f.ttl)
        except OSError:
            pass  # the lab is going away

    def _receive(self) -> None:
        try:
            while not self.stop.is_set():
                self.system.rx.drain(quiet=0.1, limit=0.5)
        except (OSError, ValueError):
            pass


def dashboard_available() -> bool:
    r = subprocess.run([str(BIN / "mauthctl"), "dashboard", "--help"], capture_output=True)
    return r.returncode == 0


def live_rows(system: System, snap: Snapshot) -> list[str]:
    rows = [f"{'SENDER':<12} {'HOST':<4} {'GROUP':<10} {'TTL':>3} {'SENT':>6} {'DELIVERED':>9}  FILTER"]
    for f in FLOWS:
        sent = system.senders[f.source].sent[f.key]
        got = system.rx.got(f.source, f.group)
        if f.key in snap.denied:
            reason, n = snap.denied[f.key]
            rule = f" (rule max TTL {snap.max_ttl[f.key]})" if f.key in snap.max_ttl else " (no rule)"
            verdict = f"dropping: {reason}, {n} dropped{rule}"
        elif f.key in snap.max_ttl:
            verdict = f"passing: {snap.passed[f.key]} passed (rule max TTL {snap.max_ttl[f.key]})"
        else:
            verdict = "no rule"
        rows.append(f"{f.source:<12} {f.host:<4} {f.group:<10} {f.ttl:>3} {sent:>6} {got:>9}  {verdict}")
    return rows


def live(system: System) -> None:
    """Print a summary of every sender once a second until interrupted."""
    tty = sys.stdout.isatty()
    hint = system.authorize_hint()
    started = time.monotonic()
    while True:
        rows = live_rows(system, system.snapshot(with_stats=False))
        head = f"mauth demo, live for {time.monotonic() - started:.0f} s (Ctrl-C removes the lab)"
        if tty:
            sys.stdout.write("\033[H\033[J" + head + "\n\n" + "\n".join(rows)
                             + f"\n\nTo authorize {ROGUE} for the Lecture hall session, in another terminal:\n"
                             + f"  {hint}\n")
        else:
            sys.stdout.write(f"-- {head}\n" + "\n".join(rows) + "\n")
        sys.stdout.flush()
        time.sleep(1.0)


def run_dashboard(system: System) -> int:
    """`mauthctl dashboard` in the foreground, in the router namespace, on this terminal; its exit status."""
    argv = ["ip", "netns", "exec", system.lab.router.ns, str(BIN / "mauthctl"), *system.server_argv(), "dashboard"]
    saved = None
    if sys.stdin.isatty():
        import termios

        saved = termios.tcgetattr(sys.stdin.fileno())
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=patience(3))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if saved is not None:  # whatever happened, give the terminal back as it was
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
            sys.stdout.write("\033[?1049l\033[?25h")
            sys.stdout.flush()


def tally(system: System) -> None:
    print(f"sent and delivered {'at r1' if system.lab.forwarding else 'at the router (--at-router)'}, per sender:")
    for f in FLOWS:
        print(f"    {f.source:<12} -> {f.group:<10} TTL {f.ttl:>2}: sent {system.senders[f.source].sent[f.key]:>6}, "
              f"delivered {system.rx.got(f.source, f.group):>6}")
    sys.stdout.flush()


def interactive(system: System, use_dashboard: bool) -> int:
    system.authorize("ssm")
    with Traffic(system):
        try:
            say(f"traffic flows: {LIVE_RATE:.0f} packets/s from each of "
                + ", ".join(f"{f.source} (TTL {f.ttl} -> {f.group})" for f in FLOWS))
            say(f"the router namespace is {system.lab.router.ns}; to authorize {ROGUE} from another terminal:")
            print(f"    {system.authorize_hint()}")
            if use_dashboard and dashboard_available():
                say(f"in the dashboard: the Denied pane (key 3) shows {LOUD} (ttl) and {ROGUE} (unauthorized);"
                    f" select {ROGUE} there, or the Lecture hall session (key 1), and press a to authorize it")
                say("Ctrl-C removes every namespace and process; the dashboard opens (q or Ctrl-C ends the demo)")
                time.sleep(3.0)
                code = run_dashboard(system)
                if code != 0:
                    say(f"the dashboard exited with status {code}: removing the lab")
                    return 1
                say("dashboard closed: removing the lab")
            else:
                if use_dashboard:
                    say("this mauthctl has no dashboard: printing a live summary every second instead")
                say("Ctrl-C removes every namespace and process")
                live(system)
        finally:
            tally(system)
    return 0


# ---------------------------------------------------------------- main


def _interrupt(signum, frame) -> None:
    # Cleanup must not be interrupted in turn: later signals are ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab.demo", description=(
        "Run the whole of mauth in a namespace lab: a guarded router (smcrouted, musersd, mauthserver), "
        "sender hosts, a SAP announcer and a receiver."))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--headless", action="store_true",
                      help="no terminal UI: two phases of traffic, a report and a JSON summary; exit 0 only if "
                           "the policy held (the default when stdout is not a terminal)")
    mode.add_argument("--interactive", action="store_true",
                      help="continuous traffic and a live view until Ctrl-C, even when stdout is not a terminal")
    p.add_argument("--no-dashboard", action="store_true",
                   help="in interactive mode, print a live summary every second instead of opening the dashboard")
    p.add_argument("--at-router", action="store_true",
                   help="interactive mode without forwarding: count what the filter passes where it arrives on the "
                        "router (a socket joined on every guarded link), not at r1; runs on a kernel without "
                        "multicast routing, which `make demo` otherwise leaves to lab.vm's guest")
    args = p.parse_args(argv)
    if args.at_router and args.headless:
        p.error("--at-router is for the interactive demo: the headless one checks what the router forwards")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headless_mode = args.headless or not (args.interactive or sys.stdout.isatty())
    if args.at_router and headless_mode:
        print("demo: --at-router is for the interactive demo (--interactive, or a terminal)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("demo: the lab needs root (network namespaces, XDP): run `sudo make demo`", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    routes = [Route(f.group, f.source) for f in FLOWS] + [Route(g, ANNOUNCER) for g in SAP_GROUPS]
    try:
        with private_bpffs("mauth-demo-bpffs-") as bpffs:
            say("building the lab: sender hosts s1 and s2, announcer a1, a router, receiver r1")
            with Lab(senders={"s1": [AUTH], "s2": [LOUD, ROGUE], "a1": [ANNOUNCER]}, routes=routes,
                     forwarding=not args.at_router) as lab:
                if lab.forwarding:
                    say(f"smcrouted in {lab.router.ns} forwards {len(lab.kernel_mroutes())} (S,G) routes to out0 "
                        f"(work directory {lab.workdir})")
                else:
                    say(f"no forwarding (--at-router): what the filter passes is counted on {lab.router.ns} "
                        f"(work directory {lab.workdir})")
                system = System(lab, bpffs / "pins")
                try:
                    system.start()
                    if headless_mode:
                        return headless(system)
                    return interactive(system, use_dashboard=not args.no_dashboard)
                finally:
                    system.close()
    except KeyboardInterrupt:
        print("\ninterrupted: every namespace and process of the lab removed", file=sys.stderr)
        return 130 if headless_mode else 0  # Ctrl-C is how an interactive demo ends
    except (DemoError, LabError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
