"""The namespace lab: sender hosts -> router (smcrouted + mauth) -> receivers.

    s1 (192.0.2.0/26)    ---veth--- in0 \\                     / out0 ---veth--- r1 (198.51.100.0/26)
    s2 (192.0.2.64/26)   ---veth--- in1  >  router namespace  <   out1 ---veth--- r2 (198.51.100.64/26)
    ...                                 /   smcrouted, XDP    \\

With `ipv6=True` every link also gets IPv6: 2001:db8:0:k::/64 for sender k
(router ::1, each IPv4 host address .N twinned as ::N in hex, see `twin6`),
2001:db8:1:j::/64 for receiver j (router ::1, host ::2), and the router
forwards IPv6, multicast included: smcrouted installs IPv6 (S,G) and (*,G)
routes from the same `Route`s as IPv4 ones (`ip -6 mroute show` lists them),
and `Sender`/`Receiver` speak IPv6 when given IPv6 addresses.

Every address is from the documentation ranges (RFC 5737, RFC 3849) and exists only
inside the lab's namespaces; nothing is ever sent anywhere else. The router
forwards multicast for real: the kernel's multicast routing, driven by a real
smcrouted from Debian running in the router namespace with the lab's routes.
(S,G) routes are installed by smcrouted at start-up, so no packet of a test
flow is lost to the kernel's cache-miss queue; (*,G) routes are available too
and resolve on the first packet, as on a real router.

`with Lab(...) as lab:` builds everything and removes every namespace and
process on the way out, whatever happened inside.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from itertools import count
from pathlib import Path

from musersd.kernel import MulticastRouting, multicast_routing

from . import netns
from .netns import LabError, patience, sh
from .traffic import Receiver, Sender

_seq = count()


@cache
def kernel_routing() -> MulticastRouting:
    """Whether this kernel routes multicast: asked once per process, since the kernel cannot change under it."""
    return multicast_routing()


def _v6(text: str) -> str:
    """An IPv6 address in its canonical (compressed) text form, as sockets report it."""
    return str(ipaddress.IPv6Address(text))


def twin6(address: str) -> str:
    """The IPv6 address an `ipv6=True` lab gives the sender host that has IPv4 `address`.

    192.0.2.N sits on sender link N // 64 and is twinned as 2001:db8:0:{N // 64}::{N:x},
    e.g. twin6("192.0.2.10") == "2001:db8::a", twin6("192.0.2.70") == "2001:db8:0:1::46".
    """
    ip = ipaddress.IPv4Address(address)
    if ip not in ipaddress.IPv4Network("192.0.2.0/24"):
        raise LabError(f"{address} is not a lab sender address (192.0.2.0/24)")
    last = int(ip) & 0xFF
    return _v6(f"2001:db8:0:{last // 64:x}::{last:x}")


def _canonical(address: str) -> str:
    """`address` in the text form sockets and the lab use (IPv6 compressed)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise LabError(f"{address!r} is not an IPv4 or IPv6 address") from None


@dataclass
class Host:
    role: str  # name in the lab: "s1", "r1", "router", ...
    ns: str  # namespace name
    iface: str = "eth0"  # host side of its link to the router
    addrs: list[str] = field(default_factory=list)
    router_iface: str = ""
    router_addr: str = ""
    prefix: int = 26
    addrs6: list[str] = field(default_factory=list)  # with ipv6=True: 2001:db8::/32 documentation addresses
    router_addr6: str = ""


@dataclass(frozen=True)
class Route:
    group: str
    source: str | None = None  # None: a (*,G) route

    def __str__(self) -> str:
        return f"({self.source or '*'}, {self.group})"


class Lab:
    """A router with `senders` internal hosts and `receivers` external hosts."""

    def __init__(
        self,
        senders: dict[str, list[str]] | None = None,
        receivers: tuple[str, ...] = ("r1",),
        routes: list[Route] | None = None,
        *,
        workdir: str | os.PathLike | None = None,
        smcroute: bool = True,
        ipv6: bool = False,
        forwarding: bool = False,
    ):
        self.tag = f"{netns.PREFIX}{os.getpid()}-{next(_seq)}"
        self.senders: dict[str, Host] = {}
        self.receivers: dict[str, Host] = {}
        self.router = Host("router", f"{self.tag}-rt")
        self.routes = list(routes or [])
        self.forwarding = forwarding
        self.use_smcroute = smcroute and forwarding
        self.ipv6 = ipv6
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.procs: list[subprocess.Popen] = []
        self._sockets: list = []
        senders = senders if senders is not None else {"s1": ["192.0.2.10"]}
        if len(senders) > 4 or len(receivers) > 4:
            raise LabError("the lab has room for at most 4 sender and 4 receiver hosts")
        for i, (role, addrs) in enumerate(senders.items()):
            net = ipaddress.IPv4Network(f"192.0.2.{64 * i}/26")
            for a in addrs:
                if ipaddress.IPv4Address(a) not in net or int(ipaddress.IPv4Address(a)) - int(net[0]) < 2:
                    raise LabError(f"sender address {a} of {role} must be a host of {net} above .1")
            # IPv6 twin of each IPv4 address: 192.0.2.N on in{i} -> 2001:db8:0:{i}::N.
            v6 = [twin6(a) for a in addrs] if ipv6 else []
            self.senders[role] = Host(role, f"{self.tag}-{role}", addrs=list(addrs),
                                      router_iface=f"in{i}", router_addr=str(net[1]), addrs6=v6,
                                      router_addr6=_v6(f"2001:db8:0:{i}::1") if ipv6 else "")
        for j, role in enumerate(receivers):
            net = ipaddress.IPv4Network(f"198.51.100.{64 * j}/26")
            self.receivers[role] = Host(role, f"{self.tag}-{role}", addrs=[str(net[2])],
                                        router_iface=f"out{j}", router_addr=str(net[1]),
                                        addrs6=[_v6(f"2001:db8:1:{j}::2")] if ipv6 else [],
                                        router_addr6=_v6(f"2001:db8:1:{j}::1") if ipv6 else "")

    # ---------------------------------------------------------------- build

    @property
    def internal_ifaces(self) -> list[str]:
        return [h.router_iface for h in self.senders.values()]

    @property
    def hosts(self) -> list[Host]:
        return [self.router, *self.senders.values(), *self.receivers.values()]

    def host_of(self, source: str) -> Host:
        source = _canonical(source)
        for h in self.senders.values():
            if source in h.addrs or source in h.addrs6:
                return h
        raise LabError(f"no sender host has address {source}")

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.forwarding:
            problem = kernel_routing().problem(ipv6=self.ipv6)
            if problem:  # fail at once: smcrouted would only refuse every route, 15 s later
                raise LabError(problem)
        netns.sweep_stale()
        for h in self.hosts:
            netns.add(h.ns)
            if self.ipv6:
                # Static documentation addresses only: no router advertisements,
                # no autoconfiguration, no duplicate address detection delay.
                for conf in ("all", "default"):
                    for key, value in (("accept_ra", 0), ("autoconf", 0), ("accept_dad", 0)):
                        sh("sysctl", "-qw", f"net.ipv6.conf.{conf}.{key}={value}", ns=h.ns)
            else:
                # IPv4 lab: no IPv6 autoconfiguration or MLD chatter on the links.
                sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=h.ns)
                sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=h.ns)
        rt = self.router.ns
        if self.ipv6:
            sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=rt)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=rt)
        sh("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", ns=rt)
        sh("sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0", ns=rt)
        for h in [*self.senders.values(), *self.receivers.values()]:
            sh("ip", "link", "add", h.iface, "netns", h.ns, "type", "veth",
               "peer", "name", h.router_iface, "netns", rt)
            sh("ip", "addr", "add", f"{h.router_addr}/{h.prefix}", "dev", h.router_iface, ns=rt)
            sh("ip", "link", "set", h.router_iface, "up", ns=rt)
            for a in h.addrs:
                sh("ip", "addr", "add", f"{a}/{h.prefix}", "dev", h.iface, ns=h.ns)
            sh("ip", "link", "set", h.iface, "up", ns=h.ns)
            sh("ip", "route", "add", "default", "via", h.router_addr, ns=h.ns)
            sh("ip", "route", "add", "224.0.0.0/4", "dev", h.iface, ns=h.ns)
            if self.ipv6:
                sh("ip", "-6", "addr", "add", f"{h.router_addr6}/64", "dev", h.router_iface, "nodad", ns=rt)
                for a in h.addrs6:
                    sh("ip", "-6", "addr", "add", f"{a}/64", "dev", h.iface, "nodad", ns=h.ns)
                sh("ip", "-6", "route", "add", "default", "via", h.router_addr6, ns=h.ns)
        if self.use_smcroute:
            self._start_smcroute()

    def smcroute_conf(self) -> str:
        """smcrouted's configuration: every lab link a multicast interface, one mroute line per route.

        IPv4 and IPv6 routes use the same lines (smcrouted tells them apart by
        the addresses); the kernel keeps them in two tables, `ip mroute` and
        `ip -6 mroute`.
        """
        lines = ["# mauth lab: written by lab/topology.py"]
        for h in [*self.senders.values(), *self.receivers.values()]:
            lines.append(f"phyint {h.router_iface} enable")
        outs = " ".join(h.router_iface for h in self.receivers.values())
        for r in self.routes:
            group = self._route_group(r)
            if r.source is None:
                for h in self.senders.values():
                    lines.append(f"mroute from {h.router_iface} group {group} to {outs}")
            else:
                source = _canonical(r.source)
                if ipaddress.ip_address(source).version != ipaddress.ip_network(group, strict=False).version:
                    raise LabError(f"route {r} mixes IPv4 and IPv6")
                inbound = self.host_of(source).router_iface
                lines.append(f"mroute from {inbound} source {source} group {group} to {outs}")
        return "\n".join(lines) + "\n"

    def _route_group(self, route: Route) -> str:
        """The route's group (or group/len) checked: multicast, and IPv6 only in an IPv6 lab."""
        try:
            net = ipaddress.ip_network(route.group, strict=False)
        except ValueError:
            raise LabError(f"route {route}: {route.group!r} is not a multicast group") from None
        if not net.is_multicast:
            raise LabError(f"route {route}: {route.group} is not a multicast group")
        if net.version == 6 and not self.ipv6:
            raise LabError(f"route {route} is IPv6, which needs Lab(ipv6=True)")
        return route.group if "/" in route.group else str(net.network_address)

    def _start_smcroute(self) -> None:
        conf = self.workdir / "smcroute.conf"
        conf.write_text(self.smcroute_conf())
        self.smcroute_sock = self.workdir / "smcroute.sock"
        self.spawn(self.router.ns, ["smcrouted", "-n", "-N", "-f", str(conf), "-u", str(self.smcroute_sock),
                                    "-P", str(self.workdir / "smcroute.pid"), "-l", "info"], "smcrouted")
        want = sum(1 for r in self.routes if r.source is not None)
        wait = patience(15)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise LabError(f"smcrouted exited: {(self.workdir / 'smcrouted.log').read_text()[-500:]}")
            if self.smcroute_sock.exists() and len(self.kernel_mroutes()) >= want:
                return
            time.sleep(0.05)
        raise LabError(f"smcrouted did not install the lab's routes within {wait:.0f} s")

    def kernel_mroutes(self) -> list[str]:
        """The router kernel's multicast forwarding cache, as `ip mroute show` lines (and `ip -6 mroute
        show` lines after them in an IPv6 lab)."""
        out = sh("ip", "mroute", "show", ns=self.router.ns, check=False)
        if self.ipv6:
            out += sh("ip", "-6", "mroute", "show", ns=self.router.ns, check=False)
        return [line for line in out.splitlines() if line.strip()]

    def spawn(self, ns: str, cmd: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        """Start a long-running process in `ns`, logging to <workdir>/<name>.log."""
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for s in self._sockets:
            try:
                s.close()
            except Exception:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for h in self.hosts:
            netns.delete(h.ns)
        if self._own_workdir and not os.environ.get("MAUTH_KEEP_LAB"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- traffic

    def sender(self, source: str) -> Sender:
        """A socket on the sender host that has `source` (IPv4, or IPv6 in an IPv6 lab), bound to it."""
        host = self.host_of(source)
        s = Sender(host.ns, _canonical(source), iface=host.iface)
        self._sockets.append(s)
        return s

    def receiver(self, groups: list[str], role: str | None = None) -> Receiver:
        """Where a test sees what the filter let through, joined to `groups` (IPv4 and IPv6 alike).

        In a forwarding lab: a receiver on host `role` (default: the first),
        behind the router, that gets what the kernel forwarded. Otherwise (or
        with role="router"): a receiver on the router itself, joined on every
        guarded link, that gets exactly the packets the filter passed, with
        the TTL they arrived with (not yet decremented).
        """
        if role == "router" or (role is None and not self.forwarding):
            links = [(h.router_addr, h.router_iface) for h in self.senders.values()]
            r = Receiver(self.router.ns, links[0][0], groups, iface=links[0][1], links=links)
        else:
            host = self.receivers[role] if role else next(iter(self.receivers.values()))
            r = Receiver(host.ns, host.addrs[0], groups, iface=host.iface)
        self._sockets.append(r)
        return r

    def deliver(self, flows, count: int, *, ttl: int = 4) -> dict:
        """Send `count` datagrams per (source, group) of `flows`; what `receiver()` got, per flow."""
        rx = self.receiver(sorted({g for _, g in flows}))
        for src, grp in flows:
            self.sender(src).send(grp, count, ttl=ttl)
        counts = rx.drain()
        rx.close()
        return {f: counts[f] for f in flows}

    def router_env(self) -> dict:
        return dict(os.environ)
