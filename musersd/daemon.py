"""musersd: the router daemon. A thin shell around the data plane and the protocol core.

Strategy (the core decides, a thin shell acts): `mauthcore.protocol.server`
decides what every datagram means and what to answer; `DataPlaneBackend`
turns its commands into map operations; this module only owns the socket,
the signals, the clock and systemd notifications. One thread, one select
loop: commands are executed one at a time, in arrival order, so the maps
never see two writers. With `--metrics` a second thread serves Prometheus scrapes;
it only reads (see musersd/metrics.py).

Start-up order matters for the "no gap" promise:
  1. load the program, creating or adopting the pinned maps;
  2. set the mode and apply the rule file, if any;
  3. attach to every interface, which atomically replaces a previous
     musersd's program: the old one filters until the new one does;
  4. bind the socket, tell systemd READY=1.
A clean stop (SIGTERM) leaves the program attached and the maps pinned, so
the router keeps enforcing the last rules (fail closed); `--detach-on-exit`
removes the filter instead. With `--backend nfqueue` (musersd/nfqueue.py) the
filter is iptables rules queueing multicast to this process, whose netlink
socket joins the select loop: a clean stop removes those rules, a crash
leaves them dropping the queued traffic (fail closed).
SIGUSR1 logs the protocol counters. SIGHUP re-reads the rule file and the key file;
either one with an error is rejected whole and the running state is kept.
The rule file's receiver and interface lines (mauthcore/rulefile.py) go to
the filter's receiver half after the interfaces are attached, at start and
on every reload: the receiver rules are replaced by the file's, and every
guarded interface gets the policy the file names for it, or open without a
limit if it names none (the file is the whole truth). Once a second the loop
sweeps the joined-groups table (--group-timeout, --leave-grace); a sweep
that fails is logged and tried again the next second, it never ends the daemon.
No request can end the daemon: `ServerCore.receive()` answers a request that
fails on an unexpected error INTERNAL (or logs and drops the datagram) and
the loop goes on. Any other unexpected exception, a fault of the daemon itself
(its socket, its signal handling, a reload), is logged and the process exits
non-zero, so that systemd restarts it rather than letting it limp on.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from mauthcore.constants import ROUTER_PORT
from mauthcore.hostport import HostPortError, parse_hostport
from mauthcore.protocol.errors import CommandError
from mauthcore.protocol.keys import KeyFileError, load_keys
from mauthcore.protocol.server import ServerCore, legacy_checker
from mauthcore.receivers import MAX_RECEIVER_RULES, IfacePolicy
from mauthcore.rulefile import ConfigError, RuleFile, load_rules

from .dataplane import DataPlane, DataPlaneError, sap_group_list
from .dataplane_backend import DataPlaneBackend, receiving
from .defaults import DEFAULT_DENIED_SERIES, DEFAULT_QUEUE_NUM, DEFAULT_RULE_SERIES, DEFAULT_STATE_DIR, MetricsError
from .filter import Filter
from .kernel import multicast_routing
from .maps import SAP_GROUPS

if TYPE_CHECKING:
    from .metrics import MetricsServer
    from .nfqueue import NfqueueFilter

log = logging.getLogger("musersd")


DEFAULT_LEGACY_ALLOW = ("127.0.0.0/8", "::1/128")


@dataclass
class Options:
    ifaces: list[str]
    listen: tuple[str, int] = ("127.0.0.1", ROUTER_PORT)
    key_file: str | None = None
    legacy_allow: list[str] = field(default_factory=lambda: list(DEFAULT_LEGACY_ALLOW))
    config: str | None = None
    mode: str | None = None  # None: keep the pinned mode (enforce for new maps)
    pin_dir: str = "/sys/fs/bpf/mauth"
    max_rules: int | None = None
    denied_pairs: int | None = None  # denied table size; 0: record no pairs; None: the pinned size or default
    xdp_mode: str = "auto"
    sap_groups: tuple[str, ...] = SAP_GROUPS
    detach_on_exit: bool = False
    backend: str = "xdp"  # "xdp", or "nfqueue" where XDP cannot be used (musersd/nfqueue.py)
    queue_num: int = DEFAULT_QUEUE_NUM  # nfqueue: the NFQUEUE number
    state_dir: str = DEFAULT_STATE_DIR  # nfqueue: where the rules are kept across restarts
    metrics: tuple[str, int] | None = None  # Prometheus endpoint HOST:PORT; None: off
    metrics_rules: int = DEFAULT_RULE_SERIES  # per-rule series while the table holds at most this many
    metrics_denied: int = DEFAULT_DENIED_SERIES  # per-pair series for this many denied pairs
    rpf_ifaces: list[str] = field(default_factory=list)  # guarded interfaces that check every rule's reverse path
    group_timeout: float = 260.0  # seconds without a report after which a joined group is forgotten
    leave_grace: float = 3.0  # seconds after a leave after which the group is forgotten


class StartupError(Exception):
    """musersd cannot start; the message says why in one sentence."""


def parse_listen(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text, "listen address", numeric=True)
    except HostPortError as exc:
        raise StartupError(str(exc)) from None


def parse_sap_groups(groups) -> tuple[str, ...]:
    """--sap-group values: none given keeps the defaults, 'none' alone turns the exception off."""
    groups = [g.strip() for g in groups]
    if not groups:
        return SAP_GROUPS
    if groups == ["none"]:
        return ()
    try:
        return tuple(str(g) for g in sap_group_list(groups))
    except DataPlaneError as exc:
        raise StartupError(f"--sap-group: {exc}") from None


def parse_networks(cidrs: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            raise StartupError(f"--legacy-allow {c!r} is not an address or CIDR prefix") from None
    return nets


class Notifier:
    """sd_notify(3) through the sdnotify package; silent when not under systemd."""

    def __init__(self):
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = None
        if self.enabled:
            import sdnotify

            self._n = sdnotify.SystemdNotifier()
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() and int(usec) > 0 else None

    def notify(self, state: str) -> None:
        if self._n is not None:
            self._n.notify(state)


class Musersd:
    def __init__(self, opts: Options):
        self.opts = opts
        self.allow = parse_networks(opts.legacy_allow)
        self.legacy_allowed = legacy_checker(opts.legacy_allow)
        self.keys = None
        if opts.key_file:
            try:
                self.keys = load_keys(opts.key_file)
            except KeyFileError as exc:
                raise StartupError(str(exc)) from None
        self.rule_file = None
        if opts.config:
            try:
                self.rule_file = self._load_rules(opts.config)
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
        self.dp: Filter | None = None  # a DataPlane, or an NfqueueFilter with --backend nfqueue
        self.sock: socket.socket | None = None
        self.core: ServerCore | None = None
        self.backend: DataPlaneBackend | None = None
        self.notifier = Notifier()
        self._pending: list[int] = []
        self.epoch = secrets.randbits(64) or 1
        self.attached: dict[str, str] = {}
        self.started = time.time()
        self.metrics: MetricsServer | None = None
        self.clean_stop = False  # set when a signal asked us to stop (not an error)
        self.next_sweep = 0.0  # time.monotonic() of the next sweep of the joined groups
        self.sweep_failure: str | None = None  # the last sweep's error, logged once until it changes or heals

    # -------------------------------------------------------------- start-up

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self._abandon_start()
            raise

    def _abandon_start(self) -> None:
        """A start that failed half-way removes the iptables rules it installed (nfqueue) and the queue."""
        if self.opts.backend != "nfqueue" or self.dp is None:
            return
        for iface in self.attached:
            self.dp.detach(iface)
        self.dp.close()
        self.dp = None

    def _start(self) -> None:
        o = self.opts
        for iface in o.rpf_ifaces:
            if iface not in o.ifaces:
                raise StartupError(f"--rpf-iface {iface} is not one of the guarded interfaces (--iface)")
        if o.rpf_ifaces and o.backend == "nfqueue":
            raise StartupError("the nfqueue backend checks no reverse path; --rpf-iface needs the xdp backend")
        try:
            self.dp = self._data_plane().load()
            if o.mode:
                self.dp.set_mode(o.mode)
            if self.rule_file is not None:
                added, replaced, removed = self.dp.apply(self.rule_file.rules)
                log.info("rule file %s applied: %d added, %d replaced, %d removed",
                         self.rule_file.path, added, replaced, removed)
            for iface in o.ifaces:
                self.attached[iface] = self.dp.attach(iface, o.xdp_mode)
            if self.rule_file is not None:
                self._apply_receivers(self.rule_file)
        except DataPlaneError as exc:
            raise StartupError(str(exc)) from None
        family = socket.AF_INET6 if ":" in o.listen[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind(o.listen)
        except OSError as exc:
            raise StartupError(f"cannot listen on {o.listen[0]}:{o.listen[1]}: {exc.strerror}") from None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.backend = self._protocol_backend()
        self.core = ServerCore(
            self.backend,
            keys=self.keys,
            epoch=self.epoch,
            state_id=self.dp.state_id,
            legacy_allowed=self.legacy_allowed,
        )
        if o.metrics is not None:
            self._start_metrics(o.metrics)
        self._warn_without_multicast_routing()
        host, port = self.sock.getsockname()[:2]
        log.info(
            "serving on %s:%d (v2 %s, v1 from %s), mode %s, %d rules, interfaces %s",
            host, port, "enabled" if self.keys else "disabled (no --key-file)",
            ", ".join(str(n) for n in self.allow) or "nobody", self.dp.mode,
            self.dp.rule_count(), ", ".join(f"{i} ({m})" for i, m in self.attached.items()),
        )

    @staticmethod
    def _warn_without_multicast_routing() -> None:
        """One warning on a kernel that cannot route multicast: the filter works, nothing will be forwarded."""
        missing = multicast_routing().missing()
        if missing:
            log.warning("%s: the filter enforces its rules all the same, but this host will forward no multicast "
                        "(docs/operations.md says which kernel options a router needs)", missing)

    def _load_rules(self, path: str) -> RuleFile:
        """The rule file, refused whole if it holds a rule this backend cannot enforce (IPv6 or receivers on
        nfqueue), or a receiver rule or interface policy for an interface musersd does not guard."""
        rf = load_rules(path)
        if self.opts.backend == "nfqueue":
            ipv6 = next((r for r in rf.rules if r.key.family == 6), None)
            if ipv6 is not None:
                raise ConfigError(f"{rf.path}: the nfqueue backend filters IPv4 only, so it cannot hold the rule"
                                  f" for {ipv6.key}")
            if rf.receivers or rf.interfaces:
                raise ConfigError(f"{rf.path}: the nfqueue backend does not judge membership reports, so it cannot"
                                  " hold receiver rules or interface policies; run the xdp backend")
        if len(rf.receivers) > MAX_RECEIVER_RULES:
            raise ConfigError(f"{rf.path}: {len(rf.receivers)} receiver rules, more than the {MAX_RECEIVER_RULES}"
                              " a router holds")
        for what, iface in [*((f"the receiver rule {r}", r.iface) for r in rf.receivers),
                            *((f"the interface line for {p.iface}", p.iface) for p in rf.interfaces)]:
            if iface and iface not in self.opts.ifaces:
                raise ConfigError(f"{rf.path}: {what} names interface {iface}, which musersd does not guard"
                                  " (--iface)")
        return rf

    def _apply_receivers(self, rf: RuleFile) -> None:
        """The file's receiver rules, and a policy for every guarded interface (open, no limit, if unnamed)."""
        half = receiving(self.dp)
        if half is None:
            if rf.receivers or rf.interfaces:
                raise DataPlaneError(f"{rf.path}: this filter does not judge membership reports, so it cannot"
                                     " hold receiver rules or interface policies")
            return
        try:
            added, removed = half.apply_receivers(rf.receivers)
        except CommandError as exc:  # TableFull: the filter's own refusal of the whole set
            raise DataPlaneError(f"{rf.path}: {exc}") from None
        named = {p.iface: p for p in rf.interfaces}
        held = {p.policy.iface: p.policy for p in half.receiver_policies()}
        changed = []
        for iface in self.opts.ifaces:
            policy = named.get(iface, IfacePolicy(iface))
            if held.get(iface) != policy:
                half.set_receiver_policy(policy)
                changed.append(str(policy))
        log.info("receivers of %s applied: %d rules added, %d removed; interfaces %s", rf.path, added, removed,
                 ", ".join(changed) or "unchanged")

    def sweep(self, now: float) -> None:
        """Forget the joined groups whose membership ran out (once a second); a failure is logged, not raised."""
        if now < self.next_sweep:
            return
        self.next_sweep = now + 1.0
        half = receiving(self.dp)
        if half is None:
            return
        try:
            removed = half.sweep_groups(int(self.opts.group_timeout * 1e9), int(self.opts.leave_grace * 1e9))
        except Exception as exc:  # a fault of one sweep: the next second tries again
            text = f"{type(exc).__name__}: {exc}"
            if text != self.sweep_failure:
                log.error("sweeping the joined groups failed, trying again every second: %s", text)
            self.sweep_failure = text
            return
        if self.sweep_failure is not None:
            log.info("sweeping the joined groups works again")
            self.sweep_failure = None
        if removed:
            log.debug("joined groups swept: %d forgotten", removed)

    def _data_plane(self) -> Filter:
        """The XDP data plane, or the NFQUEUE one (same methods, same errors) with --backend nfqueue."""
        o = self.opts
        if o.backend == "nfqueue":
            from .nfqueue import NfqueueFilter

            return NfqueueFilter(o.state_dir, queue_num=o.queue_num, max_rules=o.max_rules, sap_groups=o.sap_groups)
        return DataPlane(o.pin_dir, max_rules=o.max_rules, sap_groups=o.sap_groups,
                         max_denied=o.denied_pairs or None, record_denied=o.denied_pairs != 0,
                         rpf_ifaces=o.rpf_ifaces)

    def _protocol_backend(self) -> DataPlaneBackend:
        assert self.dp is not None  # _start() loaded it first
        if self.opts.backend == "nfqueue":
            from .nfqueue_backend import NfqueueBackend

            return NfqueueBackend(self._queue_filter())
        return DataPlaneBackend(self.dp)

    def _queue_filter(self) -> NfqueueFilter:
        """The filter as the NfqueueFilter it is with --backend nfqueue (the only backend that calls this)."""
        # _data_plane() made an NfqueueFilter for that backend; cast, not isinstance(): nfqueue.py is
        # imported only when that backend is chosen.
        return cast("NfqueueFilter", self.dp)

    def _start_metrics(self, address: tuple[str, int]) -> None:
        """Serve /metrics from a thread of its own; the collector reads the maps at each scrape."""
        from . import bpfsys
        from .dataplane import xdp_status
        from .metrics import MetricsServer, MusersdCollector  # prometheus_client: only when asked for

        assert self.backend is not None  # _start() made it before the metrics
        xdp = self.backend.name == "xdp"  # the nfqueue filter has no program to look for
        # With the xdp backend _data_plane() made a DataPlane, whose program is looked for.
        prog_id = bpfsys.prog_id(cast(DataPlane, self.dp).prog_fd) if xdp else None
        collector = MusersdCollector(
            self.dp, core=lambda: self.core, attached=self.attached, epoch=self.epoch, started=self.started,
            rule_series=self.opts.metrics_rules, denied_series=self.opts.metrics_denied,
            xdp_status=xdp_status if xdp else None, prog_id=prog_id,
            backend=self.backend.name)
        self.metrics = MetricsServer([collector])
        try:
            host, port = self.metrics.start(address)
        except MetricsError as exc:
            self.metrics = None
            raise StartupError(str(exc)) from None
        log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    # -------------------------------------------------------------- signals

    def reload(self) -> None:
        """SIGHUP: re-read the rule file and key file; keep the running state on any error."""
        if self.opts.key_file:
            try:
                keys = load_keys(self.opts.key_file)
            except KeyFileError as exc:
                log.error("reload: key file rejected, keeping the current keys: %s", exc)
            else:
                self.keys = keys
                assert self.core is not None  # SIGHUP is handled by serve(), after start() made it
                self.core.set_keys(keys)
                log.info("reload: key file %s loaded (%d keys)", self.opts.key_file, len(keys))
        if self.opts.config:
            try:
                rf = self._load_rules(self.opts.config)
            except ConfigError as exc:
                log.error("reload: rule file rejected, the running rules stay as they were: %s", exc)
                return
            assert self.dp is not None  # loaded by start(), before SIGHUP is handled
            try:
                added, replaced, removed = self.dp.apply(rf.rules)
            except DataPlaneError as exc:
                log.error("reload: applying %s failed part-way: %s", rf.path, exc)
                return
            finally:
                if self.backend is not None:
                    self.backend.rules_changed()  # LIST pages and the rule count must see the new table
            log.info("reload: rule file %s applied: %d added, %d replaced, %d removed",
                     rf.path, added, replaced, removed)
            try:
                self._apply_receivers(rf)
            except DataPlaneError as exc:
                log.error("reload: applying the receivers of %s failed part-way: %s", rf.path, exc)
                return
            self.rule_file = rf

    def log_stats(self) -> None:
        """SIGUSR1: one log line with the protocol counters (requests, duplicates, rejections)."""
        assert self.core is not None  # SIGUSR1 is handled by serve(), after start() made it
        stats = " ".join(f"{k}={v}" for k, v in sorted(self.core.stats.items()))
        log.info("protocol stats: %s", stats)

    def _on_signal(self, signum, _frame) -> None:
        self._pending.append(signum)

    # -------------------------------------------------------------- loop

    def serve(self) -> int:
        assert self.sock is not None and self.dp is not None  # start() made them
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(s, self._on_signal)
        sel.register(rfd, selectors.EVENT_READ)
        if self.opts.backend == "nfqueue":  # queued packets are answered in this loop too
            queue = self._queue_filter()
            sel.register(queue.fileno(), selectors.EVENT_READ, queue.process)
        self.notifier.notify(f"READY=1\nSTATUS=serving {self.dp.rule_count()} rules")
        next_dog = time.monotonic()
        sweeping = receiving(self.dp) is not None
        try:
            while True:
                timeout = None
                now = time.monotonic()
                if sweeping:
                    self.sweep(now)
                    timeout = max(0.0, self.next_sweep - now)
                if self.notifier.watchdog_interval:
                    if now >= next_dog:
                        self.notifier.notify("WATCHDOG=1")
                        next_dog = now + self.notifier.watchdog_interval
                    timeout = max(0.0, min(next_dog - now, timeout if timeout is not None else next_dog - now))
                for key, _ in sel.select(timeout):
                    if key.fileobj == rfd:
                        try:
                            os.read(rfd, 512)
                        except BlockingIOError:
                            pass
                    elif key.data is not None:
                        key.data()
                    else:
                        self._serve_datagrams()
                while self._pending:
                    signum = self._pending.pop(0)
                    if signum == signal.SIGUSR1:
                        self.log_stats()
                    elif signum == signal.SIGHUP:
                        self.notifier.notify("RELOADING=1")
                        self.reload()
                        self.notifier.notify("READY=1")
                    else:
                        log.info("%s received, stopping", signal.Signals(signum).name)
                        self.notifier.notify("STOPPING=1")
                        self.clean_stop = True
                        return 0
        finally:
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)

    def _serve_datagrams(self) -> None:
        assert self.sock is not None and self.core is not None  # start() made them before serve() runs
        for _ in range(64):  # bounded batch, then check signals again
            try:
                data, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            reply = self.core.receive(data, peer[:2], time.monotonic())
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError as exc:
                    log.warning("peer=%s:%d reply not sent: %s", peer[0], peer[1], exc.strerror)

    def stop(self) -> None:
        if self.metrics is not None:  # before the maps close: no scrape may read them after
            self.metrics.stop()
            self.metrics = None
        if self.sock is not None:
            self.sock.close()
        if self.dp is not None:
            nfqueue = self.opts.backend == "nfqueue"
            if self.opts.detach_on_exit or (nfqueue and self.clean_stop):
                detached = []
                for iface in self.opts.ifaces:
                    try:
                        if self.dp.detach(iface):  # False: a rule could not be removed (logged)
                            detached.append(iface)
                    except DataPlaneError as exc:
                        log.error("%s", exc)
                if nfqueue and detached:
                    log.info("iptables rules removed from %s: their multicast is no longer filtered",
                             ", ".join(detached))
            elif nfqueue:
                log.warning("iptables rules left on %s with nobody on their queue: the kernel drops their "
                            "routable multicast until musersd is back (fail closed)", ", ".join(self.attached))
            else:
                log.info("filter left attached on %s, enforcing the last rules", ", ".join(self.opts.ifaces))
            self.dp.close()
