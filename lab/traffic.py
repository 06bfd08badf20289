"""Multicast senders and receivers bound inside lab namespaces.

A `Sender` is a UDP socket opened inside a host's namespace, bound to one of
that host's addresses (the source the router will see) with the multicast
TTL of our choice. A `Receiver` holds one socket per group, joined on the
receiving host's interface, and counts datagrams per (source, group).
Payloads carry a tag so stray traffic (there should be none) is not counted.
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


class Sender:
    def __init__(self, ns: str, source: str, *, port: int = PORT):
        self.ns = ns
        self.source = source
        self.port = port
        with inside(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((source, 0))
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        self.sent: Counter = Counter()

    def send(self, group: str, count: int = 1, *, ttl: int = 8, size: int = 64, rate: float | None = None) -> None:
        """Send `count` datagrams to `group` with `ttl`; at most `rate` per second if given."""
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        payload = TAG + b"\0" * max(0, size - len(TAG))
        gap = 1.0 / rate if rate else 0.0
        start = time.monotonic()
        for i in range(count):
            self.sock.sendto(payload, (group, self.port))
            if gap:
                delay = start + (i + 1) * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self.sent[(self.source, group)] += count

    def close(self) -> None:
        self.sock.close()


class Receiver:
    def __init__(self, ns: str, iface_addr: str, groups: list[str], *, port: int = PORT):
        self.ns = ns
        self.socks: dict[socket.socket, str] = {}
        self.counts: Counter = Counter()
        with inside(ns):
            for group in groups:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind((group, port))
                mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface_addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                s.setblocking(False)
                self.socks[s] = group

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
                        data, (src, _) = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if data.startswith(TAG):
                        self.counts[(src, self.socks[s])] += 1
        return self.counts

    def got(self, source: str, group: str) -> int:
        return self.counts[(str(ipaddress.ip_address(source)), group)]

    def reset(self) -> None:
        self.drain(quiet=0.1)
        self.counts.clear()

    def close(self) -> None:
        for s in self.socks:
            s.close()
