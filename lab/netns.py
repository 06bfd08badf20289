"""Network namespace plumbing for the lab: create, enter, run in, remove.

Strategy: namespaces are made with iproute2 (`ip netns add`, so they are
visible to `ip netns exec` and to operators poking at a live lab) and entered
from Python with setns(2) on the calling thread only. Sockets opened while
inside stay in that namespace after we leave, so a test can hold a sender
socket in one namespace and a receiver socket in another without any helper
process. Every name starts with a prefix carrying our PID, so a crashed run's
leftovers can be recognised and swept by the next run.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
PREFIX = "mauth"

_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    pass


def patience(seconds: float) -> float:
    """`seconds` of waiting, scaled for where the lab runs.

    Everything CPU-bound (Python start-up, the verifier loading the filter,
    packet generators) runs about 25 times slower in the emulated (TCG) guest of
    `lab.vm` than on the host, so a wait sized for the host is multiplied
    there (by 10, or by MAUTH_LAB_PATIENCE when set) instead of being raised
    everywhere.
    """
    factor = os.environ.get("MAUTH_LAB_PATIENCE")
    if factor:
        try:
            return seconds * max(1.0, float(factor))
        except ValueError:
            raise LabError(f"MAUTH_LAB_PATIENCE={factor!r} is not a number") from None
    in_vm = os.environ.get("MAUTH_VM", "")  # "<release> <accel>", set by lab.vm in its guest
    return seconds * (10 if in_vm.endswith("tcg") else 1)


def sh(*args: str, check: bool = True, ns: str | None = None, capture: bool = True) -> str:
    """Run a command (inside namespace `ns` if given); return stdout."""
    cmd = list(args)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    proc = subprocess.run(cmd, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or '').strip()}")
    return proc.stdout or ""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(err)}")


@contextmanager
def inside(ns: str):
    """Run the body with this thread inside network namespace `ns`."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(str(NETNS_DIR / ns), os.O_RDONLY)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)
        os.close(there)


@contextmanager
def private_bpffs(prefix: str = "mauth-bpffs-"):
    """A bpffs of our own, mounted on a fresh temporary directory, removed afterwards.

    Pins made there are visible from `ip netns exec` children (which get a
    private /sys, hiding /sys/fs/bpf), and everything goes with the unmount.
    """
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix=prefix))
    sh("mount", "-t", "bpf", "bpf", str(base))
    try:
        yield base
    finally:
        sh("umount", "-l", str(base), check=False)
        shutil.rmtree(base, ignore_errors=True)


def add(ns: str) -> None:
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "set", "lo", "up", ns=ns)


def pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split()]


def delete(ns: str) -> None:
    """Kill every process in `ns`, then remove it. Never raises."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        victims = pids(ns)
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not victims:
            break
        for pid in victims:
            _wait_gone(pid, 2.0)
    sh("ip", "netns", "delete", ns, check=False)


def _wait_gone(pid: int, timeout: float) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def existing() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Remove lab namespaces left by runs whose process is gone."""
    removed = []
    for ns in existing():
        m = re.match(rf"{PREFIX}(\d+)-", ns)
        if not m:
            continue
        owner = int(m.group(1))
        try:
            os.kill(owner, 0)
            continue  # still running: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        delete(ns)
        removed.append(ns)
    return removed
