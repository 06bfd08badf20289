"""Defaults and option parsers musersd's command line needs without importing what they configure.

The metrics endpoint (metrics.py, prometheus_client) and the NFQUEUE back end
(nfqueue.py, sqlite3, iptables) cost a tenth of a second to import, and most
starts use neither; their defaults live here so that `musersd --help` and a
start without them do not pay for them. The modules re-export these names.
"""

from __future__ import annotations

from mauthcore.hostport import HostPortError, parse_hostport

# metrics.py
DEFAULT_RULE_SERIES = 1000
DEFAULT_DENIED_SERIES = 20

# nfqueue.py
DEFAULT_STATE_DIR = "/var/lib/mauth"
DEFAULT_QUEUE_NUM = 7575


class MetricsError(Exception):
    """The metrics endpoint cannot be served; the message says why in one sentence."""


def parse_metrics_address(text: str, what: str = "--metrics") -> tuple[str, int]:
    try:
        return parse_hostport(text, what, numeric=True)
    except HostPortError as exc:
        raise MetricsError(str(exc)) from None
