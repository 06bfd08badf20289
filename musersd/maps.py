"""ctypes mirrors of ebpf/mauth.h: the only place user space spells the map layout.

A test (tests/integration/test_xdp_program.py) compares every size here with
the sizes in the compiled object's BTF, and the reason names with the
header's #defines, so the two cannot drift apart silently.
"""

from __future__ import annotations

import ctypes
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from mauthcore.constants import SAP_GROUPS, SAP_PORT  # noqa: F401 (part of the maps' vocabulary)
from mauthcore.protocol.model import RECV_COUNTERS  # struct mauth_recv_state's counters are in the protocol's order

EBPF_DIR = Path(__file__).resolve().parent.parent / "ebpf"
HEADER = EBPF_DIR / "mauth.h"
PROGRAM = EBPF_DIR / "mauth_xdp.c"
# The program compiled once by scripts/build_bpf.sh; a wheel carries it as package data.
OBJECT = Path(__file__).resolve().parent / "mauth_xdp.bpf.o"

LAYOUT = 6
# Layouts whose pins this one adopts in place (musersd/xdp_loader.py): layout 5 only added the bindings map,
# layout 6 the receiver maps, both with reasons that fit the reasons map, so every older map keeps its shape.
ADOPTABLE_LAYOUTS = (5, 4)
# The receiver maps (layout 6): created empty when older pins are adopted.
RECEIVER_MAPS = frozenset({"mauth_recv_cfg", "mauth_recv_state", "mauth_recv_gen", "mauth_recv_rules",
                           "mauth_recv_hits", "mauth_recv_joined", "mauth_recv_denied"})
# The maps (C names) each adoptable layout lacks: created empty when its pins are adopted.
ADDED_SINCE = {5: RECEIVER_MAPS, 4: RECEIVER_MAPS | {"mauth_bindings"}}

# Verdict reasons, index -> name; mirrors MAUTH_R_* in mauth.h.
REASONS: dict[int, str] = {
    0: "passed",
    1: "unauthorized",
    2: "ttl",
    3: "not_multicast",
    4: "malformed",
    5: "link_local",
    6: "not_ip",
    7: "mld",
    8: "rate",
    9: "igmp",
    10: "sap_local",
    11: "wrong_iif",
    12: "rpf_fail",
    13: "wrong_mac",
    14: "join_refused",
    15: "join_limit",
}
REASON_IDS = {name: idx for idx, name in REASONS.items()}
MAX_REASONS = 16
DROP_REASONS = frozenset({"unauthorized", "ttl", "rate", "wrong_iif", "rpf_fail", "wrong_mac"})
BINDING_REASONS = ("wrong_iif", "rpf_fail", "wrong_mac")

# RFC 2974 SAP groups whose announcements from senders without a rule reach
# the router itself with their TTL set to 1 (never forwarded): the global
# scope, the highest address of the IPv4 local scope 239.255.0.0/16, and of
# the organization-local scope 239.192.0.0/14; for IPv6 ff0X::2:7ffe in the
# routable scopes mauthserver listens on (site, organization, global; the
# link-scope ff02::2:7ffe is never filtered). The program has room for four
# groups of each family.
MAX_SAP_GROUPS = 4  # per address family (MAUTH_MAX_SAP)
MAX_RPF_IFACES = 8  # interfaces with reverse-path checking by default (MAUTH_MAX_RPF_IFACES)


class Opts(ctypes.Structure):
    """struct mauth_opts: the program's read-only options, set before the load."""

    _fields_ = [
        ("denied_sets", ctypes.c_uint32),
        ("record_denied", ctypes.c_uint32),
        ("sap4", ctypes.c_uint32 * MAX_SAP_GROUPS),  # network-order bytes, as the program loads them
        ("sap6", (ctypes.c_uint32 * 4) * MAX_SAP_GROUPS),
        ("rpf_ifindex", ctypes.c_uint32 * MAX_RPF_IFACES),  # 0 = unused; the first 0 ends the list
    ]


class Cfg(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_uint32),
        ("layout", ctypes.c_uint32),
        ("max_rules", ctypes.c_uint32),
        ("denied_seed", ctypes.c_uint32),
        ("state_id", ctypes.c_uint64),
        ("prefixes", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


# Cfg.prefixes bits: which prefix tries hold rules (MAUTH_CFG_*_PREFIXES*).
CFG_SRC_PREFIXES = 0x01
CFG_GRP_PREFIXES = 0x02
CFG_SRC_PREFIXES6 = 0x04
CFG_GRP_PREFIXES6 = 0x08


class _Key(ctypes.Structure):
    """A rule key, (source, group), both addresses in network byte order as in the packet.

    A Structure without fields of its own: Key4 and Key6 give the layout.
    """

    _ip: type
    src: ctypes.Array
    grp: ctypes.Array

    @classmethod
    def of(cls, source, group):
        return cls.from_buffer_copy(source.packed + group.packed)

    @property
    def source(self):
        return self._ip(bytes(self.src))

    @property
    def group(self):
        return self._ip(bytes(self.grp))


class Key4(_Key):
    _ip = ipaddress.IPv4Address
    _fields_ = [("src", ctypes.c_uint8 * 4), ("grp", ctypes.c_uint8 * 4)]


class Key6(_Key):
    _ip = ipaddress.IPv6Address
    _fields_ = [("src", ctypes.c_uint8 * 16), ("grp", ctypes.c_uint8 * 16)]


class _Lpm(ctypes.Structure):
    """Key of the prefix tries: width + the prefix's length, the exact address, the prefix's address.

    src_prefix*: exact = group, prefix = source; grp_prefix*: exact = source,
    prefix = group. Addresses in network byte order, as in the packet. A Structure
    without fields of its own: Lpm4 and Lpm6 give the layout.
    """

    _ip: type
    _net: type
    _width: int
    prefixlen: int
    exact: ctypes.Array
    prefix: ctypes.Array

    @classmethod
    def of(cls, exact, prefix, length: int):
        key = cls.from_buffer_copy(bytes(4) + exact.packed + prefix.packed)
        key.prefixlen = cls._width + length
        return key

    @property
    def length(self) -> int:
        return self.prefixlen - self._width

    @property
    def exact_address(self):
        return self._ip(bytes(self.exact))

    @property
    def prefix_network(self):
        return self._net((bytes(self.prefix), self.length))


class Lpm4(_Lpm):
    _ip, _net, _width = ipaddress.IPv4Address, ipaddress.IPv4Network, 32
    _fields_ = [("prefixlen", ctypes.c_uint32), ("exact", ctypes.c_uint8 * 4), ("prefix", ctypes.c_uint8 * 4)]


class Lpm6(_Lpm):
    _ip, _net, _width = ipaddress.IPv6Address, ipaddress.IPv6Network, 128
    _fields_ = [("prefixlen", ctypes.c_uint32), ("exact", ctypes.c_uint8 * 16), ("prefix", ctypes.c_uint8 * 16)]


RULE_F_RATE = 0x01  # MAUTH_RULE_F_RATE
RULE_F_BIND = 0x02  # MAUTH_RULE_F_BIND

# struct mauth_binding.flags (MAUTH_BIND_*)
BIND_IFACE = 0x01
BIND_RPF = 0x02
BIND_MAC = 0x04
BIND_LEARN = 0x08


class BindingVal(ctypes.Structure):
    """struct mauth_binding: where a bound rule's sender may be, and the pair it learned."""

    _fields_ = [
        ("lock", ctypes.c_uint32),  # struct bpf_spin_lock; the kernel never copies it out
        ("ifindex", ctypes.c_uint32),
        ("mac", ctypes.c_uint8 * 6),
        ("flags", ctypes.c_uint8),
        ("learned", ctypes.c_uint8),
        ("learned_ifindex", ctypes.c_uint32),
        ("learned_mac", ctypes.c_uint8 * 6),
        ("_pad", ctypes.c_uint16),
        ("moved", ctypes.c_uint64),
        ("offender_ifindex", ctypes.c_uint32),  # the last packet the binding dropped: ingress interface,
        ("offender_mac", ctypes.c_uint8 * 6),  # source MAC
        ("offender_reason", ctypes.c_uint8),  # and reason index (REASONS); 0: none yet
        ("_pad2", ctypes.c_uint8),
    ]


class RuleVal(ctypes.Structure):
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("max_ttl", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("_pad", ctypes.c_uint16),
    ]


NSEC = 1_000_000_000  # MAUTH_NSEC: tokens per packet, and per bit
BURST_NS = 100_000_000  # a bucket holds 100 ms of its rate ...
MIN_PKT_BURST = 1  # ... but at least one packet
MIN_BIT_BURST = 16 * 1024 * 8  # ... and at least 16 KiB, so a jumbo frame always fits


class Rate(ctypes.Structure):
    """struct mauth_rate: a rule's packet and bit token buckets (tokens in units of 1/NSEC)."""

    _fields_ = [
        ("lock", ctypes.c_uint32),  # struct bpf_spin_lock; the kernel never copies it out
        ("_pad", ctypes.c_uint32),
        ("last", ctypes.c_uint64),
        ("pkt_tokens", ctypes.c_uint64),
        ("bit_tokens", ctypes.c_uint64),
        ("pps", ctypes.c_uint64),
        ("bps", ctypes.c_uint64),
        ("pkt_burst", ctypes.c_uint64),
        ("bit_burst", ctypes.c_uint64),
        ("pkt_fill", ctypes.c_uint64),
        ("bit_fill", ctypes.c_uint64),
    ]

    @classmethod
    def full(cls, pps: int, bps: int) -> Rate:
        """Buckets for these limits (0 = none), full: a new limit starts with its burst allowance."""
        pkt_burst, pkt_fill = bucket(pps, MIN_PKT_BURST)
        bit_burst, bit_fill = bucket(bps, MIN_BIT_BURST)
        return cls(pps=pps, bps=bps, pkt_burst=pkt_burst, bit_burst=bit_burst, pkt_fill=pkt_fill,
                   bit_fill=bit_fill, pkt_tokens=pkt_burst, bit_tokens=bit_burst)


def bucket(rate: int, minimum: int) -> tuple[int, int]:
    """(size in tokens, ns an empty bucket takes to fill) for `rate` per second; (0, 0) for no limit.

    The size is BURST_NS of the rate, at least `minimum` units. The fill
    time is rounded up, so that fill * rate >= size: after that long idle a
    bucket is full, and the kernel's multiply never needs more.
    """
    if not rate:
        return 0, 0
    size = max(rate * BURST_NS, minimum * NSEC)  # units * NSEC: (rate/s) * (BURST_NS ns)
    return size, -(-size // rate)


class Stats(ctypes.Structure):
    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("last_seen", ctypes.c_uint64),
    ]


class Counter(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


TICK_SHIFT = 20  # MAUTH_TICK_SHIFT: the denied table's last_seen is the coarse clock >> 20, in 32 bits


def _denied_fields(width: int) -> list:
    # One CPU's entry for one pair; no packets: an empty entry.
    return [
        ("src", ctypes.c_uint8 * width),
        ("grp", ctypes.c_uint8 * width),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("last_seen", ctypes.c_uint32),
        ("last_ttl", ctypes.c_uint8),
        ("reason", ctypes.c_uint8),
        ("_pad", ctypes.c_uint16),
    ]


class Denied(ctypes.Structure):
    _fields_ = _denied_fields(4)


class Denied6(ctypes.Structure):
    _fields_ = _denied_fields(16)


DENIED_WAYS = 4  # MAUTH_DENIED_WAYS


class DeniedSet(ctypes.Structure):
    _fields_ = [("way", Denied * DENIED_WAYS)]


class Denied6Set(ctypes.Structure):
    _fields_ = [("way", Denied6 * DENIED_WAYS)]


_MASK64 = (1 << 64) - 1
_DENIED_MULT = 0x9E3779B97F4A7C15  # MAUTH_DENIED_MULT


def _fold(address: bytes) -> int:
    """An address as the program loads it into a u32: one word, or the XOR of an IPv6 address's four."""
    out = 0
    for i in range(0, len(address), 4):
        out ^= int.from_bytes(address[i:i + 4], sys.byteorder)
    return out


def denied_index(key: bytes, seed: int, nsets: int) -> int:
    """mauth_denied_index() (8-byte keys) or mauth_denied6_index() (32) of mauth.h: a pair's set.

    `key` is the bytes of Key4 or Key6 (source then group, network order).
    The C code loads addresses as host-order u32 words, so this reads them
    the same way.
    """
    half = len(key) // 2
    src = _fold(key[:half])
    grp = _fold(key[half:])
    k = ((grp << 32) | src) ^ ((seed << 32) | seed)
    k = (k * _DENIED_MULT) & _MASK64
    return ((k >> 32) * nsets) >> 32


# ------------------------------------------------------------------ receivers (mauth.h, "Receivers")

RECV_OPEN, RECV_CLOSED, RECV_MONITOR = 0, 1, 2  # MAUTH_RECV_*: ReceiverMode.code
MAX_RECV_RULES = 512  # MAUTH_MAX_RECV_RULES
RECV_IFACES = 1024  # MAUTH_RECV_IFACES
RECV_JOINED = 16384  # MAUTH_RECV_JOINED
RECV_DENIED = 4096  # MAUTH_RECV_DENIED
RECV_GEN_HALF = 0x80000000  # MAUTH_RECV_GEN_HALF
RECV_GEN_COUNT = 0xFFFF  # MAUTH_RECV_GEN_COUNT
RECV_F_SOURCE = 0x01  # MAUTH_RECV_F_SOURCE


class RecvCfg(ctypes.Structure):
    """struct mauth_recv_cfg: a guarded interface's policy, and the groups user space swept from it (freed)."""

    _fields_ = [("mode", ctypes.c_uint32), ("limit", ctypes.c_uint32), ("freed", ctypes.c_uint64)]


class RecvState(ctypes.Structure):
    """struct mauth_recv_state: groups the program inserted for an interface, its counters (RECV_COUNTERS order).

    Groups joined now: added - RecvCfg.freed.
    """

    _fields_ = [("added", ctypes.c_uint64), ("counters", ctypes.c_uint64 * len(RECV_COUNTERS))]


class RecvGen(ctypes.Structure):
    """struct mauth_recv_gen: the live half of the rule table and its count in one word; inspecting interfaces."""

    _fields_ = [("word", ctypes.c_uint32), ("inspecting", ctypes.c_uint32)]


class RecvRule(ctypes.Structure):
    """struct mauth_recv_rule: addresses and masks as packet bytes, IPv4 in the first word, pre-masked."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("rcv_len", ctypes.c_uint8),
        ("grp_len", ctypes.c_uint8),
        ("slot", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("rcv", ctypes.c_uint8 * 16),
        ("rcv_mask", ctypes.c_uint8 * 16),
        ("grp", ctypes.c_uint8 * 16),
        ("grp_mask", ctypes.c_uint8 * 16),
        ("src", ctypes.c_uint8 * 16),
    ]


class RecvHits(ctypes.Structure):
    _fields_ = [("matched", ctypes.c_uint64), ("last_seen", ctypes.c_uint64)]


class RecvGroupKey(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("family", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3),
                ("grp", ctypes.c_uint8 * 16)]


class RecvGroup(ctypes.Structure):
    _fields_ = [("first_seen", ctypes.c_uint64), ("last_seen", ctypes.c_uint64), ("left", ctypes.c_uint64),
                ("reports", ctypes.c_uint64), ("reporter", ctypes.c_uint8 * 16)]


class RecvDeniedKey(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("family", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 3),
                ("rcv", ctypes.c_uint8 * 16), ("grp", ctypes.c_uint8 * 16), ("src", ctypes.c_uint8 * 16)]


class RecvDenied(ctypes.Structure):
    _fields_ = [("records", ctypes.c_uint64), ("last_seen", ctypes.c_uint64), ("reason", ctypes.c_uint8),
                ("version", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 6)]


# name in the C program -> (pin file name, map type, key type, value type, percpu)
MAPS = {
    "mauth_cfg": ("cfg", "array", ctypes.c_uint32, Cfg, False),
    "mauth_rules4": ("rules4", "hash", Key4, RuleVal, False),
    "mauth_src_prefix4": ("src_prefix4", "lpm_trie", Lpm4, RuleVal, False),
    "mauth_grp_prefix4": ("grp_prefix4", "lpm_trie", Lpm4, RuleVal, False),
    "mauth_rules6": ("rules6", "hash", Key6, RuleVal, False),
    "mauth_src_prefix6": ("src_prefix6", "lpm_trie", Lpm6, RuleVal, False),
    "mauth_grp_prefix6": ("grp_prefix6", "lpm_trie", Lpm6, RuleVal, False),
    "mauth_rates": ("rates", "hash", ctypes.c_uint32, Rate, False),
    "mauth_bindings": ("bindings", "array", ctypes.c_uint32, BindingVal, False),
    "mauth_stats": ("stats", "percpu_array", ctypes.c_uint32, Stats, True),
    "mauth_reasons": ("reasons", "percpu_array", ctypes.c_uint32, Counter, True),
    "mauth_denied4": ("denied4", "percpu_array", ctypes.c_uint32, DeniedSet, True),
    "mauth_denied6": ("denied6", "percpu_array", ctypes.c_uint32, Denied6Set, True),
    "mauth_recv_cfg": ("recv_cfg", "hash", ctypes.c_uint32, RecvCfg, False),
    "mauth_recv_state": ("recv_state", "hash", ctypes.c_uint32, RecvState, False),
    "mauth_recv_gen": ("recv_gen", "array", ctypes.c_uint32, RecvGen, False),
    "mauth_recv_rules": ("recv_rules", "array", ctypes.c_uint32, RecvRule, False),
    "mauth_recv_hits": ("recv_hits", "percpu_array", ctypes.c_uint32, RecvHits, True),
    "mauth_recv_joined": ("recv_joined", "hash", RecvGroupKey, RecvGroup, False),
    "mauth_recv_denied": ("recv_denied", "lru_hash", RecvDeniedKey, RecvDenied, False),
}
# Fixed sizes of the maps whose size no option sets (the others: xdp_loader.py).
FIXED_ENTRIES = {
    "mauth_cfg": 1,
    "mauth_reasons": MAX_REASONS,
    "mauth_recv_cfg": RECV_IFACES,
    "mauth_recv_state": RECV_IFACES,
    "mauth_recv_gen": 1,
    "mauth_recv_rules": 2 * MAX_RECV_RULES,
    "mauth_recv_hits": MAX_RECV_RULES,
    "mauth_recv_joined": RECV_JOINED,
    "mauth_recv_denied": RECV_DENIED,
}


@dataclass(frozen=True)
class Family:
    """The maps, key types and cfg bits of one address family."""

    version: int
    width: int  # address bits
    rules: str  # exact rules (hash)
    src_prefix: str  # source-prefix trie
    grp_prefix: str  # group-prefix trie
    denied: str  # denied table
    key: type[_Key]  # Key4 or Key6
    lpm: type[_Lpm]  # Lpm4 or Lpm6
    cfg_src: int
    cfg_grp: int


FAMILIES = {
    4: Family(4, 32, "mauth_rules4", "mauth_src_prefix4", "mauth_grp_prefix4", "mauth_denied4",
              Key4, Lpm4, CFG_SRC_PREFIXES, CFG_GRP_PREFIXES),
    6: Family(6, 128, "mauth_rules6", "mauth_src_prefix6", "mauth_grp_prefix6", "mauth_denied6",
              Key6, Lpm6, CFG_SRC_PREFIXES6, CFG_GRP_PREFIXES6),
}
