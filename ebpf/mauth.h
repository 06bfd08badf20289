/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mauth: the structs and constants shared by the XDP program (mauth_xdp.c)
 * and user space (musersd/maps.py mirrors every struct with ctypes, and a
 * test checks that the sizes match what bcc compiled).
 *
 * Every name carries the mauth_ / MAUTH_ prefix: bcc compiles this together
 * with kernel headers, and a type named like a kernel type fails to compile.
 *
 * Map layout (version MAUTH_LAYOUT, pinned under <pin-dir>/v<MAUTH_LAYOUT>/):
 *
 *   cfg      ARRAY[1]            mode, layout, capacity, denied-table seed, state id
 *   rules4   HASH (src,grp)->rule  max TTL, flags, stats slot   (no prealloc)
 *   stats    PERCPU_ARRAY[slot]  packets, bytes, last seen per rule
 *   reasons  PERCPU_ARRAY[reason] packets, bytes per verdict reason
 *   denied4  PERCPU_ARRAY[set]   who tried to send without authorization:
 *                                MAUTH_DENIED_WAYS (src,grp) entries per set
 *
 * Per-rule counters live in a per-CPU array indexed by a slot that user space
 * allocates, not in the rule itself: the hot path then does one hash lookup
 * and two inlined array lookups, never an atomic on a shared cache line, and
 * user space can replace a rule's max TTL without racing the counters.
 *
 * The denied table is a set-associative cache, not a kernel hash map, because
 * a dropped packet already paid for one hash lookup (the rule's): a second
 * one in an LRU hash, plus atomics on its shared entry, cost more than the
 * whole filter's budget (docs/benchmarks.md). A pair's set is
 * mauth_denied_index() of (src, grp) under a random per-map seed; within the
 * set the least recently seen entry makes room for a new pair. Per CPU, so
 * no atomics: user space adds the CPUs' entries for a pair together.
 */
#ifndef MAUTH_H
#define MAUTH_H

#define MAUTH_LAYOUT 2

/* Verdict reasons: indexes into the reasons map. Keep in sync with
 * musersd/maps.py REASONS (a test checks the names and values). */
#define MAUTH_R_PASSED        0  /* authorized sender, TTL within its limit */
#define MAUTH_R_UNAUTHORIZED  1  /* no rule for (source, group) */
#define MAUTH_R_TTL           2  /* TTL above the rule's max TTL */
#define MAUTH_R_NOT_MULTICAST 3  /* IPv4 unicast or broadcast destination */
#define MAUTH_R_MALFORMED     4  /* truncated or inconsistent IPv4 header */
#define MAUTH_R_LINK_LOCAL    5  /* 224.0.0.0/24 control traffic */
#define MAUTH_R_NOT_IP        6  /* neither IPv4 nor IPv6 (ARP, LLDP, ...) */
#define MAUTH_R_IPV6          7  /* IPv6: passed unfiltered in this layout */
#define MAUTH_R_RATE          8  /* reserved: per-rule rate limit */
#define MAUTH_R_IGMP          9  /* IGMP to a routable group (v1/v2 reports) */
#define MAUTH_R_SAP_LOCAL    10  /* SAP from an unauthorized announcer: TTL set
                                  * to 1, so the router hears it but never
                                  * forwards it */
#define MAUTH_R_MAX          16

#define MAUTH_MODE_ENFORCE 0  /* the zero value: fresh maps fail closed */
#define MAUTH_MODE_MONITOR 1

/* struct mauth_rule.flags */
#define MAUTH_RULE_F_RATE  0x01  /* reserved: rate limit configured */

struct mauth_cfg {
    __u32 mode;        /* MAUTH_MODE_* */
    __u32 layout;      /* MAUTH_LAYOUT of whoever created the maps */
    __u32 max_rules;   /* capacity the maps were created with */
    __u32 denied_seed; /* random, set when the maps are created: places
                          pairs in the denied table's sets */
    __u64 state_id;    /* random, set when the maps are created: a change
                          means the router lost its rules */
};

struct mauth_key4 {
    __be32 src;
    __be32 grp;
};

struct mauth_rule {
    __u32 slot;       /* index into stats */
    __u8  max_ttl;
    __u8  flags;
    __u16 _pad;
};

struct mauth_stats {
    __u64 packets;
    __u64 bytes;
    __u64 last_seen;  /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC, coarse */
};

struct mauth_counter {
    __u64 packets;
    __u64 bytes;
};

/* One entry of the denied table: one CPU's view of one (src, grp) pair. */
struct mauth_denied {
    struct mauth_key4 key;  /* all zero: an empty entry (no group is 0.0.0.0) */
    __u64 packets;
    __u64 bytes;
    __u64 last_seen;  /* bpf_ktime_get_coarse_ns() */
    __u8  last_ttl;
    __u8  reason;     /* MAUTH_R_UNAUTHORIZED or MAUTH_R_TTL */
    __u8  _pad[6];
};

#define MAUTH_DENIED_WAYS 4

struct mauth_denied_set {
    struct mauth_denied way[MAUTH_DENIED_WAYS];
};

/* The set of the denied table that holds (src, grp): the addresses as the
 * host loads them from the packet, mixed with the seed, multiplied by 2^64/phi
 * (Fibonacci hashing), and the top 32 bits scaled to [0, nsets) with a
 * multiply-shift instead of a division. musersd/maps.py denied_index() is the
 * same function in Python: user space finds a pair's entry with it, so
 * "authorizing a denied pair clears its entry" (tests/integration/
 * test_xdp_program.py) fails if the two ever disagree. */
#define MAUTH_DENIED_MULT 0x9E3779B97F4A7C15ULL

static __always_inline __u32 mauth_denied_index(const struct mauth_key4 *key,
                                                __u32 seed, __u32 nsets)
{
    __u64 k = ((__u64)key->grp << 32 | key->src) ^ ((__u64)seed << 32 | seed);

    k *= MAUTH_DENIED_MULT;
    return (__u32)(((k >> 32) * nsets) >> 32);
}

#endif /* MAUTH_H */
