"""Run the real mauth daemons and command-line tools inside lab namespaces.

Daemons are the installed console scripts from the project's virtual
environment, started with `ip netns exec` in the lab's router namespace
exactly as an operator would run them, logging to the lab's work directory
and stopped with real signals. `ip netns exec` execs the command, so the
Popen pid is the daemon's own.

mauthserver's API is served on the router namespace's loopback: API calls
made from Python run inside that namespace (`inside()`), and mauthctl runs
there with `ip netns exec`. Nothing leaves the lab's namespaces.

Every wait and timeout here is given in host seconds and passes through
`lab.netns.patience()`, which stretches it in the emulated guest of `lab.vm`
(where Python and the verifier run about 25 times slower) and leaves it as is on the host.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from mauthclient.api import ApiClient, ApiError, Unreachable
from mauthcore.constants import API_PORT, ROUTER_PORT
from mauthcore.protocol.client import MAX_CALL_SPAN, RetryPolicy
from mauthcore.protocol.errors import LocalProtocolError
from mauthcore.protocol.keys import load_keys
from mauthcore.protocol.udp import RouterClient

from .netns import LabError, inside, patience, sh
from .topology import Lab

BIN = Path(sys.executable).parent


def write_secret(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600 (secrets are never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def write_key_file(path: Path, key_id: int = 1, secret: bytes | None = None) -> Path:
    """A protocol v2 key file (mode 0600) with one fresh key."""
    secret = secret or os.urandom(32)
    return write_secret(path, f"# mauth router key\n{key_id} {secret.hex()}\n")


def make_secrets(workdir: Path) -> tuple[Path, Path]:
    """A router key file and an API token file in `workdir`: (key, token)."""
    key = write_secret(workdir / "router.key", f"1 {secrets.token_hex(32)}\n")
    token = write_secret(workdir / "api.token", secrets.token_urlsafe(32) + "\n")
    return key, token


def client_retry_policy() -> RetryPolicy:
    """The lab's retransmission timer for protocol calls to musersd: 0.2 s doubling to 1 s, 10 tries on the host.

    Stretched by `patience()` where the lab is slow, with as many of the 10
    tries as keep a call within the protocol's bound (MAX_CALL_SPAN, 60 s).
    """
    timeout = patience(0.2)
    max_timeout = max(timeout, min(patience(1.0), MAX_CALL_SPAN / 4))
    for tries in range(10, 1, -1):
        try:
            return RetryPolicy(timeout=timeout, tries=tries, max_timeout=max_timeout)
        except LocalProtocolError:  # longer than the protocol allows: one try fewer
            continue
    return RetryPolicy(timeout=timeout, tries=1, max_timeout=max_timeout)


class Daemon:
    """A daemon in the lab's router namespace, logging to <workdir>/<name>.log."""

    ready_text = ""  # what the daemon logs once it serves

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

    def start(self, timeout: float = 60.0):
        """Spawn the daemon and wait until it logs that it serves (`timeout` in host seconds)."""
        self.spawn()
        self.wait_log(self.ready_text, timeout=timeout)
        return self

    def wait_log(self, text: str, after: int | None = None, timeout: float = 30.0) -> str:
        """Wait until `text` is in the log after offset `after` (default: since the last start); return that tail."""
        start = self._mark if after is None else after
        timeout = patience(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tail = self.log()[start:]
            if text in tail:
                return tail
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"{self.name} exited with {self.proc.returncode}: {tail[-2000:]}")
            time.sleep(0.05)
        raise LabError(f"{self.name} never logged {text!r} within {timeout:g} s: {self.log()[start:][-2000:]}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=patience(10))

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=patience(20))


class Musersd(Daemon):
    """A musersd process in the lab's router namespace, guarding `ifaces` (default: every internal one)."""

    ready_text = "serving on"

    def __init__(self, lab: Lab, pin_dir: Path, *, listen: str = f"0.0.0.0:{ROUTER_PORT}",
                 key_file: Path | None = None, ifaces: list[str] | None = None, extra: list[str] | None = None,
                 name: str = "musersd"):
        super().__init__(lab, name)
        self.pin_dir, self.listen, self.key_file = pin_dir, listen, key_file
        self.ifaces = list(ifaces) if ifaces else lab.internal_ifaces
        self.extra = list(extra or [])

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def argv(self) -> list[str]:
        cmd = [str(BIN / "musersd"), "--pin-dir", str(self.pin_dir), "--listen", self.listen]
        for iface in self.ifaces:
            cmd += ["--iface", iface]
        if self.key_file:
            cmd += ["--key-file", str(self.key_file)]
        return cmd + self.extra

    def client(self) -> RouterClient:
        """A protocol v2 client of this musersd, its socket opened in the router namespace."""
        policy = client_retry_policy()
        with inside(self.lab.router.ns):
            return RouterClient("127.0.0.1", self.port, load_keys(self.key_file), timeout=policy.timeout,
                                tries=policy.tries, max_timeout=policy.max_timeout)

    def rules(self) -> dict[tuple[str, str], int]:
        """What the router's filter holds, read directly from musersd: (source, group) -> max TTL."""
        c = self.client()
        try:
            with inside(self.lab.router.ns):
                return {(str(e.rule.source), str(e.rule.group)): e.rule.max_ttl for e in c.list_all()}
        finally:
            c.close()


class Mauthserver(Daemon):
    """mauthserver in the router namespace, its API on that namespace's loopback.

    `tuning()` makes it notice router changes within a second (the lab's
    routers are local; its per-request timeout stretched with the rest
    in the guest); `extra` adds or overrides options.
    """

    ready_text = "ready:"
    api_user = "lab"  # the actor mauthserver's audit log records for API calls made from Python

    @staticmethod
    def tuning() -> list[str]:
        return ["--probe-interval", "0.5", "--retry-max", "1", "--router-timeout", f"{patience(0.1):g}",
                "--router-tries", "4", "--log-level", "debug"]

    def __init__(self, lab: Lab, key_file: Path, token_file: Path, *, routers: dict[str, str],
                 db: Path | None = None, api_port: int = API_PORT, extra: list[str] | None = None,
                 name: str = "mauthserver") -> None:
        super().__init__(lab, name)
        self.key_file, self.token_file = key_file, token_file
        self.routers = routers
        self.db = db or lab.workdir / "mauthserver.db"
        self.api_addr = f"127.0.0.1:{api_port}"
        self.extra = list(extra or [])
        self.url = f"http://{self.api_addr}"

    def argv(self) -> list[str]:
        cmd = [str(BIN / "mauthserver"), "--db", str(self.db), "--api", self.api_addr,
               "--token-file", str(self.token_file), "--key-file", str(self.key_file), *self.tuning()]
        for name, addr in self.routers.items():
            cmd += ["--router", f"{name}={addr}"]
        return cmd + self.extra

    def start(self, timeout: float = 30.0) -> Mauthserver:
        return super().start(timeout)

    def api(self) -> ApiClient:
        return ApiClient(self.url, self.token_file.read_text().strip(), timeout=patience(10), user=self.api_user)

    def call(self, method: str, *args, **kwargs):
        """Call an ApiClient method from inside the router namespace."""
        with inside(self.lab.router.ns):
            return getattr(self.api(), method)(*args, **kwargs)

    def ctl(self, *args: str, ns: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """mauthctl --server ... ARGS, run in the router namespace (or `ns`)."""
        return mauthctl(self.lab, ns or self.lab.router.ns, "--server", self.url,
                        "--token-file", str(self.token_file), *args, timeout=timeout)

    def wait_for(self, what, predicate, timeout: float = 30.0, interval: float = 0.1):
        """Poll `what()` (an API call) until `predicate(result)`; return the last result."""
        timeout = patience(timeout)
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
                raise LabError(f"{self.name} exited with {self.proc.returncode}: {self.log(True)[-2000:]}")
            time.sleep(interval)
        raise AssertionError(f"timed out waiting {timeout:g} s; last answer: {str(last)[:2000]}\n"
                             f"{self.name} log: {self.log(True)[-3000:]}")

    def converged(self, timeout: float = 30.0) -> list[dict]:
        """Wait until every router is up with nothing pending; return the rules."""
        self.wait_for(lambda: self.call("routers"),
                      lambda rs: all(r["state"] == "up" and r["pending"] == 0 for r in rs), timeout)
        return self.call("rules")


def mauthctl(lab: Lab, ns: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run mauthctl in namespace `ns`; returns the completed process (never raises on exit status)."""
    return subprocess.run(["ip", "netns", "exec", ns, str(BIN / "mauthctl"), *args],
                          capture_output=True, text=True, timeout=patience(timeout))


def announce(lab: Lab, ns: str, sdp_file: Path, *args: str) -> subprocess.CompletedProcess:
    """mauthctl announce SDP_FILE ARGS in namespace `ns` (returns; never raises on exit status)."""
    return mauthctl(lab, ns, "announce", str(sdp_file), *args)


PIMD = Path(__file__).resolve().parent.parent / ".cache" / "pimd" / "usr" / "sbin" / "pimd"


class Pimd(Daemon):
    """pimd, a PIM-SM router that forwards what receivers joined, in the lab's router namespace.

    Debian's pimd 2.3.2, unpacked by scripts/setup.sh into .cache/pimd (Debian's
    pimd and smcroute packages conflict, so it is never installed); it needs only
    libc, and the guest of `lab.vm` sees the same file over 9p. Unlike smcrouted,
    which forwards what its configuration says whoever joined, pimd is an IGMP
    querier and builds its forwarding state from the reports it reads: a group
    is forwarded out of a receiver link only while a member there reported it.
    Build the lab with `Lab(forwarding=True, smcroute=False)`: one multicast
    routing daemon per namespace (the kernel takes one mroute socket).

    Every lab link is a phyint (`-N`: none other), each running IGMPv3 unless
    `igmp` names a version for it (`{"out1": 2}`). The RP of every group is
    the router itself (`rp-address`, its first sender link's address): PIM-SM
    needs one for (*,G) joins, and with it a directly connected source's
    packets reach joined links without any PIM neighbour. Groups in 232/8 are
    source-specific (PIM-SSM): an IGMPv3 INCLUDE report there joins (S,G);
    outside 232/8 pimd 2.3.2 treats a source-specific record as a join of the
    whole group. pimd 2.3.2 is IPv4 only: no MLD.

    Ready once the kernel lists every phyint as a multicast vif (pimd logs
    nothing fixed at that moment); it logs to <workdir>/pimd.log with IGMP
    debugging, which names every report it accepted.
    """

    def __init__(self, lab: Lab, *, igmp: dict[str, int] | None = None, debug: str = "igmp", name: str = "pimd"):
        super().__init__(lab, name)
        self.igmp = dict(igmp or {})
        self.debug = debug
        self.conf_file = lab.workdir / f"{name}.conf"
        links = [*lab.senders.values(), *lab.receivers.values()]
        self.ifaces = [h.router_iface for h in links]
        unknown = sorted(set(self.igmp) - set(self.ifaces))
        if unknown:
            raise LabError(f"pimd: {', '.join(unknown)} is not a link of the lab's router")
        if any(v not in (2, 3) for v in self.igmp.values()):
            raise LabError("pimd: an interface's IGMP version must be 2 or 3")
        self.rp = next(iter(lab.senders.values())).router_addr

    def conf(self) -> str:
        lines = ["# mauth lab: written by lab/daemons.py"]
        for iface in self.ifaces:
            lines.append(f"phyint {iface} enable igmpv{self.igmp.get(iface, 3)}")
        lines.append(f"rp-address {self.rp} 224.0.0.0/4")
        lines.append("spt-threshold packets 0 interval 100")  # the shortest path at the first packet
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        if not PIMD.exists():
            raise LabError(f"{PIMD} is missing: `make setup` unpacks Debian's pimd there")
        return [str(PIMD), "-f", "-N", "-c", str(self.conf_file), "-s", "debug", f"--debug={self.debug}"]

    def start(self, timeout: float = 30.0) -> Pimd:
        """Write the configuration, spawn pimd and wait until every phyint is a vif (`timeout` in host seconds)."""
        self.conf_file.write_text(self.conf())
        self.spawn()
        timeout = patience(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"pimd exited with {self.proc.returncode}: {self.log(True)[-2000:]}")
            if set(self.ifaces) <= set(self.vifs()):
                return self
            time.sleep(0.1)
        raise LabError(f"pimd did not make {', '.join(self.ifaces)} vifs within {timeout:g} s: "
                       f"{self.log(True)[-2000:]}")

    def vifs(self) -> list[str]:
        """The router kernel's multicast vifs by name (/proc/net/ip_mr_vif)."""
        out = sh("cat", "/proc/net/ip_mr_vif", ns=self.lab.router.ns, check=False)
        return [line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1]
