"""mauthctl audit's own parts: the times --since and --until accept (mauthclient/when.py) and the one-line
detail of its table. Against a running server: tests/loopback/test_mauthctl_audit.py."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from mauthclient.cli import _audit_detail
from mauthclient.when import parse_when

NOW = 1_796_601_600.0  # 2026-12-07T00:00:00Z


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", NOW - 30), ("30m", NOW - 1800), ("1h", NOW - 3600), ("2d", NOW - 2 * 86400), ("1w", NOW - 604800),
    ("1796601600", NOW), ("1796601600.5", NOW + 0.5),
    ("2026-12-07T10:00Z", NOW + 36000), ("2026-12-07T10:00:00+01:00", NOW + 32400),
    ("2026-12-07", datetime.datetime(2026, 12, 7).timestamp()),
    ("2026-12-07T10:00", datetime.datetime(2026, 12, 7, 10).timestamp()),
    ("2026-12-07 10:00:30", datetime.datetime(2026, 12, 7, 10, 0, 30).timestamp()),
])
def test_mauthctl_times(text, expected):
    assert parse_when(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "2026-13-01", "", "1.5h", "12:00"])
def test_mauthctl_bad_times_are_one_sentence(text):
    with pytest.raises(ValueError, match=r"^--since .* is not a time: give a date \(2026-12-07\)"):
        parse_when(text, now=NOW, option="--since")


def test_mauthctl_detail_line_is_compact():
    assert _audit_detail({"source": "192.0.2.10", "group": "239.1.1.1", "max_ttl": 8, "replace": False}) == \
        "group=239.1.1.1 max_ttl=8 replace=false source=192.0.2.10"
    assert _audit_detail({"name": "Lobby camera", "rules": ["a b 8"], "x": None}) == \
        'name="Lobby camera" rules=["a b 8"] x=null'
    long = _audit_detail({"rules": [f"192.0.2.{i} 239.1.1.1 8" for i in range(20)]})
    assert len(long) == 100 and long.endswith("...")
    assert "\n" not in _audit_detail({"text": "two\nlines"})


def test_now_is_not_used_by_absolute_times():
    assert parse_when("2026-12-07T10:00Z", now=time.time()) == parse_when("2026-12-07T10:00Z", now=0)
    assert json.dumps(parse_when("1h", now=3600)) == "0"
