"""Multicast senders and receivers bound inside lab namespaces.

A `Sender` is a UDP socket opened inside a host's namespace, bound to one of
that host's addresses (the source the router will see) with the multicast
TTL of our choice. A `Receiver` holds one socket per group, joined on the
receiving host's interface, and counts datagrams per (source, group).
Payloads carry a tag so stray traffic (there should be none) is not counted.

A `Receiver` also notes the TTL (hop limit) each datagram arrived with, from
the kernel's ancillary data, so a test sees the router's decrement.

Both speak IPv4 and IPv6, chosen by the address family of the source (for a
`Sender`) or of each group (for a `Receiver`). IPv6 names the outgoing and
the joining interface by index (IPV6_MULTICAST_IF, IPV6_JOIN_GROUP), not by
address as IPv4 does, so both take the host's interface name as well; the
`ttl` of a send is the IPv6 hop limit (IPV6_MULTICAST_HOPS).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections import Counter

from .netns import inside

PORT = 5004
TAG = b"MAUTHLAB"
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)  # Linux <linux/in.h>
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # Linux <linux/if_packet.h>: a frame this host sent
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux <linux/in.h>; Python 3.11 does not export it
_TTL_CMSG = {(socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)}


def is_ipv6(address: str) -> bool:
    """True for an IPv6 address (text), False for IPv4; a clear error for anything else."""
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from None


class Sender:
    def __init__(self, ns: str, source: str, *, port: int = PORT, iface: str = "eth0"):
        self.ns = ns
        self.source = source
        self.port = port
        self.ipv6 = is_ipv6(source)
        with inside(ns):
            if self.ipv6:
                # The interface index must be looked up inside the namespace.
                self.ifindex = socket.if_nametoindex(iface)
                self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                self.sock.bind((source, 0))
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            else:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.bind((source, 0))
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        self.sent: Counter = Counter()

    def _destination(self, group: str) -> tuple:
        if not self.ipv6:
            return (group, self.port)
        # The scope id only matters for link-scope groups (ff02::...); the kernel ignores it otherwise.
        return (group, self.port, 0, self.ifindex)

    def send(self, group: str, count: int = 1, *, ttl: int = 8, size: int = 64, rate: float | None = None) -> None:
        """Send `count` datagrams to `group` with `ttl` (hop limit); at most `rate` per second if given."""
        if is_ipv6(group) != self.ipv6:
            raise ValueError(f"group {group} and source {self.source} are of different address families")
        if self.ipv6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        payload = TAG + b"\0" * max(0, size - len(TAG))
        dest = self._destination(group)
        gap = 1.0 / rate if rate else 0.0
        start = time.monotonic()
        for i in range(count):
            self.sock.sendto(payload, dest)
            if gap:
                delay = start + (i + 1) * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self.sent[(self.source, group)] += count

    def close(self) -> None:
        self.sock.close()


def _ttl(ancillary: list) -> int | None:
    """The TTL or hop limit in a datagram's ancillary data (an int in host byte order)."""
    for level, kind, data in ancillary:
        if (level, kind) in _TTL_CMSG and len(data) >= 4:
            return struct.unpack("@i", data[:4])[0]
    return None


class Receiver:
    """Joined to `groups` on the host's interface: `iface_addr` (IPv4) and `iface` (IPv6, by index).

    `links`, a list of (IPv4 address, interface name), joins every group on
    each of those interfaces instead: a receiver on a router that must hear a
    group on every link it arrives on (the stack drops multicast arriving on
    an interface with no membership). A link-scope IPv6 group gets a socket
    per link, since its address only means something with an interface.

    With `source` (IPv4), each group is joined for that source only
    (IP_ADD_SOURCE_MEMBERSHIP): the host's IGMPv3 report is then an INCLUDE
    record naming the source instead of an any-source EXCLUDE {} one.
    """

    def __init__(self, ns: str, iface_addr: str, groups: list[str], *, port: int = PORT, iface: str = "eth0",
                 links: list[tuple[str, str]] | None = None, source: str | None = None):
        self.ns = ns
        self.source = source
        if source is not None and (is_ipv6(source) or any(is_ipv6(g) for g in groups)):
            raise ValueError("a source-specific Receiver is IPv4 only")
        self.socks: dict[socket.socket, str] = {}
        self.counts: Counter = Counter()
        self.arrival_ttls: Counter = Counter()  # (source, group, ttl as received) -> datagrams
        links = links or [(iface_addr, iface)]
        with inside(ns):
            for group in groups:
                if not is_ipv6(group):
                    socks = [self._join4(group, port, [a for a, _ in links])]
                elif (int(ipaddress.IPv6Address(group)) >> 112) & 0xF <= 2:  # scope: interface- or link-local
                    socks = [self._join6(group, port, [name], scoped=True) for _, name in links]
                else:
                    socks = [self._join6(group, port, [name for _, name in links], scoped=len(links) == 1)]
                for s in socks:
                    s.setblocking(False)
                    self.socks[s] = group

    @staticmethod
    def _socket(family: int) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Room for a whole test's flood before the first read (root may exceed rmem_max).
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return s

    def _join4(self, group: str, port: int, iface_addrs: list[str]) -> socket.socket:
        s = self._socket(socket.AF_INET)
        s.bind((group, port))
        for addr in iface_addrs:
            if self.source is None:
                mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:  # struct ip_mreq_source: group, interface, source
                mreq = socket.inet_aton(group) + socket.inet_aton(addr) + socket.inet_aton(self.source)
                s.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, mreq)
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        return s

    def _join6(self, group: str, port: int, ifaces: list[str], *, scoped: bool) -> socket.socket:
        indexes = [socket.if_nametoindex(i) for i in ifaces]
        s = self._socket(socket.AF_INET6)
        # Bound to the group itself, so the socket only hears that group; a link-scope
        # group needs the interface as its scope id, a wider one joined on several links none.
        s.bind((group, port, 0, indexes[0] if scoped else 0))
        for index in indexes:
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        return s

    def drain(self, quiet: float = 0.3, limit: float = 10.0) -> Counter:
        """Read until nothing arrived for `quiet` seconds; return the cumulative counts."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ready, _, _ = select.select(list(self.socks), [], [], quiet)
            if not ready:
                break
            for s in ready:
                while True:
                    try:
                        data, ancillary, _, peer = s.recvmsg(65535, 64)
                    except BlockingIOError:
                        break
                    if data.startswith(TAG):
                        self.counts[(peer[0], self.socks[s])] += 1
                        self.arrival_ttls[(peer[0], self.socks[s], _ttl(ancillary))] += 1
        return self.counts

    def got(self, source: str, group: str) -> int:
        return self.counts[(str(ipaddress.ip_address(source)), group)]

    def ttls(self, source: str, group: str) -> dict[int, int]:
        """TTL (hop limit) as received -> datagrams, for the flow (source, group)."""
        source = str(ipaddress.ip_address(source))
        return {ttl: n for (src, grp, ttl), n in self.arrival_ttls.items() if (src, grp) == (source, group)}

    def reset(self) -> None:
        self.drain(quiet=0.1)
        self.counts.clear()
        self.arrival_ttls.clear()

    def close(self) -> None:
        for s in self.socks:
            s.close()


class LinkTap:
    """Every tagged IPv4 UDP datagram that arrives on a host's link, joined or not: (source, group, marker) -> count.

    A packet socket (AF_PACKET) on `iface` inside `ns` sees the frames the
    router put on the link before the host's stack decides whether anybody
    there is a member, so a host that never joined still shows what reached
    it. The marker is the payload after the lab's TAG (as text).
    """

    def __init__(self, ns: str, iface: str = "eth0"):
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
            self.sock.bind((iface, ETH_P_IP))
        self.sock.setblocking(False)
        self.counts: Counter = Counter()

    def read(self, wait: float = 0.0) -> bool:
        """Count what arrived, waiting up to `wait` seconds for the first frame; True if anything did."""
        ready, _, _ = select.select([self.sock], [], [], wait)
        if not ready:
            return False
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return True
            if addr[2] == PACKET_OUTGOING or len(data) < 20 or data[9] != socket.IPPROTO_UDP:
                continue
            ihl = (data[0] & 0x0F) * 4
            payload = data[ihl + 8:]
            if payload.startswith(TAG):
                key = (socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]), payload[len(TAG):].decode(
                    errors="replace").rstrip("\0"))
                self.counts[key] += 1

    def got(self, source: str, group: str, marker: str = "") -> int:
        return self.counts[(source, group, marker)]

    def close(self) -> None:
        self.sock.close()
