"""Shared fixtures: Hypothesis profiles, a private bpffs, and the namespace lab.

The suite has three tiers, each a directory, each needing more than the last:

    tests/unit         nothing but Python: no socket, no child process, no root
                       (tests/unit/conftest.py refuses them)      make unit
    tests/loopback     real sockets on the loopback interface and child processes
                       (make install into a temporary tree); no root    make loopback
    tests/integration  root, libbpf, XDP and network namespaces (the lab)  make integration

`make test` (scripts/run_tests.py) runs all three on the host (`-m "not router"`),
then the router tier. Integration tests are not skipped when something is
missing: a missing piece is a failure to fix, not a pass.

Hypothesis reads its settings from a profile, never from the test:
HYPOTHESIS_PROFILE=dev|ci|thorough (default dev). See PROFILES below.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from lab.netns import private_bpffs

# Every profile: no per-example deadline and no too_slow health check, because this suite shares
# small CI machines with other work and a slow moment there is not a bug in mauth.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILES = {
    # `make test` and a developer's run: the same examples every run (derandomized), so a failure
    # reproduces; 200 a test keeps the unit tier's time where it was (~5,000 examples in all).
    "dev": dict(derandomize=True, max_examples=200, **_COMMON),
    # A CI job with time to spare: still reproducible, more examples.
    "ci": dict(derandomize=True, max_examples=1000, **_COMMON),
    # Hunting: new random examples each run, many of them (print_blob: a failure prints how to replay it).
    "thorough": dict(derandomize=False, max_examples=20000, print_blob=True, **_COMMON),
}
for _name, _kw in PROFILES.items():
    settings.register_profile(_name, **_kw)
_profile = os.environ.get("HYPOTHESIS_PROFILE", "dev")
if _profile not in PROFILES:
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE={_profile!r}: the profiles are {', '.join(PROFILES)} "
                            "(tests/conftest.py)")
settings.load_profile(_profile)

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
