"""Prometheus metrics for mauthserver: routers, rules, sessions, fan-out, SAP, API and denied senders.

Strategy: like musersd's, a custom collector reads the counters the parts
already keep (`RouterCore.counters`, the directory's, the SAP listener's,
the API's, the event bus's, the fleet protocol core's `STATS`, the denied
watch's, the audit retention's in the daemon) when Prometheus scrapes;
nothing is counted twice.

It is served on a listener of its own (`--metrics HOST:PORT`, off by
default), not on the API: the API wants a bearer token on every path but
two, and Prometheus scrapes without one; a separate address can also be
bound to a management network while the API stays on loopback (or the
other way round). The listener is a second aiohttp site in the daemon's
event loop, serving prometheus_client's aiohttp handler, so a scrape runs
in the loop's thread like every other reader of the mediator's state: no
locks, and a consistent view (nothing changes during a collect). A collect
only walks in-memory state (no SQL, no router I/O).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from mauthcore.protocol.metrics import protocol_metrics

from .api import COUNTERS
from .core import CONVERGING, DOWN, UNKNOWN, UP

# RouterCore.counters -> (metric suffix, help). Calls to the router first, then what was noticed.
_ROUTER_CALLS = {"probes": "probe", "hellos": "hello", "lists": "list", "installs": "install",
                 "removals": "remove"}
_ROUTER_COUNTERS = {
    "failures": ("router_failures", "Calls that got no (usable) answer; each is retried after a back-off"),
    "refused": ("router_refused", "Installs or removals the router refused for good (not retried until the "
                "rule changes)"),
    "restarts_seen": ("router_restarts", "musersd restarts noticed (a new epoch)"),
    "state_losses": ("router_state_losses", "Times the router's tables were recreated (a new state_id): rules "
                     "re-installed"),
    "drifts": ("router_drifts", "Probes whose rule count disagreed with what the router was believed to hold"),
    "verifications": ("router_verifications", "Periodic LIST verifications"),
}
_STATES = (UNKNOWN, UP, CONVERGING, DOWN)

# The session directory's counters (sap/directory.py), always exported, at 0 until they happen.
_DIRECTORY = ("packets", "announcements", "deletions", "encrypted", "unsupported_payload", "malformed_sap",
              "malformed_sdp", "added", "changed", "refreshed", "stale", "already_stopped", "evicted",
              "deletion_unauthenticated", "deletion_unknown", "encrypted_deleted", "encrypted_evicted",
              "encrypted_expired")


class MauthserverCollector(Collector):
    """Reads a running `mauthserver.daemon.Daemon`'s parts at every scrape (in its event loop)."""

    def __init__(self, daemon, *, started: float | None = None) -> None:
        self.daemon = daemon
        self.started = time.time() if started is None else started

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        m = d.mediator
        if m is None:
            return
        yield from self._fleet(m)
        yield from self._leadership(d)
        yield from self._routers(m)
        yield from self._sap(m, d.sap)
        yield from self._api(d)
        if d.fleet_server is not None:
            core = d.fleet_server.core
            yield from protocol_metrics("mauthserver", core.stats, sessions=core.session_count,
                                        v1_clients=core.v1_client_count)
        denied = getattr(d, "denied", None)
        if denied is not None:
            yield from self._denied(denied)
        yield from self._audit(d)

    # -- audit retention ------------------------------------------------------------

    @staticmethod
    def _audit(d) -> list[Metric]:
        out: list[Metric] = [CounterMetricFamily("mauthserver_audit_pruned_rows", "Audit log rows deleted by "
                                                 "the retention bounds (--audit-max-age, --audit-max-rows)",
                                                 value=getattr(d, "audit_pruned", 0))]
        rows = getattr(d, "audit_rows", None)
        if rows is not None:  # counted by the last retention pass, not at the scrape
            out.append(GaugeMetricFamily("mauthserver_audit_rows", "Audit log rows after the last retention pass",
                                         value=rows))
        return out

    # -- desired state, sessions, events -------------------------------------------

    def _fleet(self, m) -> list[Metric]:
        mode = GaugeMetricFamily("mauthserver_desired_mode", "Desired filter mode of every router (1 for the "
                                 "current one; \"keep\": each router's own mode is left alone)", labels=["mode"])
        for name in ("enforce", "monitor", "keep"):
            current = "keep" if m.fleet.mode is None else str(m.fleet.mode)
            mode.add_metric([name], 1 if name == current else 0)
        bus = m.bus
        return [
            GaugeMetricFamily("mauthserver_rules", "Desired sender rules", value=len(m.fleet.desired)),
            GaugeMetricFamily("mauthserver_sessions", "Announced sessions in the directory", value=len(m.directory)),
            mode,
            CounterMetricFamily("mauthserver_rule_changes", "Desired rules added, changed or removed",
                                value=m.counters.get("rule_changes", 0)),
            _labelled(CounterMetricFamily("mauthserver_session_events", "Sessions added, changed or removed in "
                                          "the directory", labels=["event"]),
                      {e: m.counters.get(f"sessions_{e}", 0) for e in ("added", "changed", "removed")}),
            CounterMetricFamily("mauthserver_events_published", "Events published on the event stream",
                                value=bus.counters.get("published", 0)),
            CounterMetricFamily("mauthserver_event_overflows", "Event-stream clients cut off for falling behind",
                                value=bus.counters.get("overflows", 0)),
            GaugeMetricFamily("mauthserver_event_subscribers", "Clients following the event stream",
                              value=bus.subscribers),
            CounterMetricFamily("mauthserver_store_commits", "Database transactions committed",
                                value=m.store.commits),
            GaugeMetricFamily("mauthserver_start_time_seconds", "Unix time mauthserver started",
                              value=self.started),
            InfoMetricFamily("mauthserver_event_stream", "The event stream's boot id (Last-Event-ID prefix)",
                             value={"boot": bus.boot}),
        ]

    # -- leadership (mauthserver/leader.py) ----------------------------------------------

    def _leadership(self, d) -> list[Metric]:
        lead = getattr(d, "leadership", None)
        leading = getattr(d, "leading", True)
        term = 0 if lead is None else lead.term if leading or lead.current is None else lead.current.term
        out: list[Metric] = [
            GaugeMetricFamily("mauthserver_leader", "1 while this instance leads (writes, fans out to routers); 0 "
                              "on a standby. Always 1 on SQLite, whose one instance is the leader",
                              value=1 if leading else 0),
            GaugeMetricFamily("mauthserver_leader_term", "The leadership term this instance holds, or last saw "
                              "held (0 on SQLite)", value=term),
            CounterMetricFamily("mauthserver_standby_sap_packets", "SAP packets heard while a standby (the leader "
                                "stores sessions)", value=getattr(d, "standby_sap", 0)),
        ]
        forwarder = getattr(d, "forwarder", None)
        if forwarder is not None:
            out.append(CounterMetricFamily("mauthserver_forwarded_requests", "API requests a standby forwarded to "
                                           "the leader", value=forwarder.counters["forwarded"]))
            out.append(CounterMetricFamily("mauthserver_forward_refusals", "API requests a standby refused for "
                                           "want of a reachable leader", value=forwarder.counters["no_leader"]))
        if lead is not None:
            out.append(GaugeMetricFamily("mauthserver_last_failover_timestamp_seconds", "Unix time this instance "
                                         "last became the leader (0: never)", value=lead.elected_at or 0))
            out.append(CounterMetricFamily("mauthserver_lease_renewals", "Lease renewals that succeeded",
                                           value=lead.counters["renewals"]))
            out.append(CounterMetricFamily("mauthserver_lease_renewal_failures", "Lease renewals that failed (the "
                                           "database did not answer)", value=lead.counters["renewal_failures"]))
            out.append(CounterMetricFamily("mauthserver_leadership_db_errors", "Database errors of the election "
                                           "loop", value=lead.counters["db_errors"]))
        return out

    # -- routers ---------------------------------------------------------------------

    def _routers(self, m) -> list[Metric]:
        r = ["router"]
        up = GaugeMetricFamily("mauthserver_router_up", "1 if the router answers (up or converging)", labels=r)
        state = GaugeMetricFamily("mauthserver_router_state", "The router's state (1 for the current one)",
                                  labels=["router", "state"])
        info = InfoMetricFamily("mauthserver_router", "The router's address, filter mode and backend",
                                labels=["router", "address", "mode", "backend"])
        rules = GaugeMetricFamily("mauthserver_router_rules", "Rules the router said it holds at the last contact",
                                  labels=r)
        applied = GaugeMetricFamily("mauthserver_router_rules_applied", "Desired rules believed applied on the "
                                    "router", labels=r)
        pending = GaugeMetricFamily("mauthserver_router_rules_pending", "Rules still to install or remove on the "
                                    "router", labels=r)
        refused = GaugeMetricFamily("mauthserver_router_rules_refused", "Rules the router refused for good",
                                    labels=r)
        contact = GaugeMetricFamily("mauthserver_router_last_contact_timestamp_seconds", "Unix time of the last "
                                    "answer from the router (absent before the first)", labels=r)
        calls = CounterMetricFamily("mauthserver_router_calls", "Calls made to the router, by kind (install and "
                                    "remove are the fanned-out commands)", labels=["router", "call"])
        counters = {key: CounterMetricFamily(f"mauthserver_{name}", text, labels=r)
                    for key, (name, text) in _ROUTER_COUNTERS.items()}
        fpackets = CounterMetricFamily("mauthserver_router_filter_packets", "The router's filter counters by reason"
                                       ", as read at the last probe", labels=["router", "reason"])
        fbytes = CounterMetricFamily("mauthserver_router_filter_bytes", "The router's filter byte counters by "
                                     "reason, as read at the last probe", labels=["router", "reason"])
        for view in m.routers_view():
            name = view["name"]
            core = m.fleet.routers[name]
            up.add_metric([name], 1 if view["state"] in (UP, CONVERGING) else 0)
            for s in _STATES:
                state.add_metric([name, s], 1 if view["state"] == s else 0)
            info.add_metric([name, view["address"], view["mode"] or "", view["backend"] or ""], {})
            if view["rule_count"] is not None:
                rules.add_metric([name], view["rule_count"])
            applied.add_metric([name], sum(1 for k, held in core.applied.items()
                                           if (dr := m.fleet.desired.get(k)) is not None and core.want(dr) == held))
            pending.add_metric([name], view["pending"])
            refused.add_metric([name], view["refused"])
            if view["last_contact"] is not None:
                contact.add_metric([name], view["last_contact"])
            for key, call in _ROUTER_CALLS.items():
                calls.add_metric([name, call], core.counters.get(key, 0))
            for key, family in counters.items():
                family.add_metric([name], core.counters.get(key, 0))
            if core.filter is not None:
                for c in core.filter.reasons:
                    fpackets.add_metric([name, str(c.reason)], c.packets)
                    fbytes.add_metric([name, str(c.reason)], c.octets)
        return [up, state, info, rules, applied, pending, refused, contact, calls, *counters.values(),
                fpackets, fbytes]

    # -- SAP -----------------------------------------------------------------------------

    def _sap(self, m, listener) -> list[Metric]:
        counts = m.directory.counters
        received = CounterMetricFamily("mauthserver_sap_packets_received", "SAP packets received",
                                       value=m.counters.get("sap_packets", 0))
        rejected = CounterMetricFamily("mauthserver_sap_rejected", "SAP packets rejected: undecodable SAP (layer "
                                       "sap) or SDP (layer sdp), by reason", labels=["layer", "reason"])
        directory = CounterMetricFamily("mauthserver_sap_directory", "The session directory's counters (see "
                                        "sap/directory.py), including announcements replayed from the database "
                                        "at start-up", labels=["counter"])
        for key, n in sorted(counts.items()):
            layer, sep, reason = key.partition(":")
            if sep and layer in ("malformed_sap", "malformed_sdp"):
                rejected.add_metric([layer[len("malformed_"):], reason], n)
        for key in sorted(set(_DIRECTORY) | {k for k in counts if ":" not in k}):
            directory.add_metric([key], counts.get(key, 0))
        out: list[Metric] = [received, rejected, directory]
        if listener is not None:
            lc = listener.counters
            out += [
                CounterMetricFamily("mauthserver_sap_socket_errors", "Errors reported by the SAP sockets",
                                    value=lc.get("socket_errors", 0)),
                CounterMetricFamily("mauthserver_sap_join_errors", "SAP group joins that failed",
                                    value=lc.get("join_errors", 0)),
                GaugeMetricFamily("mauthserver_sap_memberships", "(SAP group, interface) memberships held",
                                  value=len(listener.joined)),
            ]
        return out

    # -- API -------------------------------------------------------------------------------

    def _api(self, d) -> list[Metric]:
        app = getattr(d, "_app", None)
        if app is None:
            return []
        c = app[COUNTERS]
        return [
            CounterMetricFamily("mauthserver_api_requests", "HTTP API requests", value=c.get("requests", 0)),
            _labelled(CounterMetricFamily("mauthserver_api_rejected", "HTTP API requests answered with an error, "
                                          "by cause (unauthorized: 401; refused: 4xx from a check; error: 500)",
                                          labels=["cause"]),
                      {"unauthorized": c.get("unauthorized", 0), "refused": c.get("refused", 0),
                       "error": c.get("errors", 0)}),
        ]

    # -- denied senders ----------------------------------------------------------------------

    @staticmethod
    def _denied(w) -> list[Metric]:
        r = ["router"]
        polls = CounterMetricFamily("mauthserver_denied_polls", "Listings of a router's denied table", labels=r)
        failures = CounterMetricFamily("mauthserver_denied_poll_failures", "Listings of a router's denied table "
                                       "that failed", labels=r)
        pairs = GaugeMetricFamily("mauthserver_denied_pairs", "Denied pairs in a router's table at the last "
                                  "listing", labels=r)
        packets = GaugeMetricFamily("mauthserver_denied_packets", "Packets of the denied pairs in a router's table"
                                    " at the last listing, by reason", labels=["router", "reason"])
        for name in sorted(w.polls):
            polls.add_metric([name], w.polls[name])
            failures.add_metric([name], w.poll_failures.get(name, 0))
            pairs.add_metric([name], w.tracker.pairs.get(name, 0))
            for reason, n in sorted(w.tracker.packets.get(name, {}).items()):
                packets.add_metric([name, reason], n)
        reports = _labelled(CounterMetricFamily("mauthserver_denied_reports", "denied events published (and "
                                                "logged): a new pair, or a known one still sending",
                                                labels=["kind"]),
                            {"new": w.counters["published_new"], "growing": w.counters["published_growing"]})
        suppressed = CounterMetricFamily("mauthserver_denied_reports_suppressed", "denied reports held back by the "
                                         "rate limit (offered again at the next poll)", value=w.counters["suppressed"])
        moved = CounterMetricFamily("mauthserver_sender_moved_events", "sender.moved events published: a learning"
                                    " rule's sender seen from another interface or MAC",
                                    value=w.counters["sender_moved"])
        joins = _labelled(CounterMetricFamily("mauthserver_receiver_denied_reports", "receiver.denied events"
                                              " published: a new refused join, or a known one refused again",
                                              labels=["kind"]),
                          {"new": w.counters["joins_new"], "growing": w.counters["joins_growing"]})
        return [polls, failures, pairs, packets, reports, suppressed, moved, joins]


def _labelled(family, values: dict) -> Metric:
    for label, value in values.items():
        family.add_metric([label], value)
    return family


# -- serving ------------------------------------------------------------------------------------


def make_registry(daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MauthserverCollector(daemon))
    ProcessCollector(registry=registry)
    return registry


async def serve(address: tuple[str, int], registry: CollectorRegistry) -> tuple[web.AppRunner, tuple[str, int]]:
    """GET /metrics on `address`, in the running event loop; returns the runner (cleanup() stops it) and
    the address bound. OSError if it cannot bind."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, (host, port)


__all__ = ["MauthserverCollector", "make_registry", "serve"]
