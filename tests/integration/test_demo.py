"""`make demo` runs end to end and reports that the policy held."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_demo_reports_the_policy_holding():
    proc = subprocess.run([sys.executable, "-m", "lab.demo"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["policy_held"] is True
    by_sender = {s["sender"]: s for s in summary["senders"]}
    assert by_sender["192.0.2.70"]["delivered"] == 0
    assert by_sender["192.0.2.12"]["delivered"] == by_sender["192.0.2.12"]["sent"] // 2
