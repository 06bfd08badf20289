"""Shared fixtures: Hypothesis profiles, a private bpffs, and the namespace lab.

Integration tests need root, libbpf and network namespaces; `make test` runs as
root on the CI machine. They are not skipped when something is missing: a
missing piece is a failure to fix, not a pass.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from lab.netns import private_bpffs

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("hunt", max_examples=20000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent


def routed(request) -> bool:
    """Whether a lab fixture serves a router-tier test (marked `router`): its lab then forwards
    with smcrouted and the kernel's multicast routing, which the kernel must have (`lab.vm` gives
    it one). Every other lab observes the filter's verdict at the router itself."""
    return request.node.get_closest_marker("router") is not None


@pytest.fixture(scope="session")
def bpffs():
    """A bpffs of this test session's own, mounted in a temporary directory.

    Pins made there are visible from `ip netns exec` children (which get a
    private /sys), and everything vanishes with the unmount at the end.
    """
    if os.geteuid() != 0:
        pytest.fail("integration tests must run as root (make test does)")
    with private_bpffs() as base:
        yield base


@pytest.fixture
def pin_dir(bpffs):
    """A fresh, unique pin directory on the session's bpffs."""
    path = bpffs / f"t-{uuid.uuid4().hex[:8]}"
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)
