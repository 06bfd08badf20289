"""musersd's metrics over HTTP: the server on 127.0.0.1 serves a scrape and stops; a busy port is one sentence.

What a scrape shows is tests/unit/test_musersd_metrics.py.
"""

from __future__ import annotations

import socket
import urllib.request

import pytest

from musersd.metrics import (
    MetricsError,
    MetricsServer,
    MusersdCollector,
)
from tests.unit import test_musersd_metrics as unit

A = unit.A
dp = unit.dp  # the fixture: a fake data plane


def test_the_server_serves_metrics_over_http_and_stops(dp):
    dp.reasons["ttl"] = {"packets": 9, "bytes": 900}
    server = MetricsServer([MusersdCollector(dp)])
    host, port = server.start(("127.0.0.1", 0))
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'musersd_filter_packets_total{reason="ttl"} 9.0' in text
        assert "process_cpu_seconds_total" in text  # the process collector rides along
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2)


def test_a_busy_port_is_one_sentence():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match=f"^cannot serve metrics on 127.0.0.1:{port}: "):
            MetricsServer([]).start(("127.0.0.1", port))
    finally:
        busy.close()
