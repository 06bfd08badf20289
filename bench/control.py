"""Control plane: command rates, loading and re-converging rule sets, daemon memory.

    python -m bench.control [--rounds 3] [--load 100000] [--reconverge 2000,5000,10000,50000] [--sessions 10000]
                            [--probe-sessions 1000] [--store-reconverge 5000] [--failovers 10]
                            [--failover-rules 1000] [--only PART,...] [--no-json]
    python -m bench.control --only stores   # part 6 alone (a few minutes); prints, writes no JSON

Everything runs as an operator would run it: the installed musersd and
mauthserver, started in a lab router namespace (lab/topology.py) with
`ip netns exec`, talking real UDP and HTTP on that namespace's loopback.
Ten musersd processes stand for ten routers: one namespace, each with its
own interface to guard (a veth pair g0..g9 made for it), its own pin
directory in a private bpffs, its own port (7600 + i), one key file.

1. Protocol rates. A client (mauthcore.protocol.udp.RouterClient, the code
   mauthctl --router runs) sends commands one at a time, each waiting for
   its answer, as the protocol is stop-and-wait: --commands ADDs then as
   many REMOVEs to router r0, over v1 and over v2 (HMAC-SHA256), rounds
   alternating.
2. Through mauthserver. mauthserver manages r0 alone, or r0..r9; the client
   sends v2 ADDs to mauthserver's own protocol port, which commits each one
   to SQLite before answering and fans it out to every router. Figures:
   commands accepted per second, and commands per second delivered to every
   router (from the first command until every router holds every rule,
   from mauthserver's API). Plus ADDs through the HTTP API (what mauthctl
   --server and the dashboard use), one router. A fresh database each run,
   on tmpfs (the store fsyncs every commit; a disk would measure the disk).
3. Loading --load rules into an empty router: (a) v2 ADD one by one;
   (b) musersd's rule file, applied on SIGHUP (parse, then the data plane's
   apply(), which adds rule by rule: from SIGHUP to the log line saying it
   was applied); (c) DataPlane.add_rules_bulk() in this process
   (BPF_MAP_UPDATE_BATCH), on maps of the same size.
4. Re-convergence. Router r1 and mauthserver's database hold the same
   rules (--reconverge of them: r1 loaded over v2, the database with the
   store's own code), and mauthserver has verified r1. Then r1 is killed,
   its pinned maps removed, and it is started again, empty, with a new
   epoch. Timed from r1 serving again until mauthserver reports it up with
   nothing pending; the router's own rule count is checked. Detection
   (mauthserver probes each router every 2 s by default) is timed apart.
   Several sizes, to show how the time grows with the rule count (it grew
   with its square until the status check after each install stopped at the
   first pending rule; docs/benchmarks.md).
5. Memory. VmRSS and VmHWM (/proc/PID/status) of musersd idle and with the
   --load rules (after 3a); of mauthserver idle, after --sessions SAP
   announcements from the sender host (real multicast to
   239.255.255.255:9875 arriving on the router's in0; mauthserver runs with
   --max-sessions large enough to hold them all), and restarted with
   those sessions and the --load rules in its database, managing r0, which
   holds the same rules; and the kernel memory of r0's BPF maps (bpftool's
   memlock). Then the rate at which mauthserver takes in new sessions, with
   no rules and with the --load rules: --probe-sessions more announcements
   at the same pace (SAP_RATE) to the restarted one.
6. Stores (`--only stores` runs this part alone, in a few minutes).
   A PostgreSQL server of its own (tests/support/postgres.py: Debian's
   binaries, data directory and Unix socket in a temporary directory on
   /dev/shm, no TCP; stopped and removed at the end, failures too), so
   that SQLite and PostgreSQL both fsync to tmpfs. (a) Rates as in 2 with
   one router, and ADDs through the HTTP API, on SQLite and on PostgreSQL,
   a fresh database each, rounds interleaved (SQLite, PG, PG, SQLite, ...):
   medians, and the median of the per-round ratios PG / SQLite. (b)
   Re-convergence as in 4 (--store-reconverge rules), both stores, rounds
   interleaved. (c) Fail-over: two mauthservers (--instance a and b, --lease
   3, --listen off) on one PostgreSQL database manage router r2, which
   holds --failover-rules rules; --failovers times the leader is killed
   (SIGKILL) and the time is taken until the other logs `leading (term`,
   and until its API reports the router up with nothing pending; then the
   killed one is started again and comes back as a standby. Then one clean
   stop (SIGTERM, which releases the lease). The bound the design states:
   a standby leads at most lease x 4/3 (4 s) after the leader's last
   renewal (mauthserver/leader.py).

Timings use time.monotonic() around real calls; the machine is shared, so
rates come from interleaved rounds (median), and single timings are
labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.daemons import write_key_file
from lab.netns import LabError, inside, sh
from lab.topology import Lab
from mauthclient.api import ApiClient, ApiError, Unreachable
from mauthcore.constants import SAP_PORT
from mauthcore.protocol.keys import load_keys
from mauthcore.protocol.udp import RouterClient
from mauthcore.rules import Rule
from mauthserver.store import is_postgresql_url

from . import common

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer
from .forwarding import make_rules
from .sap import packets as sap_packets

SECTION = "control"
BIN = Path(sys.executable).parent
ROUTERS = 10
ROUTER_PORT = 7600
FLEET_PORT = 7590
API_PORT = 7580
SAP_GROUP = "239.255.255.255"
SAP_RATE = 1000.0  # announcements per second sent to mauthserver
PARTS = ("protocol", "fleet", "load", "reconverge", "memory", "stores")
NEEDS = {"protocol": {0}, "fleet": set(range(ROUTERS)), "load": {0}, "reconverge": {1}, "memory": {0, 2},
         "stores": {0, 1, 2}}  # the routers each part uses
STORES = ("sqlite", "postgresql")
LEASE = 3.0  # --lease of the fail-over pair (mauthserver's default)
BOUND = LEASE * 4 / 3  # a standby leads at most this long after the leader's last renewal (mauthserver/leader.py)


# ---------------------------------------------------------------- processes


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Daemon:
    """A daemon run with `ip netns exec` in the router namespace, logging to the lab's work directory."""

    def __init__(self, lab: Lab, name: str, argv: list[str], ready: str):
        self.lab, self.name, self.argv, self.ready = lab, name, argv, ready
        self.proc: subprocess.Popen | None = None
        self.mark = 0

    def spawn(self) -> Daemon:
        self.mark = len(self.lab.log(self.name))
        self.proc = self.lab.spawn(self.lab.router.ns, self.argv, self.name)
        return self

    def log(self) -> str:
        return self.lab.log(self.name)[self.mark:]

    def wait_log(self, text: str, timeout: float = 120.0, after: int = 0) -> float:
        """Wait until `text` appears in the log since the start (past `after` characters); return when."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[after:]:
                return time.monotonic()
            if self.proc.poll() is not None:
                raise LabError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-1500:]}")
            time.sleep(0.01)
        raise LabError(f"{self.name} never logged {text!r}: {self.log()[-1500:]}")

    def start(self) -> Daemon:
        self.spawn()
        self.wait_log(self.ready)
        return self

    def memory(self) -> dict[str, int]:
        return proc_memory(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)  # `ip netns exec` execs: this is the daemon's pid
            self.proc.wait(timeout=60)


def musersd(lab: Lab, i: int, bpffs: Path, key: Path, extra: list[str] = ()) -> Daemon:
    argv = [str(BIN / "musersd"), "--iface", f"g{i}", "--pin-dir", str(bpffs / f"r{i}"),
            "--listen", f"127.0.0.1:{ROUTER_PORT + i}", "--key-file", str(key), *extra]
    return Daemon(lab, f"musersd-r{i}", argv, "serving on")


def mauthserver(lab: Lab, db: str | Path, key: Path, token: Path, routers: list[int], *, sap: bool = False,
                name: str = "mauthserver", max_sessions: int | None = None, api_port: int = API_PORT,
                listen: str = f"127.0.0.1:{FLEET_PORT}", extra: Sequence[str] = (), ready: str | None = None) -> Daemon:
    """mauthserver on `db` (a SQLite path or a postgresql:// URL). Started, it has logged `ready` (by
    default: on SQLite `ready:`; on PostgreSQL `leading (term`, since a lone instance first starts as a
    standby and opens the router protocol port only once elected)."""
    argv = [str(BIN / "mauthserver"), "--db", str(db), "--api", f"127.0.0.1:{api_port}",
            "--token-file", str(token), "--key-file", str(key), "--listen", listen, *extra]
    argv += ["--sap-iface", "in0"] if sap else ["--no-sap"]
    if max_sessions is not None:
        argv += ["--max-sessions", str(max_sessions)]
    for i in routers:
        argv += ["--router", f"r{i}=127.0.0.1:{ROUTER_PORT + i}"]
    if ready is None:
        ready = "leading (term" if is_postgresql_url(str(db)) else "ready:"
    return Daemon(lab, name, argv, ready)


def write_token(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


# ---------------------------------------------------------------- clients


class Bench:
    """The lab, the key and token, and clients made inside the router namespace."""

    def __init__(self, lab: Lab, bpffs: Path, shm: Path):
        self.lab, self.bpffs, self.shm = lab, bpffs, shm
        self.rt = lab.router.ns
        self.key = write_key_file(lab.workdir / "router.key")
        self.token = write_token(lab.workdir / "api.token")
        self.keys = load_keys(self.key)
        self.pg: PostgresServer | None = None  # while the stores part runs

    @contextlib.contextmanager
    def fresh_db(self, store: str, tag: str) -> Iterator[str]:
        """A new, empty database for mauthserver's --db: a SQLite file on tmpfs, or a new database on the
        PostgreSQL server; removed (dropped) afterwards."""
        if store == "postgresql":
            pg = self.pg
            if pg is None:
                raise RuntimeError("no PostgreSQL server: the stores part starts one")
            name = pg.new_database()
            try:
                yield pg.url(name)
            finally:
                pg.drop_database(name)
            return
        db = self.shm / f"{tag}.db"
        try:
            yield str(db)
        finally:
            for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                p.unlink(missing_ok=True)

    def client(self, port: int, *, v1: bool = False) -> RouterClient:
        with inside(self.rt):
            if v1:
                return RouterClient("127.0.0.1", port, v1=True)
            return RouterClient("127.0.0.1", port, self.keys)

    def api(self, method: str, *args, port: int = API_PORT, **kwargs):
        with inside(self.rt):
            client = ApiClient(f"http://127.0.0.1:{port}", self.token.read_text().strip(), timeout=60,
                               user="bench")
            return getattr(client, method)(*args, **kwargs)

    def converged(self, routers: int, timeout: float = 600.0, want_epoch_change: dict | None = None,
                  poll: float = 0.05, port: int = API_PORT) -> float:
        """Wait until mauthserver reports every router up with nothing pending; return when."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                rs = self.api("routers", port=port)
            except (ApiError, Unreachable) as exc:
                last = exc
            else:
                last = rs
                ok = len(rs) == routers and all(r["state"] == "up" and r["pending"] == 0 for r in rs)
                if ok and want_epoch_change:
                    ok = all(r["epoch"] != want_epoch_change.get(r["name"]) for r in rs
                             if r["name"] in want_epoch_change)
                if ok:
                    return time.monotonic()
            time.sleep(poll)
        raise LabError(f"mauthserver did not converge within {timeout:.0f} s: {str(last)[:1500]}")


def timed_commands(client: RouterClient, rules: list[Rule]) -> float:
    """ADD every rule, then REMOVE every rule, one at a time; returns the seconds."""
    t0 = time.monotonic()
    for r in rules:
        client.add(r)
    for r in rules:
        client.remove(r.key)
    return time.monotonic() - t0


def median(values: list[float], digits: int = 1) -> float:
    return round(common.quartiles(values)[1], digits)


def rate_block(counts_and_seconds: list[tuple[int, float]]) -> dict:
    rates = [n / s for n, s in counts_and_seconds]
    q1, med, q3 = common.quartiles(rates)
    return {"per_second": round(med), "per_second_iqr": [round(q1), round(q3)],
            "ms_per_command": round(1e3 / med, 3), "samples": [round(r) for r in rates]}


# ---------------------------------------------------------------- the parts


def protocol_rates(b: Bench, rounds: int, commands: int) -> dict:
    rules = make_rules(commands)
    v1, v2 = b.client(ROUTER_PORT, v1=True), b.client(ROUTER_PORT)
    v2.hello()
    timed_commands(v1, rules[:50])  # warm both paths up
    timed_commands(v2, rules[:50])
    samples: dict[str, list] = {"v1": [], "v2": []}
    for r in range(rounds):
        for name, c in ((("v1", v1), ("v2", v2)) if r % 2 == 0 else (("v2", v2), ("v1", v1))):
            samples[name].append((2 * commands, timed_commands(c, rules)))
    v1.close()
    v2.close()
    return {name: rate_block(s) | {"commands_per_sample": 2 * commands} for name, s in samples.items()}


def fleet_run(b: Bench, routers: list[int], commands: int, tag: str, store: str = "sqlite") -> dict:
    """mauthserver managing `routers`: v2 ADDs to it, accepted and delivered; then FLUSH, delivered."""
    with b.fresh_db(store, f"fleet-{tag}") as db:
        return _fleet_run(b, db, routers, commands, tag)


def _fleet_run(b: Bench, db: str, routers: list[int], commands: int, tag: str) -> dict:
    m = mauthserver(b.lab, db, b.key, b.token, routers, name=f"mauthserver-{tag}").start()
    try:
        b.converged(len(routers))
        rules = make_rules(commands)
        c = b.client(FLEET_PORT)
        c.hello()
        t0 = time.monotonic()
        for r in rules:
            c.add(r)
        t_ack = time.monotonic()
        t_all = b.converged(len(routers), poll=0.02)
        for i in routers:
            with b.client(ROUTER_PORT + i) as rc:
                have = rc.hello().rule_count
            if have != commands:
                raise SystemExit(f"router r{i} holds {have} rules after the fan-out, not {commands}")
        t1 = time.monotonic()
        c.flush()
        t_flushed = b.converged(len(routers), poll=0.02)
        c.close()
        return {"routers": len(routers), "commands": commands,
                "accept_s": t_ack - t0, "delivered_s": t_all - t0, "flush_delivered_s": t_flushed - t1,
                "memory_kib": m.memory()}
    finally:
        m.stop()


def api_rate(b: Bench, commands: int, store: str = "sqlite", tag: str = "api") -> dict:
    with b.fresh_db(store, tag) as db:
        return _api_rate(b, db, commands, tag)


def _api_rate(b: Bench, db: str, commands: int, tag: str) -> dict:
    m = mauthserver(b.lab, db, b.key, b.token, [0], name=f"mauthserver-{tag}").start()
    try:
        b.converged(1)
        rules = make_rules(commands)
        t0 = time.monotonic()
        with inside(b.rt):
            client = ApiClient(f"http://127.0.0.1:{API_PORT}", b.token.read_text().strip(), timeout=60, user="bench")
            for r in rules:
                client.add_rule(str(r.source), str(r.group), r.max_ttl)
        t_ack = time.monotonic()
        t_all = b.converged(1, poll=0.02)
        b.api("flush")
        b.converged(1)
        return {"routers": 1, "commands": commands, "accept_s": t_ack - t0, "delivered_s": t_all - t0}
    finally:
        m.stop()


def fleet_rates(b: Bench, rounds: int, commands: int) -> dict:
    runs: dict[str, list] = {"1": [], "10": []}
    for r in range(rounds):
        for n in (("1", "10") if r % 2 == 0 else ("10", "1")):
            runs[n].append(fleet_run(b, list(range(int(n))), commands, f"{n}-{r}"))
    out = {}
    for n, rs in runs.items():
        out[f"{n}_router{'s' if n != '1' else ''}"] = {
            "routers": int(n),
            "commands_per_sample": commands,
            "accepted": rate_block([(x["commands"], x["accept_s"]) for x in rs]),
            "delivered_to_all": rate_block([(x["commands"], x["delivered_s"]) for x in rs]),
            "router_installs_per_second": round(median([x["commands"] * x["routers"] / x["delivered_s"] for x in rs],
                                                       0)),
            "flush_delivered_s": median([x["flush_delivered_s"] for x in rs], 3),
            "mauthserver_memory_kib": rs[-1]["memory_kib"],
        }
    api = api_rate(b, commands)
    out["http_api_1_router"] = {
        "routers": 1, "commands": commands,
        "accepted_per_second": round(commands / api["accept_s"]),
        "delivered_per_second": round(commands / api["delivered_s"]),
        "note": "one run; POST /api/v1/rules one at a time, a new HTTP connection each (as mauthctl --server)",
    }
    return out


def rule_file(path: Path, rules: list[Rule]) -> None:
    path.write_text("".join(f"{r.source} {r.group} {r.max_ttl}\n" for r in rules))


def sighup_apply(d: Daemon, conf: Path, rules: list[Rule]) -> float:
    """Write `rules` to the rule file, SIGHUP musersd, wait for 'applied'; returns the seconds from the signal."""
    rule_file(conf, rules)
    mark = len(d.log())
    t0 = time.monotonic()
    os.kill(d.proc.pid, signal.SIGHUP)
    t1 = d.wait_log("reload: rule file", after=mark, timeout=600)
    tail = d.log()[mark:]
    if "applied" not in tail:
        raise SystemExit(f"musersd did not apply the rule file: {tail[-500:]}")
    return t1 - t0


def load_times(b: Bench, r0: Daemon, conf: Path, n: int) -> dict:
    rules = make_rules(n)
    with b.client(ROUTER_PORT) as c:
        if c.hello().rule_count:
            raise SystemExit("router r0 is not empty before the load")
    mem_idle = r0.memory()
    file_s = sighup_apply(r0, conf, rules)
    with b.client(ROUTER_PORT) as c:
        have = c.hello().rule_count
    if have != n:
        raise SystemExit(f"r0 holds {have} rules after the rule file, not {n}")
    mem_file = r0.memory()
    empty_s = sighup_apply(r0, conf, [])
    with b.client(ROUTER_PORT) as c:
        c.hello()
        t0 = time.monotonic()
        for r in rules:
            c.add(r)
        v2_s = time.monotonic() - t0
        have = c.hello().rule_count
    if have != n:
        raise SystemExit(f"r0 holds {have} rules after the v2 load, not {n}")
    mem_v2 = r0.memory()
    return {
        "rules": n,
        "v2_one_by_one_s": round(v2_s, 2),
        "rule_file_sighup_s": round(file_s, 2),
        "rule_file_empty_again_s": round(empty_s, 2),
        "bulk_s": round(bulk_load(b, rules), 3),
        "musersd_memory_kib": {"idle": mem_idle, "after_rule_file": mem_file, "after_v2_load": mem_v2},
        "note": "single timings",
    }


def bulk_load(b: Bench, rules: list[Rule]) -> float:
    from musersd.dataplane import DataPlane

    with DataPlane(b.bpffs / "bulk", max_rules=max(len(rules), 131072)).load() as dp:
        t0 = time.monotonic()
        dp.add_rules_bulk(rules)
        secs = time.monotonic() - t0
        if dp.rule_count() != len(rules):
            raise SystemExit("add_rules_bulk() left a different number of rules")
    shutil.rmtree(b.bpffs / "bulk", ignore_errors=True)
    return secs


def preload_db(db: str | Path, rules: list[Rule]) -> float:
    """Put `rules` in a new mauthserver database (a SQLite path or a postgresql:// URL) with the store's
    own code; returns the seconds."""
    from mauthserver.core import DesiredRule, Put
    from mauthserver.store import open_store

    now = time.time()
    t0 = time.monotonic()
    store = open_store(str(db), now=now)
    try:
        changes = [Put(DesiredRule(r, created=now, updated=now, actor="bench")) for r in rules]
        store.commit(changes, actor="bench", action="bench-preload", detail={"rules": len(rules)}, now=now)
    finally:
        store.close()
    return time.monotonic() - t0


def restart_empty(b: Bench, router: Daemon, pin_dir: Path) -> float:
    """Kill a router, remove its pinned maps, start it again (empty, new epoch); returns when it serves."""
    router.stop(signal.SIGKILL)
    shutil.rmtree(pin_dir, ignore_errors=True)
    router.start()
    return time.monotonic()


def reconverge_one(b: Bench, r1: Daemon, n: int, store: str = "sqlite", tag: str = "") -> dict:
    """r1 and mauthserver's database hold the same n rules; r1 restarts empty; time until it holds them again."""
    with b.fresh_db(store, f"reconverge-{n}{tag}") as db:
        return _reconverge_one(b, r1, n, db, f"{n}{tag}")


def _reconverge_one(b: Bench, r1: Daemon, n: int, db: str, tag: str) -> dict:
    rules = make_rules(n)
    restart_empty(b, r1, b.bpffs / "r1")
    with b.client(ROUTER_PORT + 1) as c:  # the router as a previous sync left it
        for r in rules:
            c.add(r)
    preload_s = preload_db(db, rules)
    m = mauthserver(b.lab, db, b.key, b.token, [1], name=f"mauthserver-reconverge-{tag}").start()
    try:
        t_ready = time.monotonic()
        t_verified = b.converged(1, poll=0.05)
        epoch = {r["name"]: r["epoch"] for r in b.api("routers")}
        t_restart = time.monotonic()
        t_serving = restart_empty(b, r1, b.bpffs / "r1")
        t_seen = None
        deadline = time.monotonic() + 60
        while t_seen is None and time.monotonic() < deadline:
            if b.api("routers")[0]["epoch"] != epoch["r1"]:
                t_seen = time.monotonic()
            else:
                time.sleep(0.02)
        t_done = b.converged(1, want_epoch_change=epoch, timeout=3600, poll=0.05)
        with b.client(ROUTER_PORT + 1) as c:
            have = c.hello().rule_count
        if have != n:
            raise SystemExit(f"r1 holds {have} rules after re-converging, not {n}")
        return {
            "rules": n,
            "db_preload_s": round(preload_s, 2),
            "verify_s": round(t_verified - t_ready, 2),
            "router_restart_to_serving_s": round(t_serving - t_restart, 2),
            "restart_noticed_s": round((t_seen or t_done) - t_serving, 2),
            "reconverged_s": round(t_done - t_serving, 2),
            "installs_per_second": round(n / max(t_done - (t_seen or t_serving), 1e-9)),
        }
    finally:
        m.stop()


def reconverge(b: Bench, routers: dict[int, Daemon], sizes: list[int]) -> dict:
    runs = [reconverge_one(b, routers[1], n) for n in sizes]
    return {"runs": runs, "note": "single timings; times from the restarted router serving again"}


def flood_sap(b: Bench, n: int, rate: float = 2000.0, first: int = 0) -> float:
    """Announce n sessions from s1 (real multicast into the router's in0); returns the seconds."""
    s1 = b.lab.senders["s1"]
    pkts = sap_packets(n, s1.addrs[0], first)
    with inside(s1.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((s1.addrs[0], 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(s1.addrs[0]))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 16)
    t0 = time.monotonic()
    try:
        for i, p in enumerate(pkts):
            sock.sendto(p, (SAP_GROUP, SAP_PORT))
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        sock.close()
    return time.monotonic() - t0


def heard(b: Bench, want: int, timeout: float, quiet: float = 3.0) -> tuple[dict, float]:
    """Poll mauthserver's stats until it took in `want` SAP packets, or none more for `quiet` s.

    Returns (stats, when the count last moved). Packets that found the
    socket's buffer full are lost in the kernel, as on a real network.
    """
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while True:
        stats = b.api("stats")
        count = stats["mediator"].get("sap_packets", 0)
        now = time.monotonic()
        if count != last:
            last, moved = count, now
        if count >= want or now - moved > quiet or now > deadline:
            return stats, moved
        time.sleep(0.05)


def map_memory(b: Bench, pin_dir: Path) -> int | None:
    """Kernel memory of the pinned maps under pin_dir (bpftool's memlock), bytes."""
    total, found = 0, False
    for pin in sorted(pin_dir.rglob("*")):
        if not pin.is_file():
            continue
        out = subprocess.run(["bpftool", "-j", "map", "show", "pinned", str(pin)], capture_output=True, text=True)
        if out.returncode == 0:
            info = json.loads(out.stdout)
            total += int(info.get("bytes_memlock", 0))
            found = True
    return total if found else None


def memory(b: Bench, routers: dict[int, Daemon], n: int, sessions: int, probe: int) -> dict:
    """mauthserver's memory with `sessions` announced and n rules (r0 holds the same), and musersd's.

    Sessions are announced first, to a mauthserver without rules (the rate
    without rules). The rules then go into the same database and
    mauthserver restarts with both, as after a crash, restoring the sessions
    from the database; `probe` more sessions announced to it give the rate
    with rules. (Announcing in that order was once a necessity: each new
    session cost a sort of every rule, see docs/benchmarks.md.)
    """
    db = b.shm / "memory.db"
    room = sessions + probe  # hold every session announced: the memory figure is for all of them
    m1 = mauthserver(b.lab, db, b.key, b.token, [], sap=True, name="mauthserver-sessions",
                     max_sessions=room).start()
    try:
        idle = m1.memory()
        t0 = time.monotonic()
        sent_s = flood_sap(b, sessions, SAP_RATE)
        stats1, t_heard = heard(b, sessions, 300)
        mem_sessions = m1.memory()
    finally:
        m1.stop()
    preload_s = preload_db(db, make_rules(n))
    m2 = mauthserver(b.lab, db, b.key, b.token, [0], sap=True, name="mauthserver-memory", max_sessions=room)
    t1 = time.monotonic()
    m2.start()
    try:
        t_ready = time.monotonic()
        t_verified = b.converged(1, timeout=900, poll=0.1)
        mem_full = m2.memory()
        base = b.api("stats")
        t2 = time.monotonic()
        flood_sap(b, probe, rate=SAP_RATE, first=sessions)  # the pace of the first flood
        stats2, t_probe = heard(b, base["mediator"].get("sap_packets", 0) + probe, 600, quiet=30.0)
        probed = stats2["mediator"].get("sap_packets", 0) - base["mediator"].get("sap_packets", 0)
        return {
            "rules": n,
            "sessions_announced": sessions,
            "max_sessions": room,
            "probe_sessions": probe,
            "sessions_restored": base["sessions"],
            "sap_packets_heard": stats1["mediator"].get("sap_packets", 0),
            "sessions_held": stats1["sessions"],
            "sessions_held_after_probe": stats2["sessions"],
            "sap_rate": SAP_RATE,
            "sessions_evicted": stats1["directory"].get("evicted", 0),
            "sap_send_s": round(sent_s, 2),
            "new_sessions_per_second_no_rules": round(stats1["mediator"].get("sap_packets", 0)
                                                      / max(t_heard - t0, 1e-9)),
            "new_sessions_per_second_with_rules": round(probed / max(t_probe - t2, 1e-9), 1),
            "db_preload_s": round(preload_s, 2),
            "mauthserver_restart_s": round(t_ready - t1, 2),
            "mauthserver_verify_s": round(t_verified - t_ready, 2),
            "mauthserver_kib": {"idle": idle, "sessions_only": mem_sessions, "rules_and_sessions": mem_full},
            "musersd_r0_kib": routers[0].memory(),
            "musersd_idle_kib": routers[2].memory(),
            "r0_bpf_maps_bytes": map_memory(b, b.bpffs / "r0"),
        }
    finally:
        m2.stop()


# ---------------------------------------------------------------- SQLite against PostgreSQL; fail-over


def store_rates(b: Bench, rounds: int, commands: int) -> dict:
    """fleet_run (1 router) and api_rate on each store, a fresh database each, rounds interleaved."""
    runs: dict[str, dict[str, list]] = {s: {"v2": [], "api": []} for s in STORES}
    for r in range(rounds):
        for store in (STORES if r % 2 == 0 else STORES[::-1]):
            runs[store]["v2"].append(fleet_run(b, [0], commands, f"{store}-{r}", store=store))
            runs[store]["api"].append(api_rate(b, commands, store=store, tag=f"api-{store}-{r}"))
    out: dict = {"commands_per_sample": commands}
    for store, rs in runs.items():
        out[store] = {
            "v2_accepted": rate_block([(x["commands"], x["accept_s"]) for x in rs["v2"]]),
            "v2_delivered": rate_block([(x["commands"], x["delivered_s"]) for x in rs["v2"]]),
            "api_accepted": rate_block([(x["commands"], x["accept_s"]) for x in rs["api"]]),
            "api_delivered": rate_block([(x["commands"], x["delivered_s"]) for x in rs["api"]]),
            "mauthserver_memory_kib": rs["v2"][-1]["memory_kib"],
        }
    # Ratios within each round (the rounds ran the two stores back to back), then their median.
    out["pg_over_sqlite"] = {
        key: median([p / s for p, s in zip(
            (x["commands"] / x[secs] for x in runs["postgresql"][path]),
            (x["commands"] / x[secs] for x in runs["sqlite"][path]), strict=True)], 2)
        for key, path, secs in (("v2_accepted", "v2", "accept_s"), ("v2_delivered", "v2", "delivered_s"),
                                ("api_accepted", "api", "accept_s"), ("api_delivered", "api", "delivered_s"))}
    return out


def store_reconverge(b: Bench, r1: Daemon, rounds: int, n: int) -> dict:
    runs: dict[str, list] = {s: [] for s in STORES}
    for r in range(rounds):
        for store in (STORES if r % 2 == 0 else STORES[::-1]):
            runs[store].append(reconverge_one(b, r1, n, store=store, tag=f"-{store}-{r}"))
    out: dict = {"rules": n, "rounds": rounds}
    for store, rs in runs.items():
        out[store] = {
            "reconverged_s": median([x["reconverged_s"] for x in rs], 2),
            "restart_noticed_s": median([x["restart_noticed_s"] for x in rs], 2),
            "verify_s": median([x["verify_s"] for x in rs], 2),
            "db_preload_s": median([x["db_preload_s"] for x in rs], 2),
            "samples_reconverged_s": [x["reconverged_s"] for x in rs],
        }
    out["pg_over_sqlite_reconverged"] = median(
        [p["reconverged_s"] / s["reconverged_s"] for p, s in zip(runs["postgresql"], runs["sqlite"], strict=True)], 2)
    return out


def failover(b: Bench, router: int, rules: int, kills: int) -> dict:
    """Two mauthservers on one PostgreSQL database managing router `router`, which holds `rules` rules.

    `kills` times: kill -9 the leader; time (a) until the other logs `leading (term`, (b) until the
    new leader's API reports every router up with nothing pending; then the killed one is started
    again (it comes back as a standby). Then one clean stop (SIGTERM: the leader releases its lease).
    """
    ports = {"a": API_PORT, "b": API_PORT + 1}
    with b.fresh_db("postgresql", "failover") as db:
        preload_db(db, make_rules(rules))
        servers = {n: mauthserver(b.lab, db, b.key, b.token, [router], name=f"mauthserver-failover-{n}",
                                  api_port=ports[n], listen="off", ready="ready:",
                                  extra=["--instance", n, "--lease", f"{LEASE:g}"]) for n in "ab"}
        try:
            servers["a"].start().wait_log("leading (term")
            servers["b"].start()
            if "standby until elected" not in servers["b"].log():
                raise SystemExit(f"mauthserver b did not start as a standby: {servers['b'].log()[-1500:]}")
            leader = "a"
            b.converged(1, timeout=300, port=ports[leader])
            with b.client(ROUTER_PORT + router) as c:
                if c.hello().rule_count != rules:
                    raise SystemExit(f"router r{router} does not hold the {rules} rules before the fail-overs")
            samples = []
            for i in range(kills):
                time.sleep(1.0 + random.random())  # the kill lands anywhere in the lease's renewal period
                other = "b" if leader == "a" else "a"
                mark = len(servers[other].log())
                servers[leader].stop(signal.SIGKILL)
                t_kill = time.monotonic()
                t_lead = servers[other].wait_log("leading (term", after=mark, timeout=60)
                t_conv = b.converged(1, timeout=300, poll=0.02, port=ports[other])
                samples.append({"leads_s": round(t_lead - t_kill, 3), "converged_s": round(t_conv - t_kill, 3)})
                print(f"  fail-over {i + 1}/{kills}: leads after {t_lead - t_kill:.2f} s, routers converged after"
                      f" {t_conv - t_kill:.2f} s", file=sys.stderr)
                servers[leader].start()  # back as a standby
                if "standby until elected" not in servers[leader].log():
                    raise SystemExit(f"the restarted mauthserver {leader} is not a standby")
                leader = other
            time.sleep(1.0 + random.random())
            other = "b" if leader == "a" else "a"
            mark = len(servers[other].log())
            t_stop = time.monotonic()
            servers[leader].stop(signal.SIGTERM)
            t_stopped = time.monotonic()
            t_lead = servers[other].wait_log("leading (term", after=mark, timeout=60)
            t_conv = b.converged(1, timeout=300, poll=0.02, port=ports[other])
            with b.client(ROUTER_PORT + router) as c:
                have = c.hello().rule_count
            if have != rules:
                raise SystemExit(f"router r{router} holds {have} rules after the fail-overs, not {rules}")
        finally:
            for d in servers.values():
                d.stop(signal.SIGKILL)  # the database is dropped next: nothing to release
    leads = [x["leads_s"] for x in samples]
    conv = [x["converged_s"] for x in samples]
    return {
        "lease_s": LEASE, "bound_s": round(BOUND, 2), "rules": rules, "routers": 1, "kills": kills,
        "kill9_leads_s": {"median": median(leads, 2), "worst": round(max(leads), 2)},
        "kill9_converged_s": {"median": median(conv, 2), "worst": round(max(conv), 2)},
        "samples": samples,
        "sigterm": {"stop_s": round(t_stopped - t_stop, 2), "leads_s": round(t_lead - t_stop, 2),
                    "converged_s": round(t_conv - t_stop, 2)},
    }


def stores(b: Bench, routers: dict[int, Daemon], rounds: int, commands: int, reconverge_n: int, kills: int,
           failover_rules: int) -> dict:
    """The stores part: a PostgreSQL server of its own (Debian's binaries, data directory and Unix socket
    in a temporary directory on /dev/shm, tests/support/postgres.py), stopped and removed at the end."""
    from tests.support.postgres import running

    started = time.monotonic()
    with running(base="/dev/shm") as pg:
        b.pg = pg
        try:
            out: dict = {"rates": store_rates(b, rounds, commands)}
            print(f"  store rates done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            out["reconverge"] = store_reconverge(b, routers[1], rounds, reconverge_n)
            print(f"  store re-convergence done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            out["failover"] = failover(b, 2, failover_rules, kills)
            out["postgresql"] = subprocess.run([str(pg.bin / "postgres"), "--version"], capture_output=True,
                                               text=True).stdout.strip()
        finally:
            b.pg = None
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


# ---------------------------------------------------------------- report


def markdown(s: dict, *, stores: bool = True) -> str:
    """The tables of the parts `s` holds (a run with --only holds some); `stores=False` leaves out the
    stores part's (bench/report.py renders it into a block of its own, see `stores_markdown`)."""
    blocks = [main_markdown(s)] if all(part in s for part in PARTS[:5]) else []
    if stores and "stores" in s:
        blocks.append(stores_markdown(s["stores"]))
    if not blocks:
        blocks = [f"(parts measured: {', '.join(p for p in PARTS if p in s)}: no table for these alone;"
                  " --json-out PATH writes their figures)"]
    return "\n\n".join(blocks)


def stores_markdown(st: dict) -> str:
    """SQLite against PostgreSQL (rates, re-convergence) and fail-over between two mauthservers."""
    r, rc, fo = st["rates"], st["reconverge"], st["failover"]
    ratio = r["pg_over_sqlite"]
    lines = [f"| {r['commands_per_sample']:,} ADDs, mauthserver managing 1 router | SQLite, commands/s "
             "| PostgreSQL, commands/s | PostgreSQL / SQLite |", "| --- | ---: | ---: | ---: |"]
    for key, label in (("v2_accepted", "v2 -> mauthserver: accepted"),
                       ("v2_delivered", "v2 -> mauthserver: on the router"),
                       ("api_accepted", "HTTP API -> mauthserver: accepted"),
                       ("api_delivered", "HTTP API -> mauthserver: on the router")):
        lines.append(f"| {label} | {r['sqlite'][key]['per_second']:,} | {r['postgresql'][key]['per_second']:,} "
                     f"| {ratio[key]:.2f} |")
    lines += ["", f"| re-converging {rc['rules']:,} rules (router restarted empty) | SQLite | PostgreSQL "
              "| PostgreSQL / SQLite |", "| --- | ---: | ---: | ---: |",
              f"| seconds from the router serving again | {rc['sqlite']['reconverged_s']} "
              f"| {rc['postgresql']['reconverged_s']} | {rc['pg_over_sqlite_reconverged']:.2f} |"]
    a, c, t = fo["kill9_leads_s"], fo["kill9_converged_s"], fo["sigterm"]
    lines += ["", f"| fail-over, two mauthservers, --lease {fo['lease_s']:g} "
              f"(bound {fo['bound_s']:g} s) | median, s | worst, s |", "| --- | ---: | ---: |",
              f"| kill -9 of the leader -> the other leads ({fo['kills']} times) | {a['median']} | {a['worst']} |",
              f"| kill -9 of the leader -> its router converged ({fo['rules']:,} rules) | {c['median']} "
              f"| {c['worst']} |",
              f"| SIGTERM of the leader (lease released) -> the other leads, once | {t['leads_s']} | |",
              f"| SIGTERM of the leader -> its router converged, once | {t['converged_s']} | |"]
    return "\n".join(lines)


def main_markdown(s: dict) -> str:
    p, f, ld, rc, mem = s["protocol"], s["fleet"], s["load"], s["reconverge"], s["memory"]

    def mib(kib: int) -> str:
        return f"{kib / 1024:,.0f} MiB"

    lines = ["| path | commands/s | ms per command |", "| --- | ---: | ---: |"]
    for name in ("v1", "v2"):
        lines.append(f"| {name}, client -> musersd | {p[name]['per_second']:,} | {p[name]['ms_per_command']} |")
    for key, label in (("1_router", "1 router"), ("10_routers", "10 routers")):
        x = f[key]
        lines.append(f"| v2 -> mauthserver ({label}): accepted | {x['accepted']['per_second']:,} "
                     f"| {x['accepted']['ms_per_command']} |")
        lines.append(f"| v2 -> mauthserver ({label}): on every router | {x['delivered_to_all']['per_second']:,} "
                     f"| {x['delivered_to_all']['ms_per_command']} |")
    a = f["http_api_1_router"]
    lines.append(f"| HTTP API -> mauthserver (1 router): accepted | {a['accepted_per_second']:,} "
                 f"| {1e3 / a['accepted_per_second']:.3f} |")
    lines += ["", f"| loading {ld['rules']:,} rules into an empty router | seconds |", "| --- | ---: |",
              f"| v2 ADD one by one | {ld['v2_one_by_one_s']} |",
              f"| rule file, SIGHUP | {ld['rule_file_sighup_s']} |",
              f"| DataPlane.add_rules_bulk() | {ld['bulk_s']} |",
              "", "| rules | restart noticed, s | re-converged, s | installs/s |", "| ---: | ---: | ---: | ---: |"]
    for r in rc["runs"]:
        lines.append(f"| {r['rules']:,} | {r['restart_noticed_s']} | {r['reconverged_s']} "
                     f"| {r['installs_per_second']:,} |")
    k = mem["mauthserver_kib"]
    lines += ["", "| process | VmRSS | VmHWM |", "| --- | ---: | ---: |",
              f"| mauthserver, empty | {mib(k['idle']['VmRSS'])} | {mib(k['idle']['VmHWM'])} |",
              f"| mauthserver, {mem['sessions_announced']:,} sessions announced ({mem['sessions_held']:,} held) "
              f"| {mib(k['sessions_only']['VmRSS'])} | {mib(k['sessions_only']['VmHWM'])} |",
              f"| mauthserver, the same and {mem['rules']:,} rules (restarted) "
              f"| {mib(k['rules_and_sessions']['VmRSS'])} "
              f"| {mib(k['rules_and_sessions']['VmHWM'])} |"]
    mi = ld["musersd_memory_kib"]
    lines.append(f"| musersd, empty | {mib(mi['idle']['VmRSS'])} | {mib(mi['idle']['VmHWM'])} |")
    lines.append(f"| musersd, {ld['rules']:,} rules | {mib(mi['after_v2_load']['VmRSS'])} "
                 f"| {mib(mi['after_v2_load']['VmHWM'])} |")
    if mem.get("r0_bpf_maps_bytes"):
        lines.append(f"\nkernel memory of the router's maps with {ld['rules']:,} rules: "
                     f"{mem['r0_bpf_maps_bytes'] / 2**20:,.1f} MiB")
    pace = f" (announced at {mem['sap_rate']:,.0f} a second)" if mem.get("sap_rate") else ""
    lines.append(f"new SAP sessions per second in mauthserver{pace}: {mem['new_sessions_per_second_no_rules']:,} "
                 f"without rules, {mem['new_sessions_per_second_with_rules']:,} with {mem['rules']:,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each rate measurement")
    ap.add_argument("--commands", type=int, default=1000, help="ADDs (then REMOVEs) per rate sample")
    ap.add_argument("--fleet-commands", type=int, default=500, help="ADDs per sample through mauthserver")
    ap.add_argument("--load", type=int, default=100_000, help="rules for the load and memory figures")
    ap.add_argument("--reconverge", default="2000,5000,10000,50000",
                    help="comma-separated rule counts for the re-convergence figure")
    ap.add_argument("--sessions", type=int, default=10_000, help="SAP announcements for the memory figure")
    ap.add_argument("--probe-sessions", type=int, default=1000,
                    help="SAP announcements to the restarted mauthserver, for the rate with rules")
    ap.add_argument("--store-reconverge", type=int, default=5000,
                    help="rules for the re-convergence figure of the stores part (SQLite and PostgreSQL)")
    ap.add_argument("--failovers", type=int, default=10, help="kill -9 fail-overs in the stores part")
    ap.add_argument("--failover-rules", type=int, default=1000, help="rules the fail-over pair's router holds")
    ap.add_argument("--only", default=",".join(PARTS), metavar="PART[,PART]",
                    help=f"run only these parts ({', '.join(PARTS)}); a partial run prints its tables and leaves"
                         " docs/benchmarks.json alone (a section is stored whole)")
    ap.add_argument("--no-json", action="store_true", help="print only; leave docs/benchmarks.json alone")
    ap.add_argument("--json-out", type=Path, metavar="PATH", help="also write this run's section to PATH")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: the parts are {', '.join(PARTS)}")
    partial = set(parts) != set(PARTS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    if os.geteuid() != 0:
        raise SystemExit("the control-plane benchmark builds network namespaces: run it as root")
    started = time.monotonic()
    shm = Path(tempfile.mkdtemp(prefix="mauth-bench-", dir="/dev/shm"))
    section: dict = {}
    try:
        with common.private_bpffs() as bpffs, \
                Lab(senders={"s1": ["192.0.2.10"]}, receivers=("r1",), smcroute=False) as lab:
            b = Bench(lab, bpffs, shm)
            wanted = sorted(set().union(*(NEEDS[p] for p in parts)))
            for i in wanted:
                sh("ip", "link", "add", f"g{i}", "type", "veth", "peer", "name", f"g{i}p", ns=b.rt)
                sh("ip", "link", "set", f"g{i}", "up", ns=b.rt)
                sh("ip", "link", "set", f"g{i}p", "up", ns=b.rt)
            conf = lab.workdir / "r0.conf"
            rule_file(conf, [])
            big = ["--max-rules", str(max(131072, args.load)), "--config", str(conf)]
            sizes = [int(x) for x in args.reconverge.split(",")]
            extra = {0: big, 1: ["--max-rules", str(max(65536, args.store_reconverge, *sizes))]}  # r1 re-converges
            routers = {i: musersd(lab, i, bpffs, b.key, extra.get(i, [])).spawn() for i in wanted}
            for d in routers.values():
                d.wait_log("serving on")
            print(f"{len(routers)} routers serving ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "protocol" in parts:
                section["protocol"] = protocol_rates(b, args.rounds, args.commands)
                print(f"protocol rates done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "fleet" in parts:
                section["fleet"] = fleet_rates(b, args.rounds, args.fleet_commands)
                print(f"fleet rates done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "load" in parts:
                section["load"] = load_times(b, routers[0], conf, args.load)
                print(f"load times done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "reconverge" in parts:
                section["reconverge"] = reconverge(b, routers, sizes)
                print(f"re-convergence done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "memory" in parts:  # after "load", which leaves r0 holding the --load rules
                section["memory"] = memory(b, routers, args.load, args.sessions, args.probe_sessions)
                print(f"memory done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if "stores" in parts:
                section["stores"] = stores(b, routers, args.rounds, args.fleet_commands, args.store_reconverge,
                                           args.failovers, args.failover_rules)
                print(f"stores done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            for d in routers.values():
                d.stop()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    section = {
        "generated": common.now_iso(),
        "command": " ".join(["python -m bench.control", *(argv if argv is not None else sys.argv[1:])]),
        "machine": common.machine(),
        "method": {
            "routers": f"{ROUTERS} musersd in one namespace: own veth, pin directory, port; one key file",
            "rounds": args.rounds,
            "commands_per_sample": args.commands,
            "fleet_commands_per_sample": args.fleet_commands,
            "database": "on tmpfs (/dev/shm): the store fsyncs each commit",
            "postgresql": "stores part: Debian's PostgreSQL server, its data directory on tmpfs (/dev/shm) like"
                          " the SQLite file, so both fsync to tmpfs (fsync = on); reached over its Unix socket;"
                          " shared_buffers 16MB, otherwise the defaults (synchronous_commit on)",
            "failover": f"two mauthservers (--instance a/b --lease {LEASE:g} --listen off) on one PostgreSQL"
                        " database, one router; kill -9 of the leader, then the killed one restarted as a"
                        " standby; the kill 1-2 s (random) after the previous restart",
            "parts": parts,
            "summary": "rates: median over interleaved rounds; stores part: ratios within each round, then"
                       " their median; other timings: one run each",
        },
        **section,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(markdown(section))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(section, indent=2) + "\n")
    if partial and not args.no_json:
        print(f"a partial run (--only {','.join(parts)}): {common.JSON_PATH} left alone", file=sys.stderr)
    elif not args.no_json:
        common.store_section(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
