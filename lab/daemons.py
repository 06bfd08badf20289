"""Run the real mauth daemons and command-line tools inside lab namespaces.

Daemons are the installed console scripts from the project's virtual
environment, started with `ip netns exec` exactly as an operator would run
them, and logging to the lab's work directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .netns import LabError
from .topology import Lab

BIN = Path(sys.executable).parent


def write_key_file(path: Path, key_id: int = 1, secret: bytes | None = None) -> Path:
    """A protocol v2 key file (mode 0600) with one fresh key."""
    secret = secret or os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# mauth router key\n{key_id} {secret.hex()}\n")
    return path


class Musersd:
    """A musersd process in the lab's router namespace."""

    def __init__(self, lab: Lab, pin_dir: Path, *, listen: str = "0.0.0.0:7575", key_file: Path | None = None,
                 extra: list[str] | None = None, name: str = "musersd"):
        self.lab, self.pin_dir, self.listen, self.key_file = lab, pin_dir, listen, key_file
        self.extra = list(extra or [])
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def argv(self) -> list[str]:
        cmd = [str(BIN / "musersd"), "--pin-dir", str(self.pin_dir), "--listen", self.listen]
        for iface in self.lab.internal_ifaces:
            cmd += ["--iface", iface]
        if self.key_file:
            cmd += ["--key-file", str(self.key_file)]
        return cmd + self.extra

    def start(self, timeout: float = 60.0) -> "Musersd":
        self.starts += 1
        mark = len(self.log())
        self.proc = self.lab.spawn(self.lab.router.ns, self.argv(), self.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "serving on" in self.log()[mark:]:
                return self
            if self.proc.poll() is not None:
                raise LabError(f"musersd exited with {self.proc.returncode}: {self.log()[mark:][-1500:]}")
            time.sleep(0.05)
        raise LabError(f"musersd did not start within {timeout} s: {self.log()[mark:][-1500:]}")

    def log(self) -> str:
        return self.lab.log(self.name)

    def signal(self, sig: int) -> None:
        # `ip netns exec` execs the command, so the Popen pid is musersd itself.
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def wait_log(self, text: str, after: int = 0, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tail = self.log()[after:]
            if text in tail:
                return tail
            time.sleep(0.05)
        raise LabError(f"musersd never logged {text!r}: {self.log()[after:][-1500:]}")


def mauthctl(lab: Lab, ns: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run mauthctl in namespace `ns`; returns the completed process (never raises on exit status)."""
    return subprocess.run(["ip", "netns", "exec", ns, str(BIN / "mauthctl"), *args],
                          capture_output=True, text=True, timeout=timeout)
