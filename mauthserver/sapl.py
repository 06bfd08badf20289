"""The SAP listener: sockets joined to the SAP groups, feeding the session directory.

Strategy: a thin shell. It owns the sockets and the group memberships and
hands every datagram, with its sender, to a callback (the mediator, which
runs `sap.directory.Directory`); it never parses anything itself.

* One socket per address family, bound to the SAP port (9875, RFC 2974 §3)
  on the wildcard address with SO_REUSEADDR, so that other SAP tools on the
  host can listen too. IP_MULTICAST_ALL is turned off, so the socket gets the
  groups it joined and no others that some other program joined.
* Groups are joined on every interface that is up and multicast-capable
  (or on the `--sap-iface` list): a router has several networks and an
  announcement may arrive on any of them. Interfaces are looked up with
  ioctls on the socket, which see the socket's own network namespace.
  `rescan()` (called periodically) joins interfaces that appeared later.
* Default groups: the IPv4 global SAP group 224.2.127.254, the
  administratively scoped 239.255.255.255 (local scope, RFC 2365) and
  239.195.255.255 (organization-local scope), and the IPv6 groups
  ff0X::2:7ffe for link-local, site-local, organization-local and global
  scope. A family whose sockets cannot be made (IPv6 disabled) is skipped
  with a warning; a group that cannot be joined on an interface is counted.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from mauthcore.constants import SAP_GROUP_LINK_LOCAL, SAP_GROUPS, SAP_PORT

log = logging.getLogger("mauthserver.sap")

# Heard by default: every routable SAP group, and IPv6's link-local one (never routed, heard on the link).
DEFAULT_SAP_GROUPS = (*SAP_GROUPS[:3], SAP_GROUP_LINK_LOCAL, *SAP_GROUPS[3:])

_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IPV6_MULTICAST_ALL = 29


def parse_groups(texts) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for text in texts:
        try:
            addr = ipaddress.ip_address(str(text).strip())
        except ValueError:
            raise ValueError(f"SAP group {text!r} is not an IP address") from None
        if not addr.is_multicast:
            raise ValueError(f"SAP group {addr} is not a multicast address")
        if addr not in out:
            out.append(addr)
    return out


def _iface_flags(sock: socket.socket, name: str) -> int:
    req = struct.pack("16sh14x", name.encode()[:15], 0)
    res = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, req)
    return struct.unpack("16sh14x", res)[1]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: SapListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr) -> None:
        self.listener.counters["packets"] += 1
        self.listener.on_packet(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.listener.counters["socket_errors"] += 1


class SapListener:
    def __init__(self, groups, on_packet: Callable[[bytes, tuple], None], *, port: int = SAP_PORT,
                 ifaces: list[str] | None = None) -> None:
        self.groups = parse_groups(groups)
        self.on_packet = on_packet
        self.port = port
        self.ifaces = list(ifaces) if ifaces else None
        self._socks: dict[int, socket.socket] = {}
        self._transports: list[asyncio.BaseTransport] = []
        self.joined: set[tuple[str, str]] = set()  # (group, iface)
        self.counters = {"packets": 0, "socket_errors": 0, "join_errors": 0, "joins": 0}

    def _make_socket(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
                except OSError:
                    pass
                sock.bind(("::", self.port))
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
                sock.bind(("0.0.0.0", self.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        """Open the sockets and join the groups; raise OSError if no socket could be opened."""
        loop = asyncio.get_running_loop()
        families = sorted({socket.AF_INET if g.version == 4 else socket.AF_INET6 for g in self.groups})
        errors = []
        for family in families:
            try:
                sock = self._make_socket(family)
            except OSError as exc:
                name = "IPv4" if family == socket.AF_INET else "IPv6"
                errors.append(f"{name}: {exc.strerror or exc}")
                log.warning("cannot listen for %s SAP on port %d: %s; skipping %s groups", name, self.port,
                            exc.strerror or exc, name)
                continue
            self._socks[family] = sock
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
            self._transports.append(transport)
        if not self._socks:
            raise OSError(errno.EADDRNOTAVAIL, f"cannot listen for SAP on port {self.port} ({'; '.join(errors)})")
        self.rescan()
        log.info("listening for SAP on port %d, groups %s", self.port, ", ".join(str(g) for g in self.groups))

    def _candidate_ifaces(self, sock: socket.socket) -> list[tuple[int, str]]:
        out = []
        for index, name in socket.if_nameindex():
            if self.ifaces is not None:
                if name in self.ifaces:
                    out.append((index, name))
                continue
            try:
                flags = _iface_flags(sock, name)
            except OSError:
                continue
            if flags & _IFF_UP and flags & _IFF_MULTICAST and not flags & _IFF_LOOPBACK:
                out.append((index, name))
        return out

    def rescan(self) -> int:
        """Join the groups on interfaces not joined yet; return how many memberships were added."""
        added = 0
        for group in self.groups:
            family = socket.AF_INET if group.version == 4 else socket.AF_INET6
            sock = self._socks.get(family)
            if sock is None:
                continue
            for index, name in self._candidate_ifaces(sock):
                if (str(group), name) in self.joined:
                    continue
                try:
                    if family == socket.AF_INET:
                        mreq = struct.pack("4s4si", group.packed, b"\0\0\0\0", index)
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                    else:
                        mreq = struct.pack("16sI", group.packed, index)
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        self.counters["join_errors"] += 1
                        log.debug("cannot join SAP group %s on %s: %s", group, name, exc.strerror)
                        continue
                self.joined.add((str(group), name))
                self.counters["joins"] += 1
                added += 1
                log.debug("joined SAP group %s on %s", group, name)
        # Forget interfaces that went away, so that they are joined again if they come back.
        present = {name for _, name in socket.if_nameindex()}
        self.joined = {(g, i) for g, i in self.joined if i in present}
        return added

    def close(self) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()
        self._socks.clear()
