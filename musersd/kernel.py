"""Does this kernel route multicast? One probe, asked of the kernel itself.

Strategy: a multicast routing daemon (smcroute, pimd, FRR's pimd) becomes the
kernel's multicast router with MRT_INIT on a raw IGMP socket (MRT6_INIT on a raw
ICMPv6 socket for IPv6). A kernel built without CONFIG_IP_MROUTE (or
CONFIG_IPV6_MROUTE) answers ENOPROTOOPT; any other answer means the code is
there. The probe runs on a short-lived thread that first moves itself into a
network namespace of its own (unshare(CLONE_NEWNET) affects only the calling
thread), so it never competes with a routing daemon already running here: only
one socket per namespace may hold MRT_INIT, and the throwaway namespace dies
with the thread. Without the right to make a namespace the probe asks in the
current one, where "address in use" (a daemon holds it) also means "supported".

Reading /proc/config.gz would say how the kernel was built, not what it does,
and many kernels do not carry it. The socket option is what smcrouted itself
runs into. Where the probe cannot ask (no CAP_NET_RAW, as under musersd's
systemd unit, whose bounding set holds CAP_SYS_ADMIN and CAP_NET_ADMIN only),
the answer comes from /proc/net/ip_mr_vif and /proc/net/ip6_mr_vif, which a
kernel with multicast routing keeps in every network namespace and any user
may look for.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
MRT_INIT = 200  # <linux/mroute.h>: MRT_BASE
MRT6_INIT = 200  # <linux/mroute6.h>: MRT6_BASE
IPPROTO_ICMPV6 = 58

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class MulticastRouting:
    """What this kernel can do; `release` is `uname -r`."""

    ipv4: bool
    ipv6: bool
    release: str

    def missing(self, ipv6: bool = True) -> str | None:
        """What this kernel cannot do, in one clause naming the kernel options, or None."""
        missing = []
        if not self.ipv4:
            missing.append(("IPv4", "CONFIG_IP_MROUTE"))
        if ipv6 and not self.ipv6:
            missing.append(("IPv6", "CONFIG_IPV6_MROUTE"))
        if not missing:
            return None
        what = " and ".join(m[0] for m in missing)
        options = " and ".join(m[1] for m in missing)
        return f"kernel {self.release} cannot route {what} multicast (built without {options})"

    def problem(self, ipv6: bool = True) -> str | None:
        """For the lab: one sentence naming what is missing and how to get it, or None when nothing is."""
        missing = self.missing(ipv6)
        if missing is None:
            return None
        wanted = " and ".join(o + "=y" for o in ("CONFIG_IP_MROUTE", "CONFIG_IPV6_MROUTE") if o in missing)
        return (f"{missing}: run the lab under a Debian kernel with `python -m lab.vm -- COMMAND` "
                f"(`make test` and `make demo` do so by themselves), or boot a kernel built with {wanted}")


def _try(family: int, proto: int, level: int, option: int) -> bool | None:
    """True: the kernel has the multicast routing code; False: it has not; None: could not ask."""
    try:
        s = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError:
        return None  # no raw sockets (not root, or no such family)
    try:
        s.setsockopt(level, option, 1)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
            return False
        return exc.errno == errno.EADDRINUSE  # someone else is the multicast router here
    finally:
        s.close()
    return True


def _probe() -> tuple[bool | None, bool | None]:
    v4 = _try(socket.AF_INET, socket.IPPROTO_IGMP, socket.IPPROTO_IP, MRT_INIT)
    v6 = _try(socket.AF_INET6, IPPROTO_ICMPV6, socket.IPPROTO_IPV6, MRT6_INIT)
    return v4, v6


def multicast_routing() -> MulticastRouting:
    """Ask the kernel whether it routes IPv4 and IPv6 multicast (best with CAP_NET_RAW, see above)."""
    result: list[tuple[bool | None, bool | None]] = []

    def worker() -> None:
        _libc.unshare(CLONE_NEWNET)  # failing that, ask in the current namespace
        result.append(_probe())

    t = threading.Thread(target=worker, name="mroute-probe", daemon=True)
    t.start()
    t.join()
    v4, v6 = result[0] if result else (None, None)
    if v4 is None:
        v4 = os.path.exists("/proc/net/ip_mr_vif")
    if v6 is None:
        v6 = os.path.exists("/proc/net/ip6_mr_vif")
    return MulticastRouting(ipv4=v4, ipv6=v6, release=os.uname().release)
