"""A multicast traffic generator for the lab: XDP frames injected with BPF_PROG_TEST_RUN live mode.

Why not trafgen. trafgen (netsniff-ng) sends through a packet socket's TX
ring, and every frame in flight is charged to that socket's send buffer.
As soon as the router's receive work runs on a CPU of its own (threaded
NAPI, which is what lets us measure the router's CPU time apart from the
generator's), frames queue in the router's veth ring, the send buffer fills
and trafgen exits with "Flushing TX_RING failed: Resource temporarily
unavailable". Its cure, a larger `net.core.wmem_default`, is a machine-wide
sysctl that a network namespace may not change. With generator and router on
one CPU, trafgen ran at 0.36-0.52 Mpps here, and each figure would be the
sum of the generator's cost and the router's.

How this one works. `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux 5.18) makes the
kernel run an XDP program on frames from a page pool and carry out its
verdict for real; XDP_TX becomes a redirect out of the device named in the
context (the sender's veth end). The program rewrites each frame from a
table of templates in turn (source, group, TTL, checksum, multicast MAC),
so one run offers a fixed mix of flows in a fixed interleaving. Frames
reach the router's veth as XDP frames, as they would reach a NIC driver:
an XDP filter there sees them before any socket buffer exists.

`flood()` offers frames as fast as one CPU makes them: 6-8 Mpps here while
the receiver's ring drops the excess, 1.5-2.5 Mpps when the receiver takes
them all in and frees their pages on its own CPU. `send()` paces a given
count at a given rate in bursts smaller than the receiving veth's ring
(256). Each BPF_PROG_TEST_RUN call costs 30-250 us of set-up here, so
paced sending reaches only a few hundred thousand frames a second.

Frames are Ethernet + IPv4 + UDP with an 18-byte payload (60 bytes, the
minimum Ethernet frame without its FCS).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from lab.netns import inside, sh
from musersd import bpfobj, bpfsys

from . import common

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
PAYLOAD = 18
UDP_SPORT, UDP_DPORT = 4000, 5004
MAX_TEMPLATES = 4096
HOLD_IFACE = "genhold"
XDP_FLAGS_SKB_MODE = 1 << 1
BATCH = 64  # frames per batch inside one run: redirected and flushed together, as a driver's NAPI poll would

GEN_OBJECT = "livegen"  # ebpf/bench/livegen.bpf.c: the program `gen` and its maps


class _Template(ctypes.Structure):
    # struct gen_tpl of ebpf/bench/livegen.bpf.c
    _fields_ = [
        ("saddr", ctypes.c_uint8 * 4),
        ("daddr", ctypes.c_uint8 * 4),
        ("ttl", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("check", ctypes.c_uint16),
        ("dmac", ctypes.c_uint8 * 6),
        ("pad2", ctypes.c_uint16),
    ]


class _XdpMd(ctypes.Structure):
    # struct xdp_md (include/uapi/linux/bpf.h) as BPF_PROG_TEST_RUN takes it in ctx_in.
    _fields_ = [(name, ctypes.c_uint32) for name in
                ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex")]


@dataclass(frozen=True)
class Flow:
    source: str
    group: str
    ttl: int


def _csum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_header(flow: Flow) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + PAYLOAD, 0, 0x4000, flow.ttl, socket.IPPROTO_UDP, 0,
                    ipaddress.IPv4Address(flow.source).packed, ipaddress.IPv4Address(flow.group).packed)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:]


def multicast_mac(group: str) -> bytes:
    g = ipaddress.IPv4Address(group).packed
    return bytes([0x01, 0x00, 0x5E, g[1] & 0x7F, g[2], g[3]])


def frame(flow: Flow, src_mac: bytes) -> bytes:
    udp = struct.pack("!HHHH", UDP_SPORT, UDP_DPORT, 8 + PAYLOAD, 0) + b"\0" * PAYLOAD
    return multicast_mac(flow.group) + src_mac + b"\x08\x00" + ip_header(flow) + udp


def _set_timer_slack(ns: int) -> None:
    """Let short sleeps wake on time (the default slack is 50 us, our bursts are ~60 us apart)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0)  # PR_SET_TIMERSLACK


class LiveGen:
    """Offers a list of flows, in order, round and round, out of `iface` of namespace `ns`."""

    def __init__(self, ns: str, iface: str, src_mac: bytes):
        self.ns, self.src_mac = ns, src_mac
        self._obj = common.bench_object(GEN_OBJECT)
        try:
            self._obj.set_max_entries("gen_tpl", MAX_TEMPLATES)
            self._obj.load()
        except BaseException:
            self._obj.close()
            raise
        self.fd = self._obj.program_fd("gen")
        self._tpl = bpfsys.Map(self._obj.map_fd("gen_tpl"), ctypes.c_uint32, _Template, "gen_tpl")
        self._count = bpfsys.Map(self._obj.map_fd("gen_count"), ctypes.c_uint32, ctypes.c_uint32, "gen_count")
        # A per-CPU value of 4 bytes takes an 8-byte slot per CPU in user space.
        self._next = bpfsys.Map(self._obj.map_fd("gen_next"), ctypes.c_uint32, ctypes.c_uint64, "gen_next",
                                percpu=True)
        with inside(ns):
            self.ifindex = socket.if_nametoindex(iface)
        self._hold_in_dispatcher()
        self.flows: list[Flow] = []
        self._frame = b""

    def _hold_in_dispatcher(self) -> None:
        """Keep the program in the kernel's XDP dispatcher for as long as we live.

        Every BPF_PROG_TEST_RUN of an XDP program adds it to the XDP
        dispatcher and removes it afterwards, and each change of the
        dispatcher waits for an RCU grace period (milliseconds): thousands
        of short bursts a second would spend their time there. A program
        already attached somewhere keeps its place, so we attach ours in
        generic mode to a veth of its own, which is down and sees no packet.
        """
        sh("ip", "link", "add", HOLD_IFACE, "type", "veth", "peer", "name", HOLD_IFACE + "p", ns=self.ns)
        with inside(self.ns):
            bpfobj.xdp_attach(socket.if_nametoindex(HOLD_IFACE), self.fd, XDP_FLAGS_SKB_MODE)

    def use(self, flows: list[Flow]) -> None:
        """Offer `flows` from now on, starting with the first on every CPU."""
        if not 1 <= len(flows) <= MAX_TEMPLATES:
            raise ValueError(f"between 1 and {MAX_TEMPLATES} flows, not {len(flows)}")
        for i, flow in enumerate(flows):
            h = ip_header(flow)
            t = _Template(ttl=flow.ttl, check=struct.unpack("=H", h[10:12])[0])
            t.saddr[:] = list(h[12:16])
            t.daddr[:] = list(h[16:20])
            t.dmac[:] = list(multicast_mac(flow.group))
            self._tpl.update(ctypes.c_uint32(i), t)
        self._count.update(ctypes.c_uint32(0), ctypes.c_uint32(len(flows)))
        self._next.update(ctypes.c_uint32(0), self._next.slot_type())  # zero on every CPU
        self.flows = list(flows)
        self._frame = frame(flows[0], self.src_mac)

    def close(self) -> None:
        """Close this process's handles of the program and its maps (the holding veth goes with its namespace)."""
        for m in (self._tpl, self._count, self._next):
            m.close()
        self._obj.close()

    def _burst(self, count: int, opts: bpfsys.TestRunOpts) -> None:
        opts.repeat = count
        ret = bpfsys.lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        if ret < 0:
            raise bpfsys.BPFSysError(-ret, f"BPF_PROG_TEST_RUN (live frames): {os.strerror(-ret)}")

    def _opts(self) -> tuple[bpfsys.TestRunOpts, tuple]:
        buf = ctypes.create_string_buffer(self._frame, len(self._frame))
        md = _XdpMd(data=0, data_end=len(self._frame), ingress_ifindex=self.ifindex)
        opts = bpfsys.TestRunOpts(sz=ctypes.sizeof(bpfsys.TestRunOpts), data_in=ctypes.cast(buf, ctypes.c_void_p),
                            data_size_in=len(self._frame), ctx_in=ctypes.cast(ctypes.pointer(md), ctypes.c_void_p),
                            ctx_size_in=ctypes.sizeof(md), flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=BATCH)
        return opts, (buf, md)  # the buffers must outlive the calls

    def flood(self, seconds: float, chunk: int = 250_000) -> tuple[int, float]:
        """Offer frames as fast as the generator goes for about `seconds`; returns (frames, seconds).

        Each call offers `chunk` frames back to back, in batches of BATCH;
        whatever the receiving ring has no room for is dropped there.
        """
        opts, keep = self._opts()
        sent = 0
        with inside(self.ns):
            start = time.monotonic()
            while True:
                self._burst(chunk, opts)
                sent += chunk
                elapsed = time.monotonic() - start
                if elapsed >= seconds:
                    return sent, elapsed

    def send(self, count: int, rate: float | None = None, chunk: int = 64) -> float:
        """Offer `count` frames at `rate` per second (None: as fast as it goes); returns the seconds it took.

        A burst that starts late (this thread was preempted) does not make
        up for lost time with back-to-back bursts, which would overflow the
        receiver's ring: the rate achieved is count / seconds returned.

        Call from a thread that may enter the sender's namespace: the
        device in the context is looked up in the caller's namespace.
        """
        opts, keep = self._opts()
        _set_timer_slack(1000)
        interval = chunk / rate if rate else 0.0
        with inside(self.ns):
            start = due = time.monotonic()
            left = count
            while left > 0:
                n = min(chunk, left)
                self._burst(n, opts)
                left -= n
                if interval:
                    due += interval * n / chunk
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    elif wait < -interval:
                        due = time.monotonic()  # late (preempted): forgo the deficit, never burst to catch up
            return time.monotonic() - start
