/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mauth: the structs and constants shared by the XDP program (mauth_xdp.c)
 * and user space (musersd/maps.py mirrors every struct with ctypes, and a
 * test checks those sizes against the BTF that clang wrote into the object).
 *
 * Every name carries the mauth_ / MAUTH_ prefix: this is compiled together
 * with kernel headers, and a type named like a kernel type fails to compile.
 *
 * Map layout (version MAUTH_LAYOUT, pinned under <pin-dir>/v<MAUTH_LAYOUT>/;
 * a change of any struct or map bumps it, so pins of another layout are
 * never reused: layout 3 added the prefix tries, rates and cfg.prefixes;
 * layout 4 the IPv6 maps and 32-byte IPv4 denied entries; layout 5 the
 * bindings map and the reasons wrong_iif, rpf_fail and wrong_mac; layout 6
 * the receiver maps (see "Receivers" below) and the reasons join_refused
 * and join_limit.
 * Layouts 5 and 6 change no map of the layout before, so musersd adopts
 * layout-4 and layout-5 pins:
 * it pins the same maps under v6/ as well, creates the maps the older
 * layout lacks, loads the new program and attaches it in place of the old
 * one, then unpins the older directory
 * (musersd/xdp_loader.py); rules, counters, mode and state id are kept.
 * Upgrading a router from a layout older than 4: the new musersd finds no pins,
 * creates empty maps with a new state id, loads its rule file and attaches
 * the new program in place of the old one in one netlink operation;
 * mauthserver sees the new state id at its next contact and re-installs
 * every rule. Nothing uses the old <pin-dir>/v<n>/ any more; it stays, and
 * holds its memory, until an operator removes it (musersd logs a warning).)
 *
 *   cfg         ARRAY[1]             mode, layout, capacity, denied-table seed,
 *                                    state id, which prefix tries hold rules
 *   rules4      HASH (src,grp)->rule  max TTL, flags, stats slot  (no prealloc)
 *   src_prefix4 LPM_TRIE {32+srclen, grp, src}->rule  source-prefix rules
 *   grp_prefix4 LPM_TRIE {32+grplen, src, grp}->rule  group-prefix rules
 *   rules6, src_prefix6, grp_prefix6   the same for IPv6 (128-bit addresses,
 *                                    prefix lengths 128 + len in the tries)
 *   rates       HASH slot->bucket    token buckets of rate-limited rules
 *   bindings    ARRAY[slot]          where a bound rule's sender may be: ingress
 *                                    interface, reverse path, source MAC, or the
 *                                    first (interface, MAC) seen (learned)
 *   stats       PERCPU_ARRAY[slot]   packets, bytes, last seen per rule
 *   reasons     PERCPU_ARRAY[reason] packets, bytes per verdict reason
 *   denied4     PERCPU_ARRAY[set]    who tried to send without authorization:
 *                                    MAUTH_DENIED_WAYS (src,grp) entries per set
 *   denied6     PERCPU_ARRAY[set]    the same for IPv6 pairs
 *
 * The two families have their own rule maps, so an IPv4 packet never pays
 * for IPv6's 32-byte keys and IPv4 tables stay as dense as before; the
 * stats slots, rates, reasons and cfg are shared, so a rule is a rule
 * whatever its family, and the capacity (max_rules) counts both.
 *
 * Which rule a packet from S to G falls under, first match wins:
 *
 *   1. the exact rule (S, G)                           rules4, one hash lookup
 *   2. the longest source prefix P with a rule (P, G)  src_prefix4
 *   3. the longest group prefix Q with a rule (S, Q)   grp_prefix4
 *
 * so an exact rule always wins, and a subnet's rule yields to a rule naming
 * a host of it. A rule has at most one prefix side: with both, "longest"
 * has no single meaning (a longer source prefix or a longer group prefix?)
 * and one trie cannot answer it. Steps 2 and 3 run only when step 1 missed
 * and only when cfg says their trie holds a rule (cfg.prefixes, read on the
 * miss path, which reads cfg anyway): a router with exact rules only pays
 * one load and one branch for prefixes, on drops only. Every rule, exact or
 * prefix, has the same value (struct mauth_rule), so the TTL and rate checks
 * and the counters behind its slot are the same code for all three.
 *
 * Per-rule counters live in a per-CPU array indexed by a slot that user space
 * allocates, not in the rule itself: the hot path then does one hash lookup
 * and two inlined array lookups, never an atomic on a shared cache line, and
 * user space can replace a rule's max TTL without racing the counters.
 *
 * Rate limits (MAUTH_RULE_F_RATE in the rule's flags; the program looks at
 * nothing else for a rule without it, so unlimited rules pay one test of a
 * byte it has already loaded): two token buckets per rule, packets and bits,
 * in the rule's entry of `rates`. The entry is shared by every CPU and
 * guarded by a bpf_spin_lock, because a limit is a promise about the rule's
 * whole traffic: per-CPU buckets would each allow the full rate, so a sender
 * whose packets the NIC spreads over n CPUs (RSS, or receive steering)
 * would get up to n times its limit, and splitting the rate between CPUs
 * would cut a sender whose flow sits on one CPU to a fraction of it. A
 * lock-free GCRA with compare-and-swap would do for one bucket, but two
 * limits must be checked and charged together (a packet over the bit limit
 * must not spend a packet token), which a lock makes plain. The lock is
 * held for a dozen instructions and only by packets of that rule, so it is
 * contended only by one sender's own packets on several CPUs at once.
 *
 * Tokens are kept in units of 1e-9 (a packet is MAUTH_NSEC tokens, a bit
 * MAUTH_NSEC tokens) so that refilling is one multiply and no division:
 * tokens += elapsed_ns * rate_per_second. Elapsed time is capped at the time
 * an empty bucket takes to fill (user space precomputes it), so the product
 * never exceeds the bucket's size, and sizes stay below 2^64: at most
 * 100 Gbit/s of bits (mauthcore/rules.py MAX_BPS) and 2^32 packets per second,
 * with buckets of 100 ms of the rate (at least one packet, at least 16 KiB).
 * The clock is the program's per-CPU cache of the coarse monotonic clock
 * (one tick, 4 ms at HZ=250): refills come in ticks, which the 100 ms
 * buckets absorb. A packet passes when both buckets (those with a limit)
 * hold its cost, and then pays it from both; otherwise it is dropped with
 * reason "rate" and pays nothing. Bits are counted as the program sees the
 * frame: Ethernet header, any VLAN tags and the IP packet.
 *
 * The denied table is a set-associative cache, not a kernel hash map, because
 * a dropped packet already paid for one hash lookup (the rule's): a second
 * one in an LRU hash, plus atomics on its shared entry, cost more than the
 * whole filter's budget (docs/benchmarks.md). A pair's set is
 * mauth_denied_index() of (src, grp) under a random per-map seed; within the
 * set the least recently seen entry makes room for a new pair. Per CPU, so
 * no atomics: user space adds the CPUs' entries for a pair together.
 *
 * Receivers (layout 6): the filter also judges the membership reports
 * (IGMP, MLD) that arrive on an interface whose policy inspects them
 * (mode closed or monitor, or a group limit; mauthcore/receivers.py). Maps:
 *
 *   recv_cfg     HASH ifindex->{mode, limit, freed}  each guarded
 *                                    interface's policy; open without a
 *                                    limit (or a miss) means "as before"
 *   recv_state   HASH ifindex->{added, counters}  groups inserted (the
 *                                    limit's count is added - cfg.freed) and
 *                                    the interface's counters (atomic adds:
 *                                    reports are rare)
 *   recv_gen     ARRAY[1] {word, inspecting}  which half of recv_rules is
 *                                    live and how many rules it holds, in one
 *                                    32-bit word; inspecting: interfaces that
 *                                    inspect (0: no report is ever parsed)
 *   recv_rules   ARRAY[2 * MAUTH_MAX_RECV_RULES]  two halves of receiver rules
 *   recv_hits    PERCPU_ARRAY[slot]  joins each rule allowed, last seen
 *   recv_joined  HASH (ifindex, family, group)->{first, last, left, reports,
 *                                    reporter}  the groups joined per interface
 *   recv_denied  LRU_HASH (ifindex, family, receiver, group, source)->
 *                                    {records, last seen, reason, version}
 *
 * Where: IPv4 IGMP to a multicast destination (224.0.0.0/24 included: IGMPv3
 * reports go to 224.0.0.22); IPv6 on the link-local branch whose next header
 * is ICMPv6 (type 130-132, 143) or an extension header (MLDv2 reports go to
 * ff02::16 behind a hop-by-hop header), and MLD with hop limit 1 to a
 * routable group. Everything else, and every report on an interface that
 * does not inspect, takes exactly the path and reason it took before
 * (link_local, igmp, mld); the data path never reaches receiver code.
 * Report handling is one subprogram (mauth_recv(), not inlined), so the
 * data path's code is as it was. It copies the IP packet into a per-CPU
 * buffer (at most MAUTH_RECV_BUF bytes; longer: malformed), verifies the
 * IGMP or ICMPv6 checksum, judges (mauthcore/receivers.py and
 * docs/operations.md give the semantics), and when a record or source was
 * refused writes the compacted report back, shortens the frame, and fixes
 * the IP length, record count and checksums. Exactly:
 *
 *   query (0x11, 130), other IGMP types .... untouched, the old reason
 *   checksum wrong, message shorter than its type's minimum (IGMP 8, MLDv1
 *   24, v3/v2 report 8), IPv4 or IPv6 fragment, extension headers that do
 *   not walk, packet longer than the buffer ... DROP, "malformed"
 *   leave (0x17, 132) .... kept, its group marked left, the old reason
 *   v1/v2 report (0x12, 0x16, 131): one any-source join of its group;
 *     refused ...................................... DROP, join_refused/limit
 *   v3 report (0x22, 143): records in order; a record or its sources past the
 *   message, or bytes after the last record ..... DROP, "malformed"
 *     type 0 or > 6 ............ record removed (malformed counter), whatever
 *                                its group: it joins nothing
 *     group of link scope ...... record kept, never judged or counted
 *     BLOCK_OLD (6) ............ kept
 *     IS_IN/TO_IN, no source ... kept, a leave: group marked left
 *     IS_EX/TO_EX .............. an any-source join: refused -> removed
 *     IS_IN/TO_IN/ALLOW with sources: each (source, group) judged alone,
 *       refused sources removed; none left: TO_IN kept with no source (a
 *       leave: the group is marked left), IS_IN and ALLOW removed
 *     nothing removed .......... passes byte for byte, the old reason
 *     something removed ........ rewritten, "join_refused" ("join_limit"
 *                                if every refusal was the limit's,
 *                                "malformed" if only unknown records went)
 *     no record left ........... DROP, same reason
 *
 * A join (receiver = IP source, group, source or none) on interface I: in
 * mode closed or monitor some rule must allow it (join_refused); then with
 * a limit L, a group not yet in recv_joined is refused when I already has L
 * groups (join_limit); an allowed join inserts or refreshes its group (on
 * every inspecting interface, limit or not, so operators see the groups).
 * Refusals go into recv_denied. Monitor (interface mode, or cfg's global
 * mode) judges, counts and records the same and passes the report
 * unchanged; a group over the limit is then not inserted. Two CPUs may
 * insert two new groups at once past the limit by one: the count is an
 * atomic add without fetch (-mcpu=v1), checked before the insert.
 * Counters per interface (recv_state, musersd/filter.py RECV_COUNTERS):
 * reports (every report and leave judged, malformed ones included), kept
 * (joins allowed), refused, limited (joins refused), leaves (leave messages
 * and records), rewritten (reports passed shortened), dropped (reports
 * dropped), malformed (reports that could not be judged or lost an unknown
 * record); monitor counts what enforce would have done.
 *
 * Why a linear scan: at most MAUTH_MAX_RECV_RULES rules, each a (receiver
 * prefix, group prefix, source, interface) with masks precomputed by user
 * space, and a join needs the first rule that allows it on both prefixes at
 * once, which no single trie answers; reports are control traffic (a few
 * per host and minute), so 512 compares per join cost nothing measurable.
 * The loops (records, sources, rules, copies, the checksum) are bpf_loop()
 * callbacks, each verified once whatever the counts, and their state lives
 * in the per-CPU work map (mauth_recv_work, not pinned), whose contents the
 * verifier treats as unknown, so no loop's state can keep it iterating.
 * Why double buffering: a rule set changes as a whole (a rule file
 * reload), and a report must never be judged against half of it. User
 * space writes the inactive half, then flips recv_gen's one word (half and
 * count together), which the program reads once per report.
 */
#ifndef MAUTH_H
#define MAUTH_H

#define MAUTH_LAYOUT 6

/* Verdict reasons: indexes into the reasons map. Keep in sync with
 * musersd/maps.py REASONS (a test checks the names and values). */
#define MAUTH_R_PASSED        0  /* authorized sender, TTL within its limit */
#define MAUTH_R_UNAUTHORIZED  1  /* no rule for (source, group) */
#define MAUTH_R_TTL           2  /* TTL above the rule's max TTL */
#define MAUTH_R_NOT_MULTICAST 3  /* IPv4 unicast or broadcast destination */
#define MAUTH_R_MALFORMED     4  /* truncated or inconsistent header (IPv4:
                                  * passed, the kernel drops it; IPv6 routable
                                  * multicast: dropped, see mauth_xdp.c) */
#define MAUTH_R_LINK_LOCAL    5  /* 224.0.0.0/24; IPv6 scope <= 2 (ff02::/16) */
#define MAUTH_R_NOT_IP        6  /* neither IPv4 nor IPv6 (ARP, LLDP, ...) */
#define MAUTH_R_MLD           7  /* MLD (ICMPv6 130-132, 143) with hop limit 1
                                  * to a routable group (MLDv1 reports go to
                                  * the group; was "ipv6" before layout 4) */
#define MAUTH_R_RATE          8  /* over the rule's packet or bit rate */
#define MAUTH_R_IGMP          9  /* IGMP to a routable group (v1/v2 reports) */
#define MAUTH_R_SAP_LOCAL    10  /* SAP from an unauthorized announcer: TTL set
                                  * to 1, so the router hears it but never
                                  * forwards it */
#define MAUTH_R_WRONG_IIF    11  /* bound rule: another ingress interface than
                                  * its own or the one it learned */
#define MAUTH_R_RPF_FAIL     12  /* bound rule: the source does not route back
                                  * through the ingress interface */
#define MAUTH_R_WRONG_MAC    13  /* bound rule: another source MAC than its own
                                  * or the one it learned */
#define MAUTH_R_JOIN_REFUSED 14  /* a membership report of which a join was
                                  * refused by the receiver rules (removed from
                                  * the report, or the report dropped) */
#define MAUTH_R_JOIN_LIMIT   15  /* the same, every refusal the group limit's */
#define MAUTH_R_MAX          16

#define MAUTH_MODE_ENFORCE 0  /* the zero value: fresh maps fail closed */
#define MAUTH_MODE_MONITOR 1

/* struct mauth_rule.flags */
#define MAUTH_RULE_F_RATE  0x01  /* the rule has an entry in rates */
#define MAUTH_RULE_F_BIND  0x02  /* the rule's entry in bindings holds */

/* struct mauth_cfg.prefixes: which prefix tries hold at least one rule */
#define MAUTH_CFG_SRC_PREFIXES  0x01
#define MAUTH_CFG_GRP_PREFIXES  0x02
#define MAUTH_CFG_SRC_PREFIXES6 0x04
#define MAUTH_CFG_GRP_PREFIXES6 0x08

#define MAUTH_NSEC 1000000000ULL  /* tokens per packet, and per bit */

struct mauth_cfg {
    __u32 mode;        /* MAUTH_MODE_* */
    __u32 layout;      /* MAUTH_LAYOUT of whoever created the maps */
    __u32 max_rules;   /* capacity the maps were created with */
    __u32 denied_seed; /* random, set when the maps are created: places
                          pairs in the denied table's sets */
    __u64 state_id;    /* random, set when the maps are created: a change
                          means the router lost its rules */
    __u32 prefixes;    /* MAUTH_CFG_*_PREFIXES: set after the first rule goes
                          into a trie, cleared after the last one leaves */
    __u32 _pad;
};

struct mauth_key4 {
    __be32 src;
    __be32 grp;
};

/* Key of both prefix tries: the exact side, then the prefix side, so that
 * the trie's longest match is the longest prefix for that exact address.
 * src_prefix4: exact = group, prefix = source; grp_prefix4: the other way. */
struct mauth_lpm4 {
    __u32  prefixlen;  /* 32 + the prefix's length */
    __be32 exact;
    __be32 prefix;
};

/* IPv6 addresses as four words each, in packet byte order (the words give
 * the struct 4-byte alignment; the bytes are exactly the packet's). */
struct mauth_key6 {
    __be32 src[4];
    __be32 grp[4];
};

struct mauth_lpm6 {
    __u32  prefixlen;  /* 128 + the prefix's length */
    __be32 exact[4];
    __be32 prefix[4];
};

struct mauth_rule {
    __u32 slot;       /* index into stats, and key of rates */
    __u8  max_ttl;
    __u8  flags;      /* MAUTH_RULE_F_* */
    __u16 _pad;
};

/* A rule's two token buckets (see "Rate limits" above). User space writes
 * the whole entry with BPF_F_LOCK (full buckets) when it sets a limit. */
struct mauth_rate {
    struct bpf_spin_lock lock;
    __u32 _pad;
    __u64 last;        /* clock of the last refill (mauth_now()) */
    __u64 pkt_tokens;  /* packets * MAUTH_NSEC */
    __u64 bit_tokens;  /* bits * MAUTH_NSEC */
    __u64 pps;         /* packets per second; 0: no packet limit */
    __u64 bps;         /* bits per second; 0: no bit limit */
    __u64 pkt_burst;   /* size of the packet bucket, in tokens */
    __u64 bit_burst;   /* size of the bit bucket, in tokens */
    __u64 pkt_fill;    /* ns an empty packet bucket takes to fill */
    __u64 bit_fill;    /* ns an empty bit bucket takes to fill */
};

/* Bindings (MAUTH_RULE_F_BIND; a rule without it pays one test of the flags
 * byte it has already loaded, as for rate limits). Checked after the rule is
 * found and before its TTL and rate, in this order, each only if its flag is
 * set: the ingress interface, the source MAC, the reverse path (a
 * bpf_fib_lookup() of the source from the ingress interface must leave by
 * it; the interface needs forwarding on, else every packet fails), then the
 * learned pair. A packet that fails a check is dropped before it can spend
 * the rule's tokens or pin its pair. Learning: the first packet that gets
 * there pins (ingress ifindex, source MAC) under the lock, so two CPUs
 * cannot pin two pairs; afterwards a packet from another interface or MAC is
 * dropped and counted in `moved`, which user space reads ("the sender
 * moved") and clears with the pair to re-arm (BPF_F_LOCK writes). Prefix
 * rules take IFACE and RPF only (user space refuses MAC and LEARN on them).
 * An entry is indexed by the rule's slot; user space writes it before it
 * sets the flag, and a slot's old entry is never read without the flag. */
#define MAUTH_BIND_IFACE 0x01
#define MAUTH_BIND_RPF   0x02
#define MAUTH_BIND_MAC   0x04
#define MAUTH_BIND_LEARN 0x08

struct mauth_binding {
    struct bpf_spin_lock lock;  /* guards learned, learned_*, moved */
    __u32 ifindex;              /* MAUTH_BIND_IFACE */
    __u8  mac[6];               /* MAUTH_BIND_MAC */
    __u8  flags;                /* MAUTH_BIND_* */
    __u8  learned;              /* 1: learned_ifindex and learned_mac hold */
    __u32 learned_ifindex;
    __u8  learned_mac[6];
    __u16 _pad;
    __u64 moved;                /* packets dropped for not matching the pair */
    __u32 offender_ifindex;     /* the last packet the binding dropped: its ingress interface, */
    __u8  offender_mac[6];      /* source MAC */
    __u8  offender_reason;      /* and reason (MAUTH_R_WRONG_IIF...); 0: none yet */
    __u8  _pad2;
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

/* One entry of the denied table: one CPU's view of one (src, grp) pair.
 * 32 bytes, so a set of four is two cache lines (it was three with 48):
 * a denied packet reads its set to find its pair, and under a flood of
 * pairs those reads are cache misses. last_seen is the coarse clock in
 * units of 2^20 ns (MAUTH_TICK_SHIFT, about 1 ms), kept to 32 bits: it
 * wraps after 52 days, so ages are computed modulo 2^32 (a pair silent
 * for longer looks recent again, which only affects which entry a full
 * set gives up first). */
#define MAUTH_TICK_SHIFT 20

struct mauth_denied {
    struct mauth_key4 key;  /* all zero: an empty entry (no group is 0.0.0.0) */
    __u64 packets;
    __u64 bytes;
    __u32 last_seen;  /* bpf_ktime_get_coarse_ns() >> MAUTH_TICK_SHIFT */
    __u8  last_ttl;
    __u8  reason;     /* MAUTH_R_UNAUTHORIZED, MAUTH_R_TTL or MAUTH_R_RATE */
    __u16 _pad;
};

struct mauth_denied6 {
    struct mauth_key6 key;
    __u64 packets;
    __u64 bytes;
    __u32 last_seen;
    __u8  last_ttl;   /* the hop limit */
    __u8  reason;
    __u16 _pad;
};

#define MAUTH_DENIED_WAYS 4

/* The program's read-only options (mauth_opts in mauth_xdp.c), set by the
 * loader before the load and frozen by the kernel with it. */
#define MAUTH_MAX_SAP 4  /* SAP groups per address family */

#define MAUTH_MAX_RPF_IFACES 8  /* interfaces with reverse-path checking by default */

struct mauth_opts {
    __u32 denied_sets;    /* sets in denied4 and denied6 */
    __u32 record_denied;  /* 0: drops are counted by reason only */
    __be32 sap4[MAUTH_MAX_SAP];     /* IPv4 SAP groups; 0 = unused */
    __be32 sap6[MAUTH_MAX_SAP][4];  /* IPv6 SAP groups; all 0 = unused */
    /* Interfaces on which every rule's packets must pass the reverse-path
     * check, bound or not (musersd --rpf-iface); 0 = unused, the first 0
     * ends the list. Read-only: with none, the verifier prunes the check. */
    __u32 rpf_ifindex[MAUTH_MAX_RPF_IFACES];
};

struct mauth_denied_set {
    struct mauth_denied way[MAUTH_DENIED_WAYS];
};

struct mauth_denied6_set {
    struct mauth_denied6 way[MAUTH_DENIED_WAYS];
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

/* The same for an IPv6 pair: each address folded to 32 bits by XOR of its
 * four words (loaded as the host loads them), then as above. */
static __always_inline __u32 mauth_denied6_index(const struct mauth_key6 *key,
                                                 __u32 seed, __u32 nsets)
{
    struct mauth_key4 folded = {
        .src = key->src[0] ^ key->src[1] ^ key->src[2] ^ key->src[3],
        .grp = key->grp[0] ^ key->grp[1] ^ key->grp[2] ^ key->grp[3],
    };

    return mauth_denied_index(&folded, seed, nsets);
}

/* Receivers (see "Receivers" above). Modes are ReceiverMode.code. */
#define MAUTH_RECV_OPEN    0
#define MAUTH_RECV_CLOSED  1
#define MAUTH_RECV_MONITOR 2

#define MAUTH_MAX_RECV_RULES 512   /* mauthcore/receivers.py MAX_RECEIVER_RULES */
#define MAUTH_RECV_IFACES    1024  /* entries of recv_cfg and recv_state */
#define MAUTH_RECV_JOINED    16384
#define MAUTH_RECV_DENIED    4096
#define MAUTH_RECV_BUF       16384 /* the longest IP packet judged; a power of 2 */

#define MAUTH_RECV_GEN_HALF  0x80000000u  /* recv_gen.word: the live half */
#define MAUTH_RECV_GEN_COUNT 0x0000ffffu  /* recv_gen.word: its rule count */

#define MAUTH_RECV_F_SOURCE  0x01  /* struct mauth_recv_rule.flags: SSM rule */

/* The per-interface counters, in musersd/filter.py RECV_COUNTERS order. */
#define MAUTH_RC_REPORTS   0
#define MAUTH_RC_KEPT      1
#define MAUTH_RC_REFUSED   2
#define MAUTH_RC_LIMITED   3
#define MAUTH_RC_LEAVES    4
#define MAUTH_RC_REWRITTEN 5
#define MAUTH_RC_DROPPED   6
#define MAUTH_RC_MALFORMED 7
#define MAUTH_RC_MAX       8

/* Written by user space only. An interface's groups joined now are
 * recv_state.added - freed: the program counts the groups it inserts, user
 * space those it sweeps, and neither writes the other's word (user space
 * cannot add atomically to a map value, and a whole-value write would lose
 * the program's concurrent adds). */
struct mauth_recv_cfg {
    __u32 mode;   /* MAUTH_RECV_* */
    __u32 limit;  /* groups at most; 0: no limit */
    __u64 freed;  /* groups of this interface swept from recv_joined */
};

/* Written by the program only (atomic adds). */
struct mauth_recv_state {
    __u64 added;  /* groups of this interface inserted into recv_joined */
    __u64 counters[MAUTH_RC_MAX];
};

struct mauth_recv_gen {
    __u32 word;        /* MAUTH_RECV_GEN_HALF | count */
    __u32 inspecting;  /* entries in recv_cfg */
};

/* A rule: IPv4 addresses in word 0, the other words and masks 0, so one
 * compare of four words serves both families. Addresses are pre-masked. */
struct mauth_recv_rule {
    __u32  ifindex;   /* 0: any guarded interface */
    __u8   family;    /* 4 or 6 */
    __u8   flags;     /* MAUTH_RECV_F_* */
    __u8   rcv_len;   /* prefix lengths, for user space reading back */
    __u8   grp_len;
    __u32  slot;      /* index into recv_hits */
    __u32  _pad;
    __be32 rcv[4];
    __be32 rcv_mask[4];
    __be32 grp[4];
    __be32 grp_mask[4];
    __be32 src[4];
};

struct mauth_recv_hits {
    __u64 matched;    /* joins (records or sources) it allowed */
    __u64 last_seen;  /* bpf_ktime_get_coarse_ns() of the last; 0 never */
};

struct mauth_recv_gkey {
    __u32  ifindex;
    __u8   family;
    __u8   _pad[3];
    __be32 grp[4];
};

struct mauth_recv_group {
    __u64  first_seen;
    __u64  last_seen;
    __u64  left;      /* when it was left; 0: joined (a report clears it) */
    __u64  reports;
    __be32 reporter[4];
};

struct mauth_recv_dkey {
    __u32  ifindex;
    __u8   family;
    __u8   _pad[3];
    __be32 rcv[4];
    __be32 grp[4];
    __be32 src[4];    /* 0: an any-source join */
};

struct mauth_recv_denied {
    __u64 records;    /* refused joins */
    __u64 last_seen;
    __u8  reason;     /* MAUTH_R_JOIN_REFUSED or MAUTH_R_JOIN_LIMIT */
    __u8  version;    /* IGMP 1-3, MLD 1-2 */
    __u8  _pad[6];
};

#endif /* MAUTH_H */
