"""lab.vm for real: a command in the guest, its status, its files, and nothing left behind.

One boot runs a script that checks what a command expects of the guest (its
kernel routes multicast, bpffs is mounted, loopback is up, the host's files
are seen at the same paths, the current directory is shared read-write) and
exits with a status of its own; a second guest that outlives --timeout is
killed. A guest kernel is installed by `make setup` only where the host kernel
cannot route multicast; on a host that routes, the first test checks what
lab.vm does there instead (a clear error for a guest, --if-needed runs here).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import vm
from musersd.kernel import multicast_routing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guest_kernel():
    """The guest kernel, or None on a host that routes multicast and so was given none by `make setup`."""
    try:
        return vm.find_guest_kernel()
    except vm.VMError:
        if multicast_routing().missing() is None:
            return None
        raise


@pytest.fixture(scope="module")
def bootable_guest(guest_kernel):
    """The guest kernel the tests that boot one use. A host whose kernel routes multicast has none, by
    design (`make setup` installs a guest kernel only where the host cannot route): those tests are
    then skipped, here and with that reason, and the test above checks what lab.vm does instead."""
    if guest_kernel is None:
        pytest.skip("this kernel routes multicast, so make setup installed no guest kernel to boot")
    return guest_kernel


def test_without_a_guest_kernel_lab_vm_says_so_and_if_needed_runs_on_the_host(guest_kernel, tmp_path):
    """On a host that routes multicast (no guest kernel installed): one clear error for a guest, and
    --if-needed runs the command right here. Where a guest kernel exists, --if-needed follows
    MAUTH_LAB_KERNEL=host the same way."""
    env_host = {"MAUTH_LAB_KERNEL": "host"} if guest_kernel is not None else {}
    out = _run(["--if-needed", "--", "sh", "-c", "uname -r > where.txt; exit 7"], tmp_path, timeout=60, env=env_host)
    assert out.returncode == 7, out.stderr
    assert (tmp_path / "where.txt").read_text().strip() == os.uname().release
    if guest_kernel is None:
        out = _run(["--", "true"], tmp_path, timeout=60)
        assert out.returncode == 2 and "make setup" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def _left_behind(cwd) -> list[str]:
    """Processes or share directories of a guest started in `cwd` that are still there (QEMU's command
    line names the current directory it shares; the share's spec.json names it too)."""
    procs = subprocess.run(["pgrep", "-af", f"qemu-system.*{cwd}"], capture_output=True, text=True).stdout.split("\n")
    left = [p for p in procs if p.strip()]
    for share in glob.glob("/tmp/mauth-vm-*"):
        try:
            spec = json.loads(Path(share, "spec.json").read_text())
        except (OSError, ValueError):
            continue
        if spec.get("cwd") == str(cwd):
            left.append(share)
    return left


REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    # lab is not installed (the wheel holds the programs only): found through the repository, from any cwd.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "lab.vm", *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})})


def test_a_command_runs_in_the_guest_with_the_host_files_and_its_status_comes_back(bootable_guest, tmp_path):
    guest_kernel = bootable_guest
    (tmp_path / "from-host.txt").write_text("seen\n")
    (tmp_path / "check.sh").write_text(
        "set -e\n"
        "test \"$(uname -r)\" = \"$1\"\n"
        "test -e /proc/net/ip_mr_vif && test -e /proc/net/ip6_mr_vif\n"
        "mountpoint -q /sys/fs/bpf\n"
        "ip -br link show lo | grep -q LOOPBACK,UP\n"
        "test \"$(cat from-host.txt)\" = seen\n"
        "test -n \"$MAUTH_VM\"\n"
        "echo \"$MAUTH_VM\" > from-guest.txt\n"
        "echo to-stdout; echo to-stderr >&2\n"
        "exit 7\n")
    out = _run(["--", "sh", "check.sh", guest_kernel.release], tmp_path, timeout=600)
    assert out.returncode == 7, out.stderr[-3000:]
    assert "to-stdout" in out.stdout and "to-stderr" in out.stderr
    assert (tmp_path / "from-guest.txt").read_text().startswith(guest_kernel.release)
    assert f"guest ({guest_kernel.release}" in out.stderr and "exit status 7" in out.stderr
    assert _left_behind(tmp_path) == []


def test_a_guest_that_outlives_its_timeout_is_killed_and_reported(bootable_guest, tmp_path):
    start = time.monotonic()
    out = _run(["--timeout", "20", "--", "sleep", "3600"], tmp_path, timeout=300)
    assert out.returncode == 124, out.stderr[-3000:]
    assert "did not finish within 20 s" in out.stderr
    assert time.monotonic() - start < 120
    assert _left_behind(tmp_path) == []
