"""Announcing a session with SAP (RFC 2974 §3): what to send, where, how often, and a small sender.

Strategy: the decisions are pure functions (`plan()`: groups, packets,
interval), the sending is a thin blocking shell (`Announcer`, `run()`) whose
sleep and clock are parameters, so tests drive it without waiting.

Where (§3): "SAP announcements MUST be sent on the SAP address for the scope
of the session": 224.2.127.254 for globally scoped IPv4 sessions; for
administratively scoped ones (239/8) "the highest multicast address in the
relevant administrative scope zone": 239.255.255.255 for the IPv4 local scope
239.255/16, 239.195.255.255 for the organization-local scope 239.192/14, and
239.255.255.255 for other 239/8 groups, whose zone we cannot know (the local
scope is the smallest, so the announcement never travels further than the
session). IPv6 sessions go to FF0X::2:7FFE with X the group's scope. A
session with groups in several scopes is announced on each SAP group; one
with groups of both families on the SAP groups of the announcer's family
(an IPv4 announcer cannot send to an IPv6 group).

How often (§3.1): every max(300 s, 8 * size / 4000 bit/s), with the random
offset of step 3 (+-1/3 of the interval) so announcers do not synchronise;
an explicit interval is used as given.

The TTL of the packets (§3): the largest c= TTL of the session for
TTL-scoped sessions; 255 for administratively scoped ones, whose boundary is
the routers' scope zones, not the TTL, and for IPv6 sessions (hop limit
255), whose c= lines carry no TTL because the scope in the group address
bounds them (RFC 8866 §5.7).

Sending IPv6 from a given source: Linux picks the outgoing interface of a
multicast datagram from its routes (one ff00::/8 route per interface), not
from the bound source address, so the announcer sets IPV6_MULTICAST_IF to
the interface that holds the source (found with pyroute2), as
IP_MULTICAST_IF by address does for IPv4.

Deletion (§6): a packet with the T bit, the same message id hash as the
announcement it deletes, and as payload the session's o= line alone.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sap.errors import SDPDecodeError
from sap.sap import SAP_PORT, announcement, deletion, encode, make_msg_id_hash
from sap.sdp import SessionDescription, deletion_payload, parse_sdp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SAP_V4_GLOBAL = ipaddress.IPv4Address("224.2.127.254")
SAP_V4_LOCAL = ipaddress.IPv4Address("239.255.255.255")
SAP_V4_ORG = ipaddress.IPv4Address("239.195.255.255")
_V4_ADMIN = ipaddress.IPv4Network("239.0.0.0/8")
_V4_LOCAL = ipaddress.IPv4Network("239.255.0.0/16")
_V4_ORG = ipaddress.IPv4Network("239.192.0.0/14")
MIN_INTERVAL = 300.0
BANDWIDTH = 4000.0


class AnnounceError(ValueError):
    """The description or the options cannot be announced; one sentence."""


def sap_group_for(group: IPAddress) -> IPAddress:
    """The SAP group announcing a session that uses multicast `group` (RFC 2974 §3)."""
    if group.version == 4:
        if group in _V4_LOCAL:
            return SAP_V4_LOCAL
        if group in _V4_ORG:
            return SAP_V4_ORG
        if group in _V4_ADMIN:
            return SAP_V4_LOCAL
        return SAP_V4_GLOBAL
    scope = group.packed[1] & 0x0F
    return ipaddress.IPv6Address(f"ff0{scope:x}::2:7ffe")


def sap_groups_for(desc: SessionDescription) -> list[IPAddress]:
    out: list[IPAddress] = []
    for g in desc.groups:
        sap = sap_group_for(g.address)
        if sap not in out:
            out.append(sap)
    return out


def default_ttl(desc: SessionDescription, family: int | None = None) -> int:
    """The TTL of SAP packets announcing `desc` (to the SAP groups of `family`, None: all its groups).

    255 for IPv6 and for administratively scoped IPv4 sessions, whose scope
    bounds them; else the largest c= TTL (15 if there is none).
    """
    groups = [g for g in desc.groups if family is None or g.address.version == family]
    if any(g.address.version == 6 or g.address in _V4_ADMIN for g in groups):
        return 255
    ttls = [g.ttl for g in groups if g.ttl]
    return max(ttls) if ttls else 15


def base_interval(size: int, ads: int = 1) -> float:
    """RFC 2974 §3.1 step 2: max(300, 8 * ads * size / limit) seconds."""
    return max(MIN_INTERVAL, 8.0 * ads * size / BANDWIDTH)


def jittered(interval: float, rand: Callable[[], float] = random.random) -> float:
    """§3.1 step 3: a random offset of +-1/3 of the interval."""
    return interval * (2 / 3 + rand() * 2 / 3)


@dataclass(frozen=True)
class Plan:
    """Everything needed to announce (or delete) one description."""

    description: SessionDescription
    origin: IPAddress  # SAP originating source
    groups: tuple[IPAddress, ...]
    ttl: int
    announcement: bytes
    deletion: bytes
    interval: float  # base interval, seconds

    @property
    def msg_id_hash(self) -> int:
        return int.from_bytes(self.announcement[2:4], "big")


def plan(sdp: bytes, *, origin: str | None = None, groups: list[str] | None = None,
         ttl: int | None = None) -> Plan:
    """Check the description and build the packets; raise AnnounceError naming the problem."""
    try:
        desc = parse_sdp(sdp)
    except SDPDecodeError as exc:
        raise AnnounceError(f"the session description is invalid: {exc}") from None
    if origin is None:
        addr = desc.origin.ip
        if addr is None:
            raise AnnounceError(f"the o= address {desc.origin.address!r} is a name; give the announcer's address")
        origin_addr = addr
    else:
        try:
            origin_addr = ipaddress.ip_address(origin)
        except ValueError:
            raise AnnounceError(f"announcer address {origin!r} is not an IP address") from None
    if groups:
        try:
            sap_groups = [ipaddress.ip_address(g) for g in groups]
        except ValueError as exc:
            raise AnnounceError(f"SAP group: {exc}") from None
        for g in sap_groups:
            if not g.is_multicast:
                raise AnnounceError(f"SAP group {g} is not a multicast address")
    else:
        sap_groups = sap_groups_for(desc)
        if not sap_groups:
            raise AnnounceError("the session announces no multicast group; give the SAP group to use")
        sap_groups = [g for g in sap_groups if g.version == origin_addr.version] or sap_groups
    families = {g.version for g in sap_groups}
    if families != {origin_addr.version}:
        raise AnnounceError(f"announcer {origin_addr} and SAP group(s) "
                            f"{', '.join(str(g) for g in sap_groups)} are of different address families")
    packet_ttl = default_ttl(desc, origin_addr.version) if ttl is None else ttl
    if not 1 <= packet_ttl <= 255:
        raise AnnounceError(f"TTL {packet_ttl} is outside 1-255")
    msg_hash = make_msg_id_hash(sdp)
    ann = encode(announcement(origin_addr, sdp, msg_id_hash=msg_hash))
    dele = encode(deletion(origin_addr, deletion_payload(desc.origin), msg_id_hash=msg_hash))
    return Plan(desc, origin_addr, tuple(sap_groups), packet_ttl, ann, dele, base_interval(len(ann)))


def interface_holding(address: str) -> int:
    """The index of the interface (in this network namespace) that holds IPv6 `address`; OSError if none."""
    from pyroute2 import IPRoute

    wanted = ipaddress.IPv6Address(address)
    if wanted.scope_id:  # fe80::1%eth1 names its interface
        return socket.if_nametoindex(wanted.scope_id)
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET6):
            held = msg.get_attr("IFA_ADDRESS")
            if held is not None and ipaddress.IPv6Address(held) == wanted:
                return msg["index"]
    raise OSError(f"no interface holds the address {address}")


class Announcer:
    """A UDP socket sending SAP packets to the SAP groups (the shell)."""

    def __init__(self, plan: Plan, *, source: str | None = None, port: int = SAP_PORT,
                 iface: str | None = None) -> None:
        self.plan = plan
        self.port = port
        v6 = plan.groups[0].version == 6
        self.sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if v6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, plan.ttl)
                if iface:
                    self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(iface))
                elif source:
                    self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_holding(source))
            else:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, plan.ttl)
                if source:
                    self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
                elif iface:
                    mreqn = ipaddress.IPv4Address(0).packed * 2 + socket.if_nametoindex(iface).to_bytes(4, "little")
                    self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            if source:
                self.sock.bind((source, 0))
        except (OSError, ValueError):
            self.sock.close()
            raise
        self.sent = 0

    def send(self, packet: bytes) -> None:
        for group in self.plan.groups:
            self.sock.sendto(packet, (str(group), self.port))
            self.sent += 1

    def close(self) -> None:
        self.sock.close()


def run(announcer: Announcer, *, count: int, interval: float | None, delete: bool,
        sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
        on_send: Callable[[str, int], None] = lambda kind, n: None) -> int:
    """Send `count` announcements (0: until interrupted, then a deletion) or, with `delete`, deletions.

    Returns how many rounds were sent. `interval` None: the RFC 2974 interval
    with its random offset; otherwise exactly `interval` seconds.
    """
    p = announcer.plan
    packet = p.deletion if delete else p.announcement
    kind = "deletion" if delete else "announcement"
    rounds = 0
    try:
        while True:
            announcer.send(packet)
            rounds += 1
            on_send(kind, rounds)
            if count and rounds >= count:
                return rounds
            sleep(jittered(p.interval, rand) if interval is None else interval)
    except KeyboardInterrupt:
        if not delete and count == 0:
            announcer.send(p.deletion)  # a good citizen withdraws what it announced
            on_send("deletion", 1)
        raise
