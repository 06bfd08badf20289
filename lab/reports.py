"""Membership reports as frames: IGMPv1/v2/v3 and MLDv1/v2, built and read back byte for byte.

Strategy: by hand, with struct, so that a test controls every byte a
receiver's kernel would write (router alert option, hop-by-hop header,
checksums) and can break any of them on purpose (`csum=`, a truncated
record); `parse()` reads a frame back into the same values, so a test
compares what the filter left of a report with what it should have left.
Every builder returns a whole Ethernet frame as a host would send it:
TTL (hop limit) 1, IPv4 router alert, one IPv6 hop-by-hop header with the
router alert option (RFC 2711), destinations as RFC 3376 and RFC 3810 say.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

IPv4, IPv6 = ipaddress.IPv4Address, ipaddress.IPv6Address

SRC_MAC = bytes.fromhex("020000000001")

# IGMP types (RFC 3376 4, RFC 2236 2.1) and MLD types (RFC 3810 5, RFC 2710 3.1)
IGMP_QUERY, IGMP_V1_REPORT, IGMP_V2_REPORT, IGMP_V2_LEAVE, IGMP_V3_REPORT = 0x11, 0x12, 0x16, 0x17, 0x22
MLD_QUERY, MLD_V1_REPORT, MLD_V1_DONE, MLD_V2_REPORT = 130, 131, 132, 143

# Group record types (RFC 3376 4.2.12, RFC 3810 5.2.12)
IS_IN, IS_EX, TO_IN, TO_EX, ALLOW, BLOCK = 1, 2, 3, 4, 5, 6

ALL_ROUTERS4, IGMPV3_ROUTERS = "224.0.0.2", "224.0.0.22"
ALL_ROUTERS6, MLDV2_ROUTERS, ALL_NODES6 = "ff02::2", "ff02::16", "ff02::1"


@dataclass(frozen=True)
class Record:
    """One group record of an IGMPv3 or MLDv2 report."""

    rtype: int
    group: str
    sources: tuple[str, ...] = ()
    aux: bytes = b""  # auxiliary data, a multiple of 4 bytes

    def encode(self) -> bytes:
        addr = ipaddress.ip_address(self.group)
        srcs = b"".join(ipaddress.ip_address(s).packed for s in self.sources)
        return (struct.pack("!BBH", self.rtype, len(self.aux) // 4, len(self.sources)) + addr.packed + srcs
                + self.aux)


@dataclass(frozen=True)
class Report:
    """A report read back from a frame: its message type, the group of a v1/v2 message, the records of a v3/v2 one."""

    family: int
    receiver: str
    dst: str
    mtype: int
    group: str | None = None
    records: tuple[Record, ...] = field(default=())


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`: 0 over data that holds its own correct checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if dst.version == 4:
        return bytes([0x01, 0x00, 0x5E, dst.packed[1] & 0x7F]) + dst.packed[2:]
    return b"\x33\x33" + dst.packed[12:]


def _with_csum(msg: bytes, offset: int, csum: int | None, pseudo: bytes = b"") -> bytes:
    """`msg` with its checksum field at `offset` computed (or forced to `csum`)."""
    value = checksum(pseudo + msg) if csum is None else csum
    return msg[:offset] + struct.pack("!H", value) + msg[offset + 2:]


def ipv4_frame(src: str, dst: str, payload: bytes, *, ttl: int = 1, router_alert: bool = True, proto: int = 2,
               frag: int = 0, vlan: int | None = None) -> bytes:
    """Ethernet + IPv4 (router alert option unless told not) + `payload`; header checksum computed."""
    s, d = IPv4(src), IPv4(dst)
    opts = b"\x94\x04\x00\x00" if router_alert else b""
    ihl = 5 + len(opts) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0xC0, ihl * 4 + len(payload), 0, frag, ttl, proto, 0,
                      s.packed, d.packed) + opts
    hdr = _with_csum(hdr, 10, None)
    return _ether(_mac(d), 0x0800, vlan) + hdr + payload


def ipv6_frame(src: str, dst: str, nexthdr: int, payload: bytes, *, hlim: int = 1, hop_by_hop: bool = True,
               vlan: int | None = None) -> bytes:
    """Ethernet + IPv6 (+ a hop-by-hop header with router alert 0, MLD, unless told not) + `payload`."""
    s, d = IPv6(src), IPv6(dst)
    ext = b""
    if hop_by_hop:
        ext = bytes([nexthdr, 0]) + b"\x05\x02\x00\x00" + b"\x01\x00"  # router alert (MLD), PadN of 2
        nexthdr = 0
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(ext) + len(payload), nexthdr, hlim, s.packed, d.packed)
    return _ether(_mac(d), 0x86DD, vlan) + hdr + ext + payload


def _ether(dst_mac: bytes, proto: int, vlan: int | None) -> bytes:
    if vlan is None:
        return dst_mac + SRC_MAC + struct.pack("!H", proto)
    return dst_mac + SRC_MAC + struct.pack("!HHH", 0x8100, vlan, proto)


def _pseudo6(src: str, dst: str, length: int) -> bytes:
    return IPv6(src).packed + IPv6(dst).packed + struct.pack("!IxxxB", length, 58)


# --- IGMP -------------------------------------------------------------------------------------------------------

def igmp(receiver: str, dst: str, mtype: int, group: str, *, code: int = 0, csum: int | None = None,
         extra: bytes = b"", **ip) -> bytes:
    """An 8-byte IGMP message (v1/v2 report, leave, query) from `receiver` to `dst`."""
    msg = struct.pack("!BBH4s", mtype, code, 0, IPv4(group).packed) + extra
    return ipv4_frame(receiver, dst, _with_csum(msg, 2, csum), **ip)


def igmp_v1(receiver: str, group: str, **kw) -> bytes:
    return igmp(receiver, group, IGMP_V1_REPORT, group, router_alert=False, **kw)


def igmp_v2(receiver: str, group: str, **kw) -> bytes:
    return igmp(receiver, group, IGMP_V2_REPORT, group, **kw)


def igmp_leave(receiver: str, group: str, **kw) -> bytes:
    return igmp(receiver, ALL_ROUTERS4, IGMP_V2_LEAVE, group, **kw)


def igmp_query(router: str, group: str = "0.0.0.0", **kw) -> bytes:
    dst = "224.0.0.1" if group == "0.0.0.0" else group
    return igmp(router, dst, IGMP_QUERY, group, code=100, extra=b"\x02\x7d\x00\x00", **kw)


def igmp_v3(receiver: str, records: Sequence[Record], *, csum: int | None = None, nrec: int | None = None,
            trailer: bytes = b"", **ip) -> bytes:
    """An IGMPv3 report to 224.0.0.22; `nrec` overrides the record count, `trailer` is appended (both to break it)."""
    body = b"".join(r.encode() for r in records) + trailer
    msg = struct.pack("!BBHHH", IGMP_V3_REPORT, 0, 0, 0, len(records) if nrec is None else nrec) + body
    return ipv4_frame(receiver, IGMPV3_ROUTERS, _with_csum(msg, 2, csum), **ip)


# --- MLD --------------------------------------------------------------------------------------------------------

def mld(receiver: str, dst: str, mtype: int, group: str, *, csum: int | None = None, extra: bytes = b"",
        **ip) -> bytes:
    """A 24-byte MLDv1 message (report, done, query) from `receiver` to `dst`."""
    msg = struct.pack("!BBHHH16s", mtype, 0, 0, 0, 0, IPv6(group).packed) + extra
    return ipv6_frame(receiver, dst, 58, _with_csum(msg, 2, csum, _pseudo6(receiver, dst, len(msg))), **ip)


def mld_v1(receiver: str, group: str, **kw) -> bytes:
    return mld(receiver, group, MLD_V1_REPORT, group, **kw)


def mld_done(receiver: str, group: str, **kw) -> bytes:
    return mld(receiver, ALL_ROUTERS6, MLD_V1_DONE, group, **kw)


def mld_query(router: str, group: str = "::", **kw) -> bytes:
    dst = ALL_NODES6 if group == "::" else group
    return mld(router, dst, MLD_QUERY, group, extra=b"\x02\x7d\x00\x00", **kw)


def mld_v2(receiver: str, records: Sequence[Record], *, csum: int | None = None, nrec: int | None = None,
           trailer: bytes = b"", **ip) -> bytes:
    """An MLDv2 report to ff02::16; `nrec` and `trailer` as for igmp_v3()."""
    body = b"".join(r.encode() for r in records) + trailer
    msg = struct.pack("!BBHHH", MLD_V2_REPORT, 0, 0, 0, len(records) if nrec is None else nrec) + body
    pseudo = _pseudo6(receiver, MLDV2_ROUTERS, len(msg))
    return ipv6_frame(receiver, MLDV2_ROUTERS, 58, _with_csum(msg, 2, csum, pseudo), **ip)


# --- reading back -----------------------------------------------------------------------------------------------

def _l3(frame: bytes) -> tuple[int, int]:
    off, proto = 14, int.from_bytes(frame[12:14], "big")
    while proto in (0x8100, 0x88A8):
        proto, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
    return proto, off


def _records(body: bytes, count: int, width: int) -> tuple[Record, ...]:
    out, pos = [], 0
    for _ in range(count):
        rtype, auxw, nsrc = struct.unpack_from("!BBH", body, pos)
        pos += 4
        group = str(ipaddress.ip_address(body[pos:pos + width]))
        pos += width
        srcs = tuple(str(ipaddress.ip_address(body[pos + i * width:pos + (i + 1) * width])) for i in range(nsrc))
        pos += nsrc * width
        out.append(Record(rtype, group, srcs, body[pos:pos + auxw * 4]))
        pos += auxw * 4
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} bytes follow the last record")
    return tuple(out)


def parse(frame: bytes) -> Report:
    """The report in `frame`; ValueError if a length, a checksum or a record does not hold together."""
    proto, off = _l3(frame)
    if proto == 0x0800:
        ihl = (frame[off] & 0x0F) * 4
        total = int.from_bytes(frame[off + 2:off + 4], "big")
        if len(frame) != off + total:
            raise ValueError(f"IPv4 total length {total} but {len(frame) - off} bytes follow the Ethernet header")
        if checksum(frame[off:off + ihl]):
            raise ValueError("bad IPv4 header checksum")
        msg = frame[off + ihl:off + total]
        if checksum(msg):
            raise ValueError("bad IGMP checksum")
        src, dst = str(IPv4(frame[off + 12:off + 16])), str(IPv4(frame[off + 16:off + 20]))
        if msg[0] == IGMP_V3_REPORT:
            (count,) = struct.unpack_from("!H", msg, 6)
            return Report(4, src, dst, msg[0], None, _records(msg[8:], count, 4))
        return Report(4, src, dst, msg[0], str(IPv4(msg[4:8])))
    if proto != 0x86DD:
        raise ValueError(f"ethertype {proto:#06x} is neither IPv4 nor IPv6")
    plen = int.from_bytes(frame[off + 4:off + 6], "big")
    if len(frame) != off + 40 + plen:
        raise ValueError(f"IPv6 payload length {plen} but {len(frame) - off - 40} bytes follow the header")
    nexthdr, pos = frame[off + 6], off + 40
    while nexthdr in (0, 43, 60):
        nexthdr, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
    if nexthdr != 58:
        raise ValueError(f"upper-layer protocol {nexthdr} is not ICMPv6")
    src, dst = str(IPv6(frame[off + 8:off + 24])), str(IPv6(frame[off + 24:off + 40]))
    msg = frame[pos:]
    if checksum(_pseudo6(src, dst, len(msg)) + msg):
        raise ValueError("bad ICMPv6 checksum")
    if msg[0] == MLD_V2_REPORT:
        (count,) = struct.unpack_from("!H", msg, 6)
        return Report(6, src, dst, msg[0], None, _records(msg[8:], count, 16))
    return Report(6, src, dst, msg[0], str(IPv6(msg[8:24])))


def records(*specs: tuple[int, str] | tuple[int, str, Iterable[str]]) -> list[Record]:
    """Shorthand: records((TO_EX, "239.1.1.1"), (ALLOW, "232.1.1.1", ["192.0.2.1"]))."""
    return [Record(s[0], s[1], tuple(s[2]) if len(s) > 2 else ()) for s in specs]  # type: ignore[misc]
