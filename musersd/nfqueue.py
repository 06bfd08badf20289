"""The NFQUEUE data plane: the XDP filter's policy, decided in user space.

Where XDP cannot be used (no BPF permission, a driver or a virtual interface
that refuses XDP), musersd can enforce the same policy through netfilter:

    mangle PREROUTING (priority -150: before the routing decision, so before
    ip_mr_forward() decrements the TTL), one rule per guarded interface:
      -i IF -m iprange --dst-range 224.0.1.0-239.255.255.255 ! -p igmp
            -m comment --comment mauth-IF -j NFQUEUE --queue-num N
    and three rules without a target that only count, so that `stats` shows
    the reasons the XDP filter counts for traffic that is never queued:
      -i IF -d 224.0.0.0/24                                   mauth-IF:link_local
      -i IF -p igmp -m iprange --dst-range 224.0.1.0-...      mauth-IF:igmp
      -i IF ! -d 224.0.0.0/4                                  mauth-IF:not_multicast

Each queued packet is judged by `musersd.policy.decide_ip()` (the same model
the XDP program is tested against, fed the IPv4 packet behind a synthetic
Ethernet header) with this module's rule table, and answered accept, drop, or
accept with a rewritten packet: a SAP announcement from a sender without a
rule gets TTL 1 and a fresh header checksum, so the router's own SAP listener
hears it and ip_mr_forward() never forwards it. Prefix rules are found in the
model's order (exact, longest source prefix, longest group prefix), and rate
limits run the model's token buckets (`policy.RateBuckets`) on the monotonic
clock, one pair per rule as in the program. Link-local control groups and
IGMP are never queued: routing protocols and group membership must keep
working whatever happens to musersd.

What the kernel does before PREROUTING shapes what this backend sees:
ip_rcv() has already dropped malformed IPv4 headers (bad version, IHL,
length or checksum), and frames that are not IPv4 (ARP, IPv6, VLAN-tagged
frames on the parent interface) never reach the IPv4 hooks. So the reasons
"malformed", "not_ip" and "mld" never move here; a VLAN is guarded by naming
its own interface (eth1.10), not the parent's.

IPv4 only, by design: the queue rules are iptables rules, so IPv6 multicast
is not filtered by this backend at all, and an IPv6 rule is refused (the
protocol answers UNSUPPORTED, a rule file with an IPv6 line is refused
whole) rather than accepted and silently not enforced. Routers that must
filter IPv6 run the XDP backend. Byte counts are IP lengths,
without the 14 bytes of Ethernet header the XDP filter counts; rate limits
charge IP length + 14, as the program charges an untagged frame.

Failure behaviour (fail closed). The rules are installed without
`--queue-bypass`, so when no process listens on the queue (musersd crashed
or was killed) the kernel drops every packet the rule queues: guarded
routable multicast stops, authorized or not, until musersd is back and
re-adopts the rules; control traffic keeps flowing. A full queue drops too.
The XDP filter also fails closed, but keeps forwarding authorized senders
because its verdicts need no user space. A clean stop (SIGTERM) removes the
iptables rules: stopping musersd turns this filter off. At start, rules left
by a crashed musersd for the interfaces being guarded are replaced without a
gap (the new rules go in before the old ones come out); rules whose queue a
live process still listens on belong to a running musersd, and are refused.

State. Rules and the mode are written through to SQLite (`<state-dir>/
nfqueue.sqlite`, WAL, synchronous=FULL) before the change takes effect and
before musersd answers, and are restored at start, so a restart or a crash
does not drop protection. (A database rather than a file rewritten whole:
a change costs one small transaction at any table size.) Counters (per
reason, per rule, the denied pairs with the shape of the XDP filter's
table) live in memory only.

Threads. netfilterqueue's `run()` blocks, so it is not used: the queue's
netlink socket sits in the daemon's select loop, and `process()` handles a
bounded batch of packets per wake-up through `run_socket()`, so a flood
cannot starve the command protocol. Metrics scrapes read the tables from
their own thread; a lock orders them with the writers.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import shlex
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mauthcore.protocol.errors import Exists, NotFound, TableFull
from mauthcore.protocol.model import DeniedEntry, Mode, Reason, RuleEntry, millis
from mauthcore.receivers import IfacePolicy, ReceiverRule
from mauthcore.rules import Rule, RuleKey

from . import maps
from .filter import (
    DEFAULT_MAX_DENIED,
    DEFAULT_MAX_RULES,
    BindingRefused,
    BindingState,
    DataPlaneError,
    DeniedJoin,
    IfaceReceivers,
    JoinedGroup,
    ReceiverStats,
    ReceiversUnsupported,
    as_key,
    as_rule,
    check_sizes,
    not_bindable,
    not_held,
    plan,
    sap_group_list,
)
from .policy import DROP, PASS, RateBuckets, Verdict, decide_ip
from .policy import internet_checksum as ip_checksum  # RFC 791's header checksum is RFC 1071's

log = logging.getLogger(__name__)

from .defaults import DEFAULT_QUEUE_NUM, DEFAULT_STATE_DIR  # noqa: E402

STATE_FILE = "nfqueue.sqlite"
STATE_FORMAT = "mauth-nfqueue-state"
STATE_VERSION = 1
BATCH = 64  # packets handled per wake-up of the select loop
COPY_RANGE = 4096 - 80  # bytes of a packet the queue copies (netfilterqueue's buffer less its metadata)

QUEUED_RANGE = "224.0.1.0-239.255.255.255"  # routable IPv4 multicast: what the queue rule sends to user space
COUNTED = ("link_local", "igmp", "not_multicast")  # reasons counted by iptables rules, never queued
IPTABLES_WAIT = "10"  # seconds to wait for the xtables lock


# ---------------------------------------------------------------------------
# the verdict
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What to answer the kernel for one queued packet."""

    accept: bool
    verdict: Verdict
    payload: bytes | None = None  # the rewritten packet to accept instead of the original


def with_ttl(packet: bytes, ttl: int) -> bytes:
    """`packet` (an IPv4 packet) with its TTL set to `ttl` and the header checksum recomputed."""
    ihl = (packet[0] & 0x0F) * 4
    header = bytearray(packet[:ihl])
    header[8] = ttl
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", ip_checksum(bytes(header)))
    return bytes(header) + packet[ihl:]


# ---------------------------------------------------------------------------
# rules on disk
# ---------------------------------------------------------------------------


class RuleStore:
    """The rule table and mode in SQLite: one transaction per change, durable before it takes effect."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DataPlaneError(f"cannot open the state file {self.path}: {exc}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            with self.transaction():
                self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self.db.execute("CREATE TABLE IF NOT EXISTS rules (source TEXT NOT NULL, grp TEXT NOT NULL, "
                                "max_ttl INTEGER NOT NULL, pps INTEGER NOT NULL, bps INTEGER NOT NULL, "
                                "PRIMARY KEY (source, grp))")
                meta = dict(self.db.execute("SELECT key, value FROM meta"))
                if not meta:
                    self.created = True
                    self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("format", STATE_FORMAT), ("version", str(STATE_VERSION)),
                        ("state_id", str(secrets.randbits(64) or 1)), ("mode", str(Mode.ENFORCE))])
                else:
                    self.created = False
                    if meta.get("format") != STATE_FORMAT or meta.get("version") != str(STATE_VERSION):
                        raise DataPlaneError(f"{self.path} is not a mauth nfqueue state file of version "
                                             f"{STATE_VERSION}")
        except sqlite3.Error as exc:
            self.db.close()
            raise DataPlaneError(f"the state file {self.path} is unusable: {exc}") from None
        except DataPlaneError:
            self.db.close()
            raise

    @contextmanager
    def transaction(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise DataPlaneError(f"the state file {self.path} could not be written: {exc}") from None

    def meta(self, key: str) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def rules(self) -> list[Rule]:
        out = []
        for source, group, max_ttl, pps, bps in self.db.execute("SELECT source, grp, max_ttl, pps, bps FROM rules"):
            try:
                out.append(Rule.make(source, group, max_ttl, pps=pps, bps=bps))
            except ValueError as exc:
                raise DataPlaneError(f"the state file {self.path} holds a bad rule: {exc}") from None
        return out

    def put(self, rules: Iterable[Rule]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO rules VALUES (?, ?, ?, ?, ?)",
                            [(str(r.source), str(r.group), r.max_ttl, r.pps, r.bps) for r in rules])

    def delete(self, keys: Iterable[RuleKey]) -> None:
        self.db.executemany("DELETE FROM rules WHERE source = ? AND grp = ?",
                            [(str(k.source), str(k.group)) for k in keys])

    def clear(self) -> None:
        self.db.execute("DELETE FROM rules")

    def set_mode(self, mode: Mode) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'mode'", (str(mode),))

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------
# iptables rules
# ---------------------------------------------------------------------------


def tag(iface: str) -> str:
    return f"mauth-{iface}"


def hook_specs(iface: str, queue_num: int) -> list[list[str]]:
    """The mangle PREROUTING rules guarding `iface` (argv after `-t mangle -I PREROUTING`)."""
    t = tag(iface)
    return [
        ["-i", iface, "-m", "iprange", "--dst-range", QUEUED_RANGE, "!", "-p", "igmp",
         "-m", "comment", "--comment", t, "-j", "NFQUEUE", "--queue-num", str(queue_num)],
        ["-i", iface, "-d", "224.0.0.0/24", "-m", "comment", "--comment", f"{t}:link_local"],
        ["-i", iface, "-p", "igmp", "-m", "iprange", "--dst-range", QUEUED_RANGE,
         "-m", "comment", "--comment", f"{t}:igmp"],
        ["-i", iface, "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", f"{t}:not_multicast"],
    ]


@dataclass(frozen=True)
class ListedRule:
    """One line of `iptables -S PREROUTING [-v]`, split."""

    argv: tuple[str, ...]  # without "-A PREROUTING" and without the -c counters
    comment: str | None
    packets: int = 0
    octets: int = 0

    def owner(self) -> tuple[str, str] | None:
        """(interface, reason or "") if mauth made this rule, else None."""
        if not self.comment or not self.comment.startswith("mauth-"):
            return None
        iface, _, reason = self.comment[len("mauth-"):].partition(":")
        if iface in self.argv and self.argv[self.argv.index(iface) - 1] == "-i":
            return iface, reason
        return None


def parse_listing(text: str, chain: str = "PREROUTING") -> list[ListedRule]:
    """The rules of `chain` in `iptables -S` (or `-S -v`) output."""
    out = []
    for line in text.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:2] != ["-A", chain]:
            continue
        words = words[2:]
        packets = octets = 0
        if "-c" in words:
            i = words.index("-c")
            try:
                packets, octets = int(words[i + 1]), int(words[i + 2])
            except (IndexError, ValueError):
                pass
            del words[i:i + 3]
        comment = words[words.index("--comment") + 1] if "--comment" in words[:-1] else None
        out.append(ListedRule(tuple(words), comment, packets, octets))
    return out


class Iptables:
    """Runs iptables (whichever it is here: nft or legacy) on the mangle table of this network namespace."""

    def __init__(self, binary: str = "iptables", run: Callable[..., subprocess.CompletedProcess] = subprocess.run):
        self.binary = binary
        self._run = run

    def check(self) -> None:
        if self._run is subprocess.run and shutil.which(self.binary) is None:
            raise DataPlaneError(f"{self.binary} is not installed; the nfqueue backend needs it")

    def __call__(self, *args: str, check: bool = True) -> str:
        argv = [self.binary, "-w", IPTABLES_WAIT, "-t", "mangle", *args]
        try:
            proc = self._run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataPlaneError(f"{' '.join(argv)} failed: {exc}") from None
        if check and proc.returncode != 0:
            why = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise DataPlaneError(f"{' '.join(shlex.quote(a) for a in argv)} failed: "
                                 f"{why[0] if why else f'exit status {proc.returncode}'}")
        return proc.stdout if proc.returncode == 0 else ""

    def listing(self, counters: bool = False) -> list[ListedRule]:
        return parse_listing(self("-S", "PREROUTING", *(["-v"] if counters else [])))


def bound_queues(path: str = "/proc/net/netfilter/nfnetlink_queue") -> set[int]:
    """The NFQUEUE numbers some process of this network namespace listens on now."""
    try:
        with open(path) as f:
            return {int(line.split()[0]) for line in f if line.strip()}
    except (OSError, ValueError, IndexError):
        return set()


def queue_of(rule: ListedRule) -> int | None:
    argv = rule.argv
    if "NFQUEUE" in argv and "--queue-num" in argv[:-1]:
        try:
            return int(argv[argv.index("--queue-num") + 1])
        except ValueError:
            return None
    return None


class Hooks:
    """The iptables rules of the interfaces this musersd guards: installs, adopts, counts and removes them."""

    def __init__(self, iptables: Iptables, queue_num: int, bound: Callable[[], set[int]] = bound_queues):
        self.ipt = iptables
        self.queue_num = queue_num
        self.installed: dict[str, list[list[str]]] = {}
        self._bound = bound

    def install(self, iface: str) -> None:
        """Guard `iface`: insert its rules, then remove any left for it by an earlier musersd (no gap).

        Refused if the interface's rules send to a queue that another process
        listens on: that is a musersd still running, not one that crashed.
        """
        live = self._bound() - {self.queue_num}
        for r in self.ipt.listing():
            q = queue_of(r)
            if (r.owner() or ("",))[0] == iface and q in live:
                raise DataPlaneError(f"{iface} is guarded by another running musersd (NFQUEUE {q})")
        specs = hook_specs(iface, self.queue_num)
        done: list[list[str]] = []
        try:
            for spec in reversed(specs):
                self.ipt("-I", "PREROUTING", *spec)
                done.append(spec)
        except DataPlaneError:
            for spec in done:
                self.ipt("-D", "PREROUTING", *spec, check=False)
            raise
        self.installed[iface] = specs
        # Ours are now rules 1..len(specs); any other rule tagged for this interface was left by an
        # earlier musersd. Delete those by number, from the bottom up: a stale copy identical to a
        # new rule must go from where it sits, not from the top where the new one is.
        listing = self.ipt.listing()
        stale = [n for n, r in enumerate(listing, 1) if n > len(specs) and (r.owner() or ("",))[0] == iface]
        for n in reversed(stale):
            self.ipt("-D", "PREROUTING", str(n), check=False)
        if stale:
            log.warning("iface=%s replaced %d iptables rules left by an earlier musersd", iface, len(stale))
        others = sorted({o[0] for r in listing if (o := r.owner()) and o[0] not in self.installed})
        if others:
            log.warning("iptables rules tagged mauth-<iface> remain for %s; they drop that interface's routable "
                        "multicast while nothing listens on their queue: remove them if nothing guards it",
                        ", ".join(others))

    def remove(self, iface: str) -> bool:
        """Remove exactly the rules install() made for `iface`; True if all of them were there."""
        ok = True
        for spec in self.installed.pop(iface, []):
            try:
                self.ipt("-D", "PREROUTING", *spec)
            except DataPlaneError as exc:
                log.warning("iface=%s %s", iface, exc)
                ok = False
        return ok

    def counters(self) -> dict[str, list[int]]:
        """Packets and octets of the counting rules of every guarded interface, by reason."""
        out = {reason: [0, 0] for reason in COUNTED}
        for r in self.ipt.listing(counters=True):
            owner = r.owner()
            if owner and owner[0] in self.installed and owner[1] in out:
                out[owner[1]][0] += r.packets
                out[owner[1]][1] += r.octets
        return out


# ---------------------------------------------------------------------------
# the queue
# ---------------------------------------------------------------------------


class _Budget:
    """The queue's socket, reporting "would block" after `left` datagrams.

    netfilterqueue's run_socket() reads until recv() raises EAGAIN; this makes
    it return after a bounded batch so the select loop gets its turn.
    """

    def __init__(self, sock: socket.socket, left: int):
        self.sock = sock
        self.left = left
        self.overruns = 0

    def recv(self, size: int) -> bytes:
        if self.left <= 0:
            raise BlockingIOError(errno.EAGAIN, "batch done")
        self.left -= 1
        try:
            return self.sock.recv(size)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped packets we were too slow to read
                self.overruns += 1
            raise


class PacketQueue:
    """One NFQUEUE bound with netfilterqueue, read without blocking."""

    def __init__(self, queue_num: int, callback: Callable):
        try:
            from netfilterqueue import NetfilterQueue
        except ImportError:
            raise DataPlaneError("the nfqueue backend needs the NetfilterQueue package (make setup installs it)") \
                from None
        self.queue_num = queue_num
        self.overruns = 0
        try:
            self.nfq = NetfilterQueue()
        except OSError as exc:
            raise DataPlaneError(f"cannot open netfilter queues: {exc}") from None
        try:
            self.nfq.bind(queue_num, callback)
        except OSError:
            raise DataPlaneError(f"cannot bind NFQUEUE {queue_num}: another process listens on it or this one "
                                 f"lacks CAP_NET_ADMIN (choose another --queue-num)") from None
        self.sock = socket.fromfd(self.nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def process(self, batch: int = BATCH) -> None:
        budget = _Budget(self.sock, batch)
        self.nfq.run_socket(budget)  # type: ignore[arg-type]  # run_socket() only calls recv(), which _Budget has
        if budget.overruns:
            self.overruns += budget.overruns
            log.warning("queue=%d the kernel dropped packets user space did not read in time (%d overruns so far)",
                        self.queue_num, self.overruns)

    def close(self) -> None:
        self.sock.close()
        self.nfq.unbind()


# ---------------------------------------------------------------------------
# the filter
# ---------------------------------------------------------------------------


class RuleTable:
    """The rules, indexed so that a packet's candidate rules are found without a scan of the table.

    policy.find_rule() picks the exact (source, group) rule, else the longest
    source prefix among the rules for that group, else the longest group
    prefix among the rules for that source, scanning whatever table it is
    given. `candidates()` gives it only those rules (found through two
    indexes of the prefix rules), so its choice is the one it would make on
    the whole table, at a cost that does not grow with the table.
    """

    def __init__(self) -> None:
        self.rules: dict[tuple, Rule] = {}  # (source, group) -> Rule; either side may be a prefix
        self._by_group: dict[object, dict[tuple, Rule]] = {}  # group -> its source-prefix rules
        self._by_source: dict[object, dict[tuple, Rule]] = {}  # source -> its group-prefix rules

    def _index(self, key: tuple) -> dict | None:
        source, group = key
        if not isinstance(source, ipaddress.IPv4Network) and not isinstance(group, ipaddress.IPv4Network):
            return None
        if isinstance(source, ipaddress.IPv4Network):
            return self._by_group.setdefault(group, {})
        return self._by_source.setdefault(source, {})

    def put(self, key: tuple, rule: Rule) -> None:
        self.rules[key] = rule
        index = self._index(key)
        if index is not None:
            index[key] = rule

    def pop(self, key: tuple) -> Rule:
        rule = self.rules.pop(key)
        index = self._index(key)
        if index is not None:
            del index[key]
        return rule

    def candidates(self, source: ipaddress.IPv4Address, group: ipaddress.IPv4Address) -> dict[tuple, Rule]:
        """The rules find_rule() could pick for a packet from `source` to `group`."""
        exact = self.rules.get((source, group))
        if exact is not None:
            return {(source, group): exact}
        out = dict(self._by_group.get(group, ()))
        out.update(self._by_source.get(source, ()))
        return out


class NfqueueFilter:
    """The NFQUEUE data plane, with the read and write methods of `DataPlane`.

    `open()` restores the rule table from the state file; `load()` also binds
    the queue; `attach(iface)` installs the interface's iptables rules.
    `judge(packet)` is the verdict function, usable without any of that.
    """

    name = "nfqueue"
    families: tuple[int, ...] = (4,)  # the queue rule is iptables: IPv4 only
    binds = False  # no rule is bound here: bound rules are refused (docs/operations.md, "Binding a sender")

    def __init__(self, state_dir: str | os.PathLike = DEFAULT_STATE_DIR, *, queue_num: int = DEFAULT_QUEUE_NUM,
                 max_rules: int | None = None, max_denied: int | None = None,
                 sap_groups: Iterable[str] = maps.SAP_GROUPS, iptables: Iptables | None = None,
                 clock: Callable[[], int] = time.monotonic_ns):
        if not 0 <= queue_num <= 65535:
            raise DataPlaneError(f"queue number {queue_num} is outside 0-65535")
        check_sizes(max_rules, max_denied)
        self.state_dir = Path(state_dir)
        self.queue_num = queue_num
        self.max_rules = max_rules or DEFAULT_MAX_RULES
        self.max_denied = max_denied or DEFAULT_MAX_DENIED
        self.sap_groups = tuple(str(g) for g in sap_group_list(sap_groups))
        self.hooks = Hooks(iptables or Iptables(), queue_num)
        self.store: RuleStore | None = None
        self.queue: PacketQueue | None = None
        self.created = False
        self._lock = threading.Lock()
        self._mode = Mode.ENFORCE
        self._state_id = 0
        self._table = RuleTable()
        self._rules = self._table.rules  # (source, group) -> Rule, read-only here: change it through _table
        self._stats: dict[tuple, list] = {}  # rule key -> [packets, octets, last_seen]
        self._buckets = RateBuckets()  # rate-limited rules' token buckets, on self._clock
        self._clock = clock
        self._denied: OrderedDict[tuple, list] = OrderedDict()  # key -> [packets, octets, last_ttl, reason, seen]
        self._reasons = {name: [0, 0] for name in maps.REASONS.values()}
        self.failure: BaseException | None = None  # an exception raised while judging, for the daemon

    # ------------------------------------------------------------------ setup

    def open(self) -> NfqueueFilter:
        """Open (or create) the state file and restore the rules and mode from it."""
        self.store = RuleStore(self.state_dir / STATE_FILE)
        self.created = self.store.created
        try:
            self._state_id = int(self.store.meta("state_id"))
            self._mode = Mode.parse(self.store.meta("mode"))
        except ValueError:
            raise DataPlaneError(f"the state file {self.store.path} has a bad state id or mode") from None
        rules = self.store.rules()
        with self._lock:
            for rule in rules:
                key = self._pair(rule.key)
                self._set(key, rule)
                self._stats[key] = [0, 0, None]
        log.info("state %s: %d rules, mode %s%s", self.store.path, len(rules), self._mode,
                 " (new)" if self.created else "")
        return self

    def load(self) -> NfqueueFilter:
        """open(), then bind the queue (before any iptables rule sends packets to it)."""
        self.hooks.ipt.check()
        if self.store is None:
            self.open()
        self.queue = PacketQueue(self.queue_num, self._on_packet)
        return self

    def attach(self, iface: str, mode: str = "auto") -> str:
        """Guard `iface` (the XDP attach mode is ignored); returns "nfqueue"."""
        try:
            socket.if_nametoindex(iface)
        except OSError:
            raise DataPlaneError(f"interface {iface!r} does not exist") from None
        self.hooks.install(iface)
        return "nfqueue"

    def detach(self, iface: str) -> bool:
        return self.hooks.remove(iface)

    def fileno(self) -> int:
        assert self.queue is not None, "load() binds the queue before the daemon selects on it"
        return self.queue.fileno()

    def process(self) -> None:
        """Answer the packets waiting in the queue (a bounded batch); re-raise an error from judging them."""
        assert self.queue is not None, "load() binds the queue before the daemon selects on it"
        self.queue.process()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def close(self) -> None:
        """Unbind the queue and close the state file; iptables rules stay unless detach()ed (fail closed)."""
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> NfqueueFilter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ verdicts

    def _on_packet(self, pkt) -> None:
        """netfilterqueue's callback: judge, then answer the kernel exactly once."""
        try:
            j = self.judge(pkt.get_payload())
        except Exception as exc:  # a bug: fail closed for this packet, and let the daemon exit
            pkt.drop()
            if self.failure is None:
                self.failure = exc
            return
        if not j.accept:
            pkt.drop()
            return
        if j.payload is not None:
            pkt.set_payload(j.payload)
        pkt.accept()

    def judge(self, packet: bytes, now: float | None = None) -> Judgement:
        """The verdict on one IPv4 packet as NFQUEUE delivers it, with every counter moved."""
        size = len(packet)
        total = struct.unpack_from("!H", packet, 2)[0] if size >= 20 else 0
        copied_in_part = size >= COPY_RANGE and size < total
        if copied_in_part:
            # The queue copies at most COPY_RANGE bytes while ip_rcv() has already checked the real
            # length: judge the headers as they are, not as a "malformed" packet.
            packet += bytes(total - size)
            size = total
        self._buckets.now = self._clock()
        table = self._table.candidates(ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])) \
            if size >= 20 else {}
        v = decide_ip(packet, table, self._mode, self.sap_groups, within_rate=self._buckets)
        seen = time.time() if now is None else now
        with self._lock:
            c = self._reasons[v.reason]
            c[0] += 1
            c[1] += size
            if v.reason == "passed":
                assert v.rule is not None, "a packet passes by a rule (policy.decide_ip)"
                st = self._stats[v.rule]
                st[0] += 1
                st[1] += size
                st[2] = seen
            elif v.reason in maps.DROP_REASONS:
                self._note_denied(v, size, seen)
        if v.action == DROP:
            return Judgement(False, v)
        if v.new_ttl is None:
            return Judgement(True, v)
        if copied_in_part:
            # Accepting a rewrite of what was copied would cut the packet short.
            assert v.key is not None, "a rewritten packet is an IP one, with a key (policy.decide_ip)"
            log.debug("packet from %s to %s too long to rewrite here: dropped", *v.key)
            return Judgement(False, v)
        return Judgement(True, v, with_ttl(packet, v.new_ttl))

    def _note_denied(self, v: Verdict, size: int, seen: float) -> None:
        key = v.key
        assert key is not None, "a packet is denied by its (source, group) (policy.decide_ip)"
        d = self._denied.get(key)
        if d is None:
            if len(self._denied) >= self.max_denied:
                self._denied.popitem(last=False)  # forget the pair seen least recently
            self._denied[key] = [1, size, v.ttl, v.reason, seen]
            return
        d[0] += 1
        d[1] += size
        d[2:] = [v.ttl, v.reason, seen]
        self._denied.move_to_end(key)

    # ------------------------------------------------------------------ rules

    @classmethod
    def _pair(cls, key: RuleKey) -> tuple:
        why = not_held(cls.name, cls.families, key)
        if why:
            raise DataPlaneError(why)
        return key.source, key.group

    @contextmanager
    def _write(self) -> Iterator[RuleStore]:
        """A transaction on the state file, which it gives; DataPlaneError if the file is not open."""
        store = self.store
        if store is None:
            raise DataPlaneError("the nfqueue filter's state file is not open")
        with store.transaction():
            yield store

    def _set(self, key: tuple, rule: Rule) -> None:
        """Put `rule` in the table (caller holds the lock)."""
        self._table.put(key, rule)

    def _drop(self, key: tuple) -> Rule:
        """Take the rule for `key` out of the table, with its counters and buckets (caller holds the lock)."""
        self._stats.pop(key, None)
        self._buckets.forget(key)
        return self._table.pop(key)

    def _forget_denied(self, key: RuleKey) -> None:
        """Drop the denied pairs a new or changed rule covers (caller holds the lock)."""
        if key.is_exact:
            self._denied.pop((key.source, key.group), None)
            return
        for pair in [p for p in self._denied if key.covers(*p)]:
            del self._denied[pair]

    @classmethod
    def _unbound(cls, rule: Rule) -> Rule:
        why = not_bindable(cls.name, rule)
        if why:
            raise DataPlaneError(why)
        return rule

    def add_rule(self, rule: Rule | tuple) -> None:
        """Add a rule; Exists if (source, group) already has one, TableFull when full."""
        rule = self._unbound(as_rule(rule))
        key = self._pair(rule.key)
        if key in self._rules:
            raise Exists(f"a rule for {rule.key} already exists")
        if len(self._rules) >= self.max_rules:
            raise TableFull(f"the rule table is full ({self.max_rules} rules)")
        with self._write() as store:
            store.put([rule])
        with self._lock:
            self._buckets.forget(key)
            self._set(key, rule)
            self._stats[key] = [0, 0, None]
            self._forget_denied(rule.key)

    def replace_rule(self, rule: Rule | tuple) -> bool:
        """Add or replace a rule, keeping its counters (and its buckets if its rates stay); True if it created one."""
        rule = self._unbound(as_rule(rule))
        key = self._pair(rule.key)
        if key not in self._rules:
            self.add_rule(rule)
            return True
        with self._write() as store:
            store.put([rule])
        with self._lock:
            self._set(key, rule)
            self._forget_denied(rule.key)
        return False

    def remove_rule(self, key: RuleKey | Rule | tuple) -> Rule:
        """Remove the rule for (source, group) and return it; NotFound if there is none."""
        rkey = as_key(key)
        pair = (rkey.source, rkey.group)
        if pair not in self._rules:
            raise NotFound(f"there is no rule for {rkey}")
        with self._write() as store:
            store.delete([rkey])
        with self._lock:
            return self._drop(pair)

    def flush(self) -> int:
        """Remove every rule; returns how many there were."""
        with self._write() as store:
            store.clear()
        with self._lock:
            n = len(self._rules)
            for pair in list(self._rules):
                self._drop(pair)
        return n

    def apply(self, wanted: Iterable[Rule]) -> tuple[int, int, int]:
        """Make the rule set equal to `wanted` in one transaction (filter.plan); returns (added, replaced, removed)."""
        diff = plan(self._rules, wanted, self.max_rules, key=self._pair)
        put = [self._unbound(r) for r in diff.add + diff.replace]
        with self._write() as store:
            store.put(put)
            store.delete(self._rules[k].key for k in diff.remove)
        with self._lock:
            for k in diff.remove:
                self._drop(k)
            for r in put:
                k = self._pair(r.key)
                if k not in self._rules:
                    self._stats[k] = [0, 0, None]
                    self._buckets.forget(k)
                self._set(k, r)
                self._forget_denied(r.key)
        return len(diff.add), len(diff.replace), len(diff.remove)

    def get_rule(self, key: RuleKey | Rule | tuple) -> RuleEntry | None:
        rkey = as_key(key)
        pair = (rkey.source, rkey.group)
        with self._lock:
            rule = self._rules.get(pair)
            if rule is None:
                return None
            packets, octets, last = self._stats[pair]
        return RuleEntry(rule, packets, octets, millis(last))

    def rules(self) -> list[RuleEntry]:
        with self._lock:
            rows = [(rule, *self._stats[k]) for k, rule in self._rules.items()]
        return sorted((RuleEntry(rule, p, b, millis(last)) for rule, p, b, last in rows), key=lambda r: r.rule.key)

    def rule_keys(self) -> list[RuleKey]:
        with self._lock:
            return [rule.key for rule in self._rules.values()]

    def rule_count(self) -> int:
        return len(self._rules)

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode | str) -> Mode:
        try:
            new = Mode.parse(mode)
        except ValueError:
            raise DataPlaneError(f"mode {mode!r} is not enforce or monitor") from None
        with self._write() as store:
            store.set_mode(new)
        self._mode = new
        return new

    @property
    def state_id(self) -> int:
        return self._state_id

    # ------------------------------------------------------------------ counters

    def counters(self) -> dict[str, dict[str, int]]:
        """Per-reason packet and byte counters: the queue's verdicts plus the counting rules' counters."""
        extra = self.hooks.counters() if self.hooks.installed else {}
        with self._lock:
            out = {name: {"packets": p, "bytes": b} for name, (p, b) in self._reasons.items()}
        for name, (p, b) in extra.items():
            out[name]["packets"] += p
            out[name]["bytes"] += b
        return out

    def denied(self) -> list[DeniedEntry]:
        """The denied (source, group) pairs, most recently seen first."""
        with self._lock:
            rows = [(k, list(v)) for k, v in self._denied.items()]
        out = [DeniedEntry(source=k[0], group=k[1], reason=Reason[reason.upper()], packets=p, octets=b, last_ttl=ttl,
                           last_seen=millis(seen)) for k, (p, b, ttl, reason, seen) in rows]
        out.sort(key=lambda e: e.last_seen or 0, reverse=True)
        return out

    def clear_denied(self) -> int:
        with self._lock:
            n = len(self._denied)
            self._denied.clear()
        return n

    def clear_learned(self, key: RuleKey | Rule | tuple) -> BindingState:
        """No rule here learns its sender (this backend binds none)."""
        rkey = as_key(key)
        if (rkey.source, rkey.group) not in self._rules:
            raise NotFound(f"there is no rule for {rkey}")
        raise BindingRefused(f"the rule for {rkey} does not learn its sender, so it has nothing to forget")

    # Receivers: iptables queues routable multicast only, never a membership report, so nothing here judges
    # joins; every receiver method refuses with one sentence (the backend answers UNSUPPORTED).

    receives = False

    def _no_receivers(self) -> ReceiversUnsupported:
        return ReceiversUnsupported("the nfqueue backend does not judge membership reports; run the xdp backend")

    def add_receiver(self, rule: ReceiverRule) -> None:
        raise self._no_receivers()

    def remove_receiver(self, rule: ReceiverRule) -> None:
        raise self._no_receivers()

    def receiver_rules(self) -> list[ReceiverStats]:
        raise self._no_receivers()

    def apply_receivers(self, wanted: Iterable[ReceiverRule]) -> tuple[int, int]:
        raise self._no_receivers()

    def set_receiver_policy(self, policy: IfacePolicy) -> None:
        raise self._no_receivers()

    def receiver_policies(self) -> list[IfaceReceivers]:
        raise self._no_receivers()

    def denied_joins(self) -> list[DeniedJoin]:
        raise self._no_receivers()

    def clear_denied_joins(self) -> int:
        raise self._no_receivers()

    def joined_groups(self) -> list[JoinedGroup]:
        raise self._no_receivers()

    def sweep_groups(self, timeout_ns: int, grace_ns: int) -> int:
        raise self._no_receivers()


__all__ = ["NfqueueFilter", "Judgement", "RuleStore", "Hooks", "Iptables", "PacketQueue", "hook_specs",
           "parse_listing", "with_ttl", "ip_checksum", "PASS", "DROP", "DEFAULT_QUEUE_NUM", "DEFAULT_STATE_DIR"]
