"""Prometheus metrics for musersd: the filter's maps and the protocol counters, read at scrape time.

Strategy: nothing is counted twice. The XDP program already counts every
verdict by reason, every rule's packets and bytes, and the denied pairs, in
its pinned maps; the protocol core already counts every datagram it handles
(`mauthcore.protocol.server.STATS`). A custom collector reads those when
Prometheus scrapes (`collect()`), so a scrape always shows the kernel's own
numbers and costs nothing between scrapes.

Threads. The HTTP server is prometheus_client's `start_http_server`: its own
thread (and one per request), so a slow scrape never stalls the protocol's
select loop. Reading the maps from that thread is safe: the read paths of
`DataPlane` (`counters`, `rules`, `denied`, `rule_count`, `mode`) only use
the map handles made at load time and sizes fixed since, allocate their own
buffers, and each read is a bpf() syscall; the slot bookkeeping that the
writers change is never read by them. The protocol counters are copied
(`ServerCore.stats` copies a dict whose keys never change). A rule removed
while a listing walks the hash map can make the walk see a key twice, so
rules are de-duplicated. One lock orders scrapes with each other and with
`close()`, which the daemon calls before it closes the maps: no scrape can
read a descriptor number that was closed and reused.

Cardinality. Per-rule series (source, group labels) are exported while the
table holds at most `rule_series` rules (default 1000, `--metrics-rules`):
above that they are left out as a whole rather than picking an arbitrary
subset that would change between scrapes, and `musersd_rule_series_omitted`
says how many were left out (reading 1,000,000 rules' per-CPU counters takes
about 30 s here; counting them about 3 s). Denied pairs are exported for the
`denied_series` pairs with the most packets (default 20, `--metrics-denied`);
the count of denied pairs by reason is always exported.

Receivers (a filter that judges membership reports): per guarded interface
its mode, group limit, groups joined now and report counters by outcome
(RECV_COUNTERS: judged, kept, refused, limited, leaves, rewritten, dropped,
malformed), the receiver rules held, and the refused joins by reason; no
series per receiver or group, whose number the hosts on the link decide.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from mauthcore.protocol.server import ServerCore

from mauthcore.protocol.metrics import protocol_metrics
from mauthcore.protocol.model import RECV_COUNTERS, Mode
from mauthcore.receivers import MAX_RECEIVER_RULES, ReceiverMode

from . import maps

log = logging.getLogger("musersd.metrics")

from .defaults import DEFAULT_DENIED_SERIES, DEFAULT_RULE_SERIES, MetricsError, parse_metrics_address  # noqa: F401,E402

# ---------------------------------------------------------------------------
# musersd
# ---------------------------------------------------------------------------


class MusersdCollector(Collector):
    """Reads the data plane and the protocol core at every scrape.

    `dp` is a loaded `DataPlane` (or anything with its read methods);
    `core` returns the `ServerCore` (None before it exists); `attached`
    maps each guarded interface to the XDP mode it was attached in;
    `xdp_status(iface)` returns (mode, program id) of what is attached now,
    and `prog_id` is our program's id, so a filter replaced or removed
    behind musersd's back shows as not attached.
    """

    def __init__(self, dp, *, core: Callable[[], ServerCore | None] = lambda: None,
                 attached: Mapping[str, str] | None = None, epoch: int = 0, started: float | None = None,
                 rule_series: int = DEFAULT_RULE_SERIES, denied_series: int = DEFAULT_DENIED_SERIES,
                 xdp_status: Callable[[str], tuple[str | None, int]] | None = None, prog_id: int | None = None,
                 backend: str = "xdp") -> None:
        self.dp = dp
        self.core = core
        self.attached = dict(attached or {})
        self.epoch = epoch
        self.started = time.time() if started is None else started
        self.rule_series = rule_series
        self.denied_series = denied_series
        self.xdp_status = xdp_status
        self.prog_id = prog_id
        self.backend = backend
        self._lock = threading.Lock()
        self._closed = False
        self.scrapes = 0

    def close(self) -> None:
        """Wait for a scrape in progress, then make every later one empty (the maps are about to close)."""
        with self._lock:
            self._closed = True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._closed:
                return
            started = time.perf_counter()
            families = [*self._filter(), *self._rules(), *self._denied(), *self._receivers(), *self._state(),
                        *self._protocol()]
            self.scrapes += 1
            families.append(GaugeMetricFamily("musersd_metrics_read_seconds", "Time this scrape took to read "
                                              "the maps and counters", value=time.perf_counter() - started))
        yield from families

    # -- the filter's reason counters -----------------------------------------

    def _filter(self) -> list[Metric]:
        packets = CounterMetricFamily("musersd_filter_packets", "Packets the XDP filter counted, by reason "
                                      "(unauthorized, ttl, rate, wrong_iif, rpf_fail and wrong_mac are drops in "
                                      "enforce mode)", labels=["reason"])
        nbytes = CounterMetricFamily("musersd_filter_bytes", "Bytes the XDP filter counted, by reason",
                                     labels=["reason"])
        for reason, c in self.dp.counters().items():
            packets.add_metric([reason], c["packets"])
            nbytes.add_metric([reason], c["bytes"])
        return [packets, nbytes]

    # -- rules ------------------------------------------------------------------

    def _rules(self) -> list[Metric]:
        count = self.dp.rule_count()
        out: list[Metric] = [
            GaugeMetricFamily("musersd_rules", "Sender rules in the filter's table", value=count),
            GaugeMetricFamily("musersd_rule_capacity", "Capacity of the rule table", value=self.dp.max_rules),
        ]
        exported = count <= self.rule_series
        out.append(GaugeMetricFamily(
            "musersd_rule_series_omitted", f"Rules without per-rule series (they are exported while the table "
            f"holds at most {self.rule_series} rules, --metrics-rules)", value=0 if exported else count))
        if not exported:
            return out
        labels = ["source", "group"]
        packets = CounterMetricFamily("musersd_rule_packets", "Packets a rule let through", labels=labels)
        nbytes = CounterMetricFamily("musersd_rule_bytes", "Bytes a rule let through", labels=labels)
        max_ttl = GaugeMetricFamily("musersd_rule_max_ttl", "A rule's largest allowed TTL", labels=labels)
        last = GaugeMetricFamily("musersd_rule_last_seen_timestamp_seconds",
                                 "Unix time of the last packet a rule let through (absent if none)", labels=labels)
        seen = set()
        for rs in self.dp.rules():
            key = rs.rule.key
            if key in seen:  # a concurrent removal made the hash walk restart
                continue
            seen.add(key)
            lv = [str(key.source), str(key.group)]
            packets.add_metric(lv, rs.packets)
            nbytes.add_metric(lv, rs.octets)
            max_ttl.add_metric(lv, rs.rule.max_ttl)
            if rs.last_seen:
                last.add_metric(lv, rs.last_seen / 1000)
        return out + [packets, nbytes, max_ttl, last]

    # -- denied pairs -------------------------------------------------------------

    def _denied(self) -> list[Metric]:
        entries = self.dp.denied()
        by_reason = dict.fromkeys(sorted(maps.DROP_REASONS), 0)
        for d in entries:
            by_reason[str(d.reason)] = by_reason.get(str(d.reason), 0) + 1
        pairs = GaugeMetricFamily("musersd_denied_pairs", "Denied (source, group) pairs in the filter's table, by "
                                  "the reason of their last packet", labels=["reason"])
        for reason, n in sorted(by_reason.items()):
            pairs.add_metric([reason], n)
        out: list[Metric] = [
            pairs,
            GaugeMetricFamily("musersd_denied_capacity", "Capacity of the denied-pairs table",
                              value=self.dp.max_denied),
        ]
        if self.denied_series <= 0:
            return out
        labels = ["source", "group", "reason"]
        packets = CounterMetricFamily("musersd_denied_pair_packets", f"Packets from a denied pair while in the "
                                      f"table, for the {self.denied_series} pairs with the most", labels=labels)
        nbytes = CounterMetricFamily("musersd_denied_pair_bytes", "Bytes from a denied pair while in the table",
                                     labels=labels)
        top = sorted(entries, key=lambda d: (-d.packets, _order(d.source), _order(d.group)))[:self.denied_series]
        for d in top:
            lv = [str(d.source), str(d.group), str(d.reason)]
            packets.add_metric(lv, d.packets)
            nbytes.add_metric(lv, d.octets)
        return out + [packets, nbytes]

    # -- receivers (membership reports) -----------------------------------------------

    def _receivers(self) -> list[Metric]:
        if not getattr(self.dp, "receives", False):
            return []
        ifaces = sorted(self.dp.receiver_policies(), key=lambda p: p.policy.iface)
        reports = CounterMetricFamily("musersd_receiver_reports", "Membership reports (IGMP, MLD) the filter "
                                      "judged on a guarded interface, by outcome (judged: every one; kept whole, "
                                      "refused: a join no receiver rule allows, limited: a join over the group "
                                      "limit, leaves, rewritten: records or sources removed, dropped whole, "
                                      "malformed)", labels=["iface", "outcome"])
        groups = GaugeMetricFamily("musersd_receiver_groups", "Groups joined on a guarded interface now (what its "
                                   "group limit counts)", labels=["iface"])
        limit = GaugeMetricFamily("musersd_receiver_group_limit", "A guarded interface's group limit (0: none)",
                                  labels=["iface"])
        mode = GaugeMetricFamily("musersd_receiver_mode", "A guarded interface's receiver mode (1 for the current "
                                 "one)", labels=["iface", "mode"])
        for p in ifaces:
            iface = p.policy.iface
            for name in RECV_COUNTERS:
                reports.add_metric([iface, "judged" if name == "reports" else name], p.counters.get(name, 0))
            groups.add_metric([iface], p.groups)
            limit.add_metric([iface], p.policy.limit)
            for m in ReceiverMode:
                mode.add_metric([iface, str(m)], 1 if m is p.policy.mode else 0)
        by_reason = {"join_refused": 0, "join_limit": 0}
        for d in self.dp.denied_joins():
            by_reason[d.reason] = by_reason.get(d.reason, 0) + 1
        denied = GaugeMetricFamily("musersd_denied_joins", "Refused joins (receiver, group, source) in the "
                                   "filter's table, by the reason of the last", labels=["reason"])
        for reason, n in sorted(by_reason.items()):
            denied.add_metric([reason], n)
        return [reports, groups, limit, mode, denied,
                GaugeMetricFamily("musersd_receiver_rules", "Receiver rules in the filter's table",
                                  value=len(self.dp.receiver_rules())),
                GaugeMetricFamily("musersd_receiver_rule_capacity", "Capacity of the receiver rule table",
                                  value=MAX_RECEIVER_RULES)]

    # -- daemon and filter state ----------------------------------------------------

    def _state(self) -> list[Metric]:
        current = self.dp.mode
        mode = GaugeMetricFamily("musersd_mode", "Filter mode (1 for the current one)", labels=["mode"])
        for m in Mode:
            mode.add_metric([str(m)], 1 if m is current else 0)
        out: list[Metric] = [
            mode,
            InfoMetricFamily("musersd", "The daemon's epoch (new at every start), the tables' state id (new "
                             "when the maps are created) and the backend",
                             value={"epoch": f"{self.epoch:016x}", "state_id": f"{self.dp.state_id:016x}",
                                    "backend": self.backend}),
            GaugeMetricFamily("musersd_start_time_seconds", "Unix time musersd started", value=self.started),
        ]
        attached = GaugeMetricFamily("musersd_xdp_attached", "1 if musersd's XDP program is attached to the "
                                     "interface now, in the mode given", labels=["iface", "mode"])
        for iface, mode_used in sorted(self.attached.items()):
            value, shown = 1, mode_used
            if self.xdp_status is not None:
                try:
                    now_mode, prog = self.xdp_status(iface)
                except Exception as exc:  # the interface went away, netlink trouble: not attached
                    log.debug("iface=%s XDP status unreadable: %s", iface, exc)
                    now_mode, prog = None, 0
                shown = now_mode or mode_used
                value = 1 if now_mode is not None and (self.prog_id is None or prog == self.prog_id) else 0
            attached.add_metric([iface, shown], value)
        out.append(attached)
        return out

    # -- protocol -----------------------------------------------------------------

    def _protocol(self) -> list[Metric]:
        core = self.core()
        if core is None:
            return []
        return protocol_metrics("musersd", core.stats, sessions=core.session_count,
                                v1_clients=core.v1_client_count)


def _order(addr) -> tuple[int, int]:
    a = ipaddress.ip_address(addr)
    return a.version, int(a)


# ---------------------------------------------------------------------------
# serving
# ---------------------------------------------------------------------------


class MetricsServer:
    """http://HOST:PORT/metrics in a thread of its own (prometheus_client's server)."""

    def __init__(self, collectors: Iterable[Collector], *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collectors = list(collectors)
        for c in self.collectors:
            self.registry.register(c)
        if process:
            ProcessCollector(registry=self.registry)
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, address: tuple[str, int]) -> tuple[str, int]:
        """Bind and serve; return the address bound (port 0 picks one). MetricsError if it cannot bind."""
        host, port = address
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        bound = self._httpd.server_address
        assert isinstance(bound[0], str)  # an IP socket's address: (host, port[, flowinfo, scope_id])
        return bound[0], bound[1]

    def stop(self) -> None:
        """Stop serving, then wait for a scrape in progress (see MusersdCollector.close)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for c in self.collectors:
            close = getattr(c, "close", None)
            if close is not None:
                close()
