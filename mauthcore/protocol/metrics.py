"""The router protocol's counters as Prometheus metric families, for both daemons that serve it.

musersd and mauthserver serve the same protocol (`mauthcore.protocol.server`)
and export its counters (`ServerCore.stats`) under their own prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mauthcore.protocol.server import STATS

# STATS names that mean "a datagram was refused or ignored", exported as one
# metric with the STATS name as the reason label.
REJECTIONS = (
    "unrecognized", "v1_refused", "v1_stale", "v1_busy", "v2_disabled", "not_v2", "unknown_key", "bad_auth",
    "malformed", "stale_epoch", "stale_session", "replays", "duplicates_elsewhere", "busy",
)
_FROM_MEMORY = {"v1_duplicates": "v1", "duplicates": "v2"}
_V1_REPLIES = {"v1_ack": "ack", "v1_error": "error"}


def protocol_metrics(prefix: str, stats: Mapping[str, int], *, sessions: int | None = None,
                     v1_clients: int | None = None) -> list[Metric]:
    """The router protocol's counters (`ServerCore.stats`) as metric families named `<prefix>_protocol_*`.

    Grouped where a label reads better (requests by command, replies by
    status, rejections by reason, answers from memory by version); every
    other counter is exported under its own name, so a counter added to
    `STATS` later is never lost.
    """
    p = f"{prefix}_protocol"
    requests = CounterMetricFamily(f"{p}_requests", "Requests received, by command (authenticated v2 and "
                                   "allowed v1)", labels=["command"])
    replies = CounterMetricFamily(f"{p}_replies", "Responses sent, by protocol version and status",
                                  labels=["version", "status"])
    memory = CounterMetricFamily(f"{p}_answered_from_memory", "Retransmitted requests answered from the "
                                 "remembered response without executing them again", labels=["version"])
    rejected = CounterMetricFamily(f"{p}_rejected", "Datagrams refused or ignored, by reason (the names of "
                                   "mauthcore.protocol.server.STATS)", labels=["reason"])
    out: list[Metric] = [requests, replies, memory, rejected]
    for name in sorted(set(STATS) | set(stats)):
        value = stats.get(name, 0)
        if name.startswith("requests_"):
            requests.add_metric([name[len("requests_"):]], value)
        elif name.startswith("replies_"):
            replies.add_metric(["v2", name[len("replies_"):]], value)
        elif name in _V1_REPLIES:
            replies.add_metric(["v1", _V1_REPLIES[name]], value)
        elif name in _FROM_MEMORY:
            memory.add_metric([_FROM_MEMORY[name]], value)
        elif name in REJECTIONS:
            rejected.add_metric([name], value)
        else:
            text = STATS.get(name, name)
            out.append(CounterMetricFamily(f"{p}_{name}", text[:1].upper() + text[1:], value=value))
    if sessions is not None:
        out.append(GaugeMetricFamily(f"{p}_sessions", "Open v2 sessions", value=sessions))
    if v1_clients is not None:
        out.append(GaugeMetricFamily(f"{p}_v1_clients", "v1 client addresses remembered", value=v1_clients))
    return out
