"""Helpers for the mauthserver lab tests: the real daemons, run as an operator would.

musersd and mauthserver are the installed console scripts, started with
`ip netns exec` in the router namespace (so mauthserver's SAP socket hears
what arrives on the router's interfaces), and killed with real signals.
The API is reached on the router namespace's loopback: API calls from the
test thread run inside that namespace (`inside()`), mauthctl runs there with
`ip netns exec`. Nothing leaves the lab's namespaces.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.netns import LabError, inside
from lab.topology import Lab
from mauthclient.api import ApiClient, ApiError, Unreachable
from musersd.protocol.keys import load_keys
from musersd.protocol.udp import RouterClient

BIN = Path(sys.executable).parent
API_PORT = 7580
ROUTER_PORT = 7575


def write_secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def make_secrets(workdir: Path) -> tuple[Path, Path]:
    key = write_secret(workdir / "router.key", f"1 {secrets.token_hex(32)}\n")
    token = write_secret(workdir / "api.token", secrets.token_urlsafe(32) + "\n")
    return key, token


class Proc:
    """A daemon in the router namespace, logging to <workdir>/<name>.log."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._mark = 0

    def argv(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def log(self, since_start: bool = False) -> str:
        text = self.lab.log(self.name)
        return text[self._mark:] if since_start else text

    def spawn(self) -> None:
        self._mark = len(self.lab.log(self.name))
        self.starts += 1
        self.proc = self.lab.spawn(self.lab.router.ns, self.argv(), self.name)

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(since_start=True):
                return
            if self.proc.poll() is not None:
                raise LabError(f"{self.name} exited with {self.proc.returncode}: {self.log(True)[-2000:]}")
            time.sleep(0.05)
        raise LabError(f"{self.name} never logged {text!r}: {self.log(True)[-2000:]}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # `ip netns exec` execs: the pid is the daemon's
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=20)


class MusersdProc(Proc):
    def __init__(self, lab: Lab, pin_dir: Path, key_file: Path, *, port: int = ROUTER_PORT,
                 ifaces: list[str] | None = None, name: str = "musersd") -> None:
        super().__init__(lab, name)
        self.pin_dir, self.key_file, self.port = pin_dir, key_file, port
        self.ifaces = ifaces or lab.internal_ifaces

    def argv(self) -> list[str]:
        cmd = [str(BIN / "musersd"), "--pin-dir", str(self.pin_dir), "--listen", f"0.0.0.0:{self.port}",
               "--key-file", str(self.key_file)]
        for iface in self.ifaces:
            cmd += ["--iface", iface]
        return cmd

    def start(self) -> "MusersdProc":
        self.spawn()
        self.wait_log("serving on", timeout=60)
        return self

    def client(self) -> RouterClient:
        with inside(self.lab.router.ns):
            return RouterClient("127.0.0.1", self.port, load_keys(self.key_file), timeout=0.2, tries=10,
                                max_timeout=1.0)

    def rules(self) -> dict[tuple[str, str], int]:
        """What the router's filter holds, read directly from musersd: (source, group) -> max TTL."""
        c = self.client()
        try:
            with inside(self.lab.router.ns):
                return {(str(e.rule.source), str(e.rule.group)): e.rule.max_ttl for e in c.list_all()}
        finally:
            c.close()


class MauthserverProc(Proc):
    def __init__(self, lab: Lab, key_file: Path, token_file: Path, *, routers: dict[str, str],
                 db: Path | None = None, extra: list[str] | None = None) -> None:
        super().__init__(lab, "mauthserver")
        self.key_file, self.token_file = key_file, token_file
        self.routers = routers
        self.db = db or lab.workdir / "mauthserver.db"
        self.extra = list(extra or [])
        self.url = f"http://127.0.0.1:{API_PORT}"

    def argv(self) -> list[str]:
        cmd = [str(BIN / "mauthserver"), "--db", str(self.db), "--api", f"127.0.0.1:{API_PORT}",
               "--token-file", str(self.token_file), "--key-file", str(self.key_file),
               "--probe-interval", "0.5", "--retry-max", "1", "--router-timeout", "0.1",
               "--router-tries", "4", "--log-level", "debug"]
        for name, addr in self.routers.items():
            cmd += ["--router", f"{name}={addr}"]
        return cmd + self.extra

    def start(self, timeout: float = 30.0) -> "MauthserverProc":
        self.spawn()
        self.wait_log("ready:", timeout=timeout)
        return self

    def api(self) -> ApiClient:
        return ApiClient(self.url, self.token_file.read_text().strip(), timeout=10, user="pytest")

    def call(self, method: str, *args, **kwargs):
        """Call an ApiClient method from inside the router namespace."""
        with inside(self.lab.router.ns):
            return getattr(self.api(), method)(*args, **kwargs)

    def ctl(self, *args: str, ns: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """mauthctl --server ... ARGS, run in the router namespace."""
        cmd = ["ip", "netns", "exec", ns or self.lab.router.ns, str(BIN / "mauthctl"), "--server", self.url,
               "--token-file", str(self.token_file), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def wait_for(self, what, predicate, timeout: float = 30.0, interval: float = 0.1):
        """Poll `what()` (an API call) until `predicate(result)`; return the last result."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = what()
            except (ApiError, Unreachable) as exc:
                last = exc
            else:
                if predicate(last):
                    return last
            if self.proc.poll() is not None:
                raise LabError(f"mauthserver exited with {self.proc.returncode}: {self.log(True)[-2000:]}")
            time.sleep(interval)
        raise AssertionError(f"timed out waiting; last answer: {str(last)[:2000]}\n"
                             f"mauthserver log: {self.log(True)[-3000:]}")

    def converged(self, timeout: float = 30.0) -> list[dict]:
        """Wait until every router is up with nothing pending; return the rules."""
        self.wait_for(lambda: self.call("routers"),
                      lambda rs: all(r["state"] == "up" and r["pending"] == 0 for r in rs), timeout)
        return self.call("rules")


def announce(lab: Lab, ns: str, sdp_file: Path, *args: str) -> subprocess.CompletedProcess:
    """mauthctl announce SDP_FILE ARGS in namespace `ns`."""
    cmd = ["ip", "netns", "exec", ns, str(BIN / "mauthctl"), "announce", str(sdp_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc
