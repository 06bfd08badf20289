// SPDX-License-Identifier: GPL-2.0
/*
 * mauth_xdp: the multicast sender filter, attached at XDP on a router's
 * internal interfaces. Compiled once, at build time, by clang -target bpf
 * (scripts/build_bpf.sh) into mauth_xdp.bpf.o, which musersd loads through
 * libbpf (musersd/bpfobj.py, musersd/xdp_loader.py). Nothing is compiled on a
 * router. What differs per router is set by the loader before the load:
 *
 *   map sizes          max_entries of the rule, rate, stats and denied maps
 *   pin paths          <pin-dir>/v<MAUTH_LAYOUT>/<name>, adopted if present
 *   mauth_opts         read-only globals (struct mauth_opts, mauth.h): the
 *                      SAP groups whose announcements are delivered to the
 *                      router itself, whether denied pairs are recorded, the
 *                      denied table's number of sets. The kernel freezes them
 *                      at load, so the verifier sees constants and prunes
 *                      the branches they turn off.
 *
 * The policy, in order (docs/protocol.md and the pure-Python model in
 * musersd/policy.py mirrors every branch and a test runs one table of cases
 * against both):
 *
 *   Ethernet, up to two VLAN tags (802.1Q / 802.1ad)
 *     frame too short for a header ............... pass, "malformed"
 *     neither IPv4 nor IPv6 ...................... pass, "not_ip"
 *   IPv4
 *     fixed header truncated, version != 4, IHL < 5, options past the end,
 *     total length inconsistent .................. pass, "malformed"
 *       (the kernel's ip_rcv() drops every one of these itself, so passing
 *        them cannot let a packet around the filter)
 *     destination not in 224.0.0.0/4 ............. pass, "not_multicast"
 *     destination in 224.0.0.0/24 ................ pass, "link_local"
 *     IGMP (IGMPv1/v2 reports go to the group) ... pass, "igmp"
 *       (ip_mr_input() never forwards IGMP: it goes to the routing daemon)
 *       IGMP to 224.0.0.0/24 or a routable group on an interface whose
 *       policy inspects reports: judged (mauth.h, "Receivers"): kept
 *       under the reason above, rewritten, or dropped (join_refused,
 *       join_limit, malformed)
 *     the rule for (source, group): exact, else longest source prefix
 *       for the group, else longest group prefix for the source (mauth.h)
 *     no rule .................................... DROP, "unauthorized"
 *     rule bound (mauth.h, "Bindings"): another ingress interface
 *       ........................................... DROP, "wrong_iif"
 *       another source MAC ........................ DROP, "wrong_mac"
 *       source not routed back via the interface .. DROP, "rpf_fail"
 *       learned pair, another interface (MAC) ..... DROP, "wrong_iif" ("wrong_mac")
 *     TTL > rule's max TTL ....................... DROP, "ttl"
 *     rule rate-limited, packet over its rate .... DROP, "rate"
 *       except SAP (UDP to port 9875 on a SAP group, unfragmented) from
 *       such a sender: TTL set to 1 .............. pass, "sap_local"
 *       (the router's own SAP listener, mauthserver, hears every announcer;
 *        ip_mr_forward() never forwards a packet whose TTL is not above
 *        the interface's threshold of 1, so it goes no further)
 *     otherwise .................................. pass, "passed" + rule stats
 *
 *   IPv6 (the same policy; the hop limit is the TTL)
 *     fixed header truncated, version != 6 ....... pass, "malformed"
 *       (not recognisably multicast; ipv6_rcv() drops it)
 *     destination not in ff00::/8 ................ pass, "not_multicast"
 *     scope <= 2 (ff00::/16 - ff02::/16, any flags) pass, "link_local"
 *     from here on the packet is routable multicast, and:
 *     payload length beyond the frame, an extension header truncated or
 *     beyond the payload, hop-by-hop not first, or more than
 *     MAUTH_IPV6_MAX_EXT extension headers ........ DROP, "malformed"
 *       (headers that cannot be walked cannot be judged: a SAP or MLD
 *        exception must not be claimable by a packet we cannot parse)
 *     MLD (ICMPv6 130, 131, 132, 143) with hop limit 1
 *       ........................................... pass, "mld"
 *       (MLDv1 reports go to the group; hop limit 1 is never forwarded)
 *       MLD, here or on the link-local branch (MLDv2 reports go to
 *       ff02::16), on an interface whose policy inspects reports: judged
 *       as IGMP is (mauth.h, "Receivers")
 *     the rule for (source, group), exactly as for IPv4: unauthorized,
 *     bindings, hop limit above max TTL, rate ............... DROP
 *       except SAP (UDP 9875 to an IPv6 SAP group, not a fragment):
 *       hop limit set to 1 (no header checksum in IPv6) pass, "sap_local"
 *     otherwise .................................. pass, "passed"
 *   Extension headers walked: hop-by-hop (first only), routing, fragment,
 *   destination options, AH; anything else ends the walk as the upper-layer
 *   protocol (ESP and No Next Header included). A non-first fragment has no
 *   upper-layer header: the walk stops at its fragment header.
 *
 * In monitor mode every DROP above becomes a pass, with identical counting,
 * and nothing is rewritten.
 * Drops are recorded in the denied table so operators see who is trying.
 * IP options need no parsing: TTL and addresses are in the fixed header; the
 * options only have to lie inside the packet.
 *
 * Cost (docs/benchmarks.md, bench/xdp_cost.py): a packet of an exact rule
 * without a rate limit, and a packet without a rule on a router without
 * prefix rules, does at most one hash lookup (the rule) and otherwise only
 * inlined array lookups, no atomics, and no helper call except once per
 * timer tick per CPU. Prefix rules add trie lookups to packets that miss the
 * exact table; rate limits add a hash lookup and a spin lock to packets of
 * rate-limited rules only; bindings an inlined array lookup and compares (a
 * FIB lookup for rpf, a spin lock for learn) to packets of bound rules only.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;

#include "mauth.h"

#define MAUTH_SAP_PORT 9875

/* Set by the loader before the load (musersd/maps.py Opts mirrors it); these
 * defaults, with no SAP group and an empty denied table, are never loaded. */
const volatile struct mauth_opts mauth_opts SEC(".rodata.opts") = {
    .denied_sets = 1,
};

/* Extension headers walked before giving up on an IPv6 packet. RFC 8200
 * section 4.1's recommended order has at most six before the upper layer
 * (hop-by-hop, destination options, routing, fragment, AH, destination
 * options); eight leaves room for a repeated one. */
#define MAUTH_IPV6_MAX_EXT 8
#define MAUTH_NEXTHDR_HOP      0
#define MAUTH_NEXTHDR_ROUTING 43
#define MAUTH_NEXTHDR_FRAGMENT 44
#define MAUTH_NEXTHDR_AUTH    51
#define MAUTH_NEXTHDR_DEST    60
#define MAUTH_NEXTHDR_ICMP    58

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MAUTH_BE16(x) ((__u16)((((x) & 0xff) << 8) | (((x) >> 8) & 0xff)))
#else
#define MAUTH_BE16(x) ((__u16)(x))
#endif

/* A 16-bit length field from the packet, in host order, as a value the
 * verifier knows is below 65536. Kernels before 6.x's newer range tracking
 * (6.1, Debian 12's kernel, among them) forget every bound across a byte swap,
 * so "pkt + swapped length" is rejected there as "math between pkt pointer and
 * register with unbounded min value". clang knows a swapped u16 fits in 16 bits
 * and would drop a plain mask; the empty asm hides the value from it, so the
 * mask reaches the verifier and gives it the bound. */
static __always_inline u32 mauth_len16(__be16 field)
{
    u32 v = MAUTH_BE16(field);

    asm volatile("" : "+r"(v));
    return v & 0xffff;
}

struct mauth_vlan_hdr {
    __be16 tci;
    __be16 encap_proto;
};

/* The pinned maps of this layout. The sizes written here are placeholders:
 * the loader sets every one before the load (the capacity in rules, the
 * denied table's sets), pins the maps it creates under the layout's
 * directory and adopts the pins that are there (musersd/xdp_loader.py). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_cfg);
    __uint(max_entries, 1);
} mauth_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct mauth_key4);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_rules4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct mauth_lpm4);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_src_prefix4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct mauth_lpm4);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_grp_prefix4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct mauth_key6);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_rules6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct mauth_lpm6);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_src_prefix6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct mauth_lpm6);
    __type(value, struct mauth_rule);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_grp_prefix6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, struct mauth_rate);
    __uint(max_entries, 1);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} mauth_rates SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_binding);
    __uint(max_entries, 1);
} mauth_bindings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_stats);
    __uint(max_entries, 1);
} mauth_stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_counter);
    __uint(max_entries, MAUTH_R_MAX);
} mauth_reasons SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_denied_set);
    __uint(max_entries, 1);
} mauth_denied4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_denied6_set);
    __uint(max_entries, 1);
} mauth_denied6 SEC(".maps");

/* Not pinned, not part of the layout: this program's own per-CPU cache of
 * bpf_ktime_get_coarse_ns(). That clock only moves once per timer tick, as
 * jiffies does, and reading jiffies is a single load (the verifier inlines
 * bpf_jiffies64) while the helper is a call that cost more than 3 ns a
 * packet. So the helper runs once per tick per CPU and every stamp is the
 * value the helper would have returned, give or take the instant between
 * the tick's jiffies update and its clock update. */
struct mauth_clock {
    u64 jiffies;
    u64 coarse_ns;
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_clock);
    __uint(max_entries, 1);
} mauth_clock SEC(".maps");

/* Not pinned either: one word of scratch per CPU, for mauth_forget(). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 1);
} mauth_scratch SEC(".maps");

/* `v`, as the verifier knows a word read back from a map: any value. The
 * verifier tracks every register exactly, so paths that computed different
 * values never merge and everything after them is checked once per path;
 * after this they are one. It costs an inlined array lookup, a store and a
 * load. The lookup cannot fail (index 0 of a one-entry array); if it did,
 * the answer would be ~0, which the caller refuses as malformed. */
static __always_inline u32 mauth_forget(u32 v)
{
    u32 zero = 0;
    volatile u64 *w = bpf_map_lookup_elem(&mauth_scratch, &zero);

    if (!w)
        return ~0u;
    *w = v;
    return *w;
}

static __always_inline u64 mauth_now(void)
{
    u32 zero = 0;
    struct mauth_clock *c = bpf_map_lookup_elem(&mauth_clock, &zero);
    u64 j = bpf_jiffies64();

    if (!c)
        return bpf_ktime_get_coarse_ns();
    if (c->jiffies != j) {
        c->jiffies = j;
        c->coarse_ns = bpf_ktime_get_coarse_ns();
    }
    return c->coarse_ns;
}

/* The denied table's clock: mauth_now() in units of 2^MAUTH_TICK_SHIFT ns. */
static __always_inline u32 mauth_tick(void)
{
    return (u32)(mauth_now() >> MAUTH_TICK_SHIFT);
}

static __always_inline int mauth_count(u32 reason, u64 len)
{
    struct mauth_counter *c = bpf_map_lookup_elem(&mauth_reasons, &reason);

    if (c) {
        c->packets += 1;
        c->bytes += len;
    }
    return XDP_PASS;
}

/* The end of every drop, of both families: count it under `reason`, and
 * drop it, or pass it in monitor mode (cfg says which; without cfg, drop). */
static __always_inline int mauth_deny(struct mauth_cfg *cfg, u32 reason, u64 len)
{
    mauth_count(reason, len);
    if (cfg && cfg->mode == MAUTH_MODE_MONITOR)
        return XDP_PASS;
    return XDP_DROP;
}

/* Count a dropped packet against its (src, grp) in this CPU's denied table:
 * the pair's entry in its set, or else the set's least recently seen entry
 * (an empty one, with no packets, counts as the oldest), which then starts
 * over for this pair; one pass over the ways finds either. The loop is
 * deliberately not unrolled: on the real receive path (bench/forwarding.py)
 * the drop path's cost is dominated by how many cache lines of code and
 * data it touches, not by instructions executed, and the unrolled search
 * and eviction loops made mauth's drops about 4 % dearer than xdp-filter's
 * (which keeps no record of who was dropped); rolled, the two are level.
 * mauth_note_denied6() is the same for IPv6 pairs. */
/* The body of both: `set` is the pair's set, `eq` compares two keys. A
 * macro because the two families' sets are different types. */
#define MAUTH_DENIED_RECORD(set, key, eq, ttl, reason, len)                  \
    do {                                                                     \
        typeof(&(set)->way[0]) d_ = &(set)->way[0], w_;                      \
        u32 now_ = mauth_tick(), age_, oldest_ = 0;                          \
                                                                             \
        _Pragma("clang loop unroll(disable)")                                \
        for (int i_ = 0; i_ < MAUTH_DENIED_WAYS; i_++) {                     \
            w_ = &(set)->way[i_];                                            \
            if (eq(&w_->key, key)) {                                         \
                d_ = w_;                                                     \
                goto count_;                                                 \
            }                                                                \
            age_ = w_->packets ? now_ - w_->last_seen : ~0u;                 \
            if (age_ > oldest_) {                                            \
                oldest_ = age_;                                              \
                d_ = w_;                                                     \
            }                                                                \
        }                                                                    \
        d_->key = *(key);                                                    \
        d_->packets = 0;                                                     \
        d_->bytes = 0;                                                       \
    count_:                                                                  \
        d_->packets += 1;                                                    \
        d_->bytes += (len);                                                  \
        d_->last_seen = now_;                                                \
        d_->last_ttl = (ttl);                                                \
        d_->reason = (reason);                                               \
    } while (0)

static __always_inline int mauth_key4_eq(const struct mauth_key4 *a, const struct mauth_key4 *b)
{
    return a->src == b->src && a->grp == b->grp;
}

static __always_inline int mauth_key6_eq(const struct mauth_key6 *a, const struct mauth_key6 *b)
{
    return a->src[0] == b->src[0] && a->src[1] == b->src[1] && a->src[2] == b->src[2] &&
           a->src[3] == b->src[3] && a->grp[0] == b->grp[0] && a->grp[1] == b->grp[1] &&
           a->grp[2] == b->grp[2] && a->grp[3] == b->grp[3];
}

static __always_inline void mauth_note_denied(const struct mauth_key4 *key, u32 seed,
                                              u8 ttl, u8 reason, u64 len)
{
    u32 idx = mauth_denied_index(key, seed, mauth_opts.denied_sets);
    struct mauth_denied_set *set;

    if (!mauth_opts.record_denied)
        return;
    set = bpf_map_lookup_elem(&mauth_denied4, &idx);
    if (set)
        MAUTH_DENIED_RECORD(set, key, mauth_key4_eq, ttl, reason, len);
}

static __always_inline void mauth_note_denied6(const struct mauth_key6 *key, u32 seed,
                                               u8 ttl, u8 reason, u64 len)
{
    u32 idx = mauth_denied6_index(key, seed, mauth_opts.denied_sets);
    struct mauth_denied6_set *set;

    if (!mauth_opts.record_denied)
        return;
    set = bpf_map_lookup_elem(&mauth_denied6, &idx);
    if (set)
        MAUTH_DENIED_RECORD(set, key, mauth_key6_eq, ttl, reason, len);
}

/* A SAP announcement: UDP to port 9875 on one of the SAP groups, not a
 * fragment. The group is compared first: it is what rules out almost every
 * denied packet, at the cost of four register compares. Unused slots are 0,
 * which no multicast destination equals. */
static __always_inline int mauth_is_sap(struct iphdr *ip, void *l3, u32 ihl, void *data_end)
{
    u32 grp = ip->daddr;
    struct udphdr *udp;

    if (grp != mauth_opts.sap4[0] && grp != mauth_opts.sap4[1] &&
        grp != mauth_opts.sap4[2] && grp != mauth_opts.sap4[3])
        return 0;
    if (ip->protocol != IPPROTO_UDP || (ip->frag_off & MAUTH_BE16(0x3fff)))
        return 0;
    udp = l3 + ihl * 4;
    if ((void *)(udp + 1) > data_end)
        return 0;
    return udp->dest == MAUTH_BE16(MAUTH_SAP_PORT);
}

/* Set the TTL to 1, updating the header checksum incrementally (RFC 1624,
 * eqn. 3: HC' = ~(~HC + ~m + m'), on the 16-bit word holding TTL and
 * protocol; one's complement sums do not depend on byte order). */
static __always_inline void mauth_ttl_to_one(struct iphdr *ip)
{
    u16 *word = (u16 *)&ip->ttl;
    u16 old = *word;
    u32 sum;

    ip->ttl = 1;
    sum = (u16)~ip->check + (u16)~old + *word;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip->check = ~sum;
}

/* The prefix rule for a packet that has no exact rule: the longest source
 * prefix for its group, else the longest group prefix for its source. Only
 * the tries that `prefixes` (cfg) says are non-empty are looked at. */
static __always_inline struct mauth_rule *mauth_prefix_rule(const struct mauth_key4 *key,
                                                           u32 prefixes)
{
    struct mauth_lpm4 lk = { .prefixlen = 64 };
    struct mauth_rule *rule;

    if (prefixes & MAUTH_CFG_SRC_PREFIXES) {
        lk.exact = key->grp;
        lk.prefix = key->src;
        rule = bpf_map_lookup_elem(&mauth_src_prefix4, &lk);
        if (rule)
            return rule;
    }
    if (prefixes & MAUTH_CFG_GRP_PREFIXES) {
        lk.exact = key->src;
        lk.prefix = key->grp;
        return bpf_map_lookup_elem(&mauth_grp_prefix4, &lk);
    }
    return NULL;
}

/* mauth_prefix_rule() for IPv6. */
static __always_inline struct mauth_rule *mauth_prefix_rule6(const struct mauth_key6 *key,
                                                            u32 prefixes)
{
    struct mauth_lpm6 lk = { .prefixlen = 256 };
    struct mauth_rule *rule;

    if (prefixes & MAUTH_CFG_SRC_PREFIXES6) {
        __builtin_memcpy(lk.exact, key->grp, sizeof(lk.exact));
        __builtin_memcpy(lk.prefix, key->src, sizeof(lk.prefix));
        rule = bpf_map_lookup_elem(&mauth_src_prefix6, &lk);
        if (rule)
            return rule;
    }
    if (prefixes & MAUTH_CFG_GRP_PREFIXES6) {
        __builtin_memcpy(lk.exact, key->src, sizeof(lk.exact));
        __builtin_memcpy(lk.prefix, key->grp, sizeof(lk.prefix));
        return bpf_map_lookup_elem(&mauth_grp_prefix6, &lk);
    }
    return NULL;
}

/* One bucket's tokens after `elapsed` ns at `rate` per second: never more
 * than `burst`, and no multiply larger than `fill` * rate (<= burst). */
static __always_inline u64 mauth_refill(u64 tokens, u64 rate, u64 burst, u64 fill, u64 elapsed)
{
    u64 add;

    if (elapsed > fill)
        elapsed = fill;
    add = elapsed * rate;
    if (add >= burst - tokens)
        return burst;
    return tokens + add;
}

/* Whether a packet of `len` bytes fits the rule's rate limits; if it does it
 * is charged to both buckets. Nothing in the locked section calls out. A
 * rule whose entry is missing (never, unless user space is mid-update) is
 * not limited. */
static __always_inline int mauth_within_rate(u32 slot, u64 len)
{
    struct mauth_rate *r = bpf_map_lookup_elem(&mauth_rates, &slot);
    u64 now = mauth_now();
    u64 bits = len * 8 * MAUTH_NSEC;
    u64 pkt, bit, elapsed;
    int ok = 1;

    if (!r)
        return 1;
    bpf_spin_lock(&r->lock);
    elapsed = 0;
    if (now > r->last) {
        elapsed = now - r->last;
        r->last = now;
    }
    pkt = r->pkt_tokens;
    bit = r->bit_tokens;
    if (r->pps) {
        pkt = mauth_refill(pkt, r->pps, r->pkt_burst, r->pkt_fill, elapsed);
        if (pkt < MAUTH_NSEC)
            ok = 0;
    }
    if (r->bps) {
        bit = mauth_refill(bit, r->bps, r->bit_burst, r->bit_fill, elapsed);
        if (bit < bits)
            ok = 0;
    }
    if (ok) {
        if (r->pps)
            pkt -= MAUTH_NSEC;
        if (r->bps)
            bit -= bits;
    }
    r->pkt_tokens = pkt;
    r->bit_tokens = bit;
    bpf_spin_unlock(&r->lock);
    return ok;
}

#define MAUTH_AF_INET   2
#define MAUTH_AF_INET6 10

/* Whether `src` (one word for IPv4, four for IPv6) routes back through the
 * interface the packet came in on: the FIB's answer for it, looked up as a
 * packet arriving there, leaves by that interface. A route whose neighbour
 * is not resolved yet still names its interface (NO_NEIGH); every other
 * failure (no route, blackhole, forwarding off) fails the check. tot_len 0:
 * no MTU check. */
static __always_inline int mauth_rpf(struct xdp_md *ctx, const __be32 *src, int v6)
{
    struct bpf_fib_lookup fib = {};
    u32 iif = ctx->ingress_ifindex;
    long rc;

    fib.ifindex = iif;
    if (v6) {
        fib.family = MAUTH_AF_INET6;
        __builtin_memcpy(fib.ipv6_dst, src, 16);
    } else {
        fib.family = MAUTH_AF_INET;
        fib.ipv4_dst = src[0];
    }
    rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
    return (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) && fib.ifindex == iif;
}

/* The check of a bound rule's binding (mauth.h, "Bindings"): MAUTH_R_PASSED
 * or the reason to drop. The frame's source MAC comes as a word and a
 * half-word. A missing entry (never: an array) fails closed. */
static __always_inline u32 mauth_bound(struct xdp_md *ctx, u32 slot, u32 mac_hi, u16 mac_lo,
                                       const __be32 *src, int v6)
{
    struct mauth_binding *b = bpf_map_lookup_elem(&mauth_bindings, &slot);
    u32 iif = ctx->ingress_ifindex, reason = MAUTH_R_PASSED;
    u8 flags;

    if (!b)
        return MAUTH_R_WRONG_IIF;
    flags = b->flags;
    if ((flags & MAUTH_BIND_IFACE) && b->ifindex != iif) {
        reason = MAUTH_R_WRONG_IIF;
    } else if ((flags & MAUTH_BIND_MAC) &&
               (*(u32 *)&b->mac[0] != mac_hi || *(u16 *)&b->mac[4] != mac_lo)) {
        reason = MAUTH_R_WRONG_MAC;
    } else if ((flags & MAUTH_BIND_RPF) && !mauth_rpf(ctx, src, v6)) {
        reason = MAUTH_R_RPF_FAIL;
    } else if (flags & MAUTH_BIND_LEARN) {
        bpf_spin_lock(&b->lock);
        if (!b->learned) {
            b->learned_ifindex = iif;
            *(u32 *)&b->learned_mac[0] = mac_hi;
            *(u16 *)&b->learned_mac[4] = mac_lo;
            b->learned = 1;
        } else if (b->learned_ifindex != iif) {
            reason = MAUTH_R_WRONG_IIF;
        } else if (*(u32 *)&b->learned_mac[0] != mac_hi || *(u16 *)&b->learned_mac[4] != mac_lo) {
            reason = MAUTH_R_WRONG_MAC;
        }
        if (reason != MAUTH_R_PASSED)
            b->moved += 1;
        bpf_spin_unlock(&b->lock);
    }
    if (reason != MAUTH_R_PASSED) {
        /* Who it was, for the operator's denied view: plain stores, so two
         * CPUs dropping two offenders at once may leave a mix of both. */
        b->offender_ifindex = iif;
        *(u32 *)&b->offender_mac[0] = mac_hi;
        *(u16 *)&b->offender_mac[4] = mac_lo;
        b->offender_reason = reason;
    }
    return reason;
}

/* Whether interface `iif` checks the reverse path of every rule's packets
 * (mauth_opts.rpf_ifindex). The options are frozen before the load, so
 * with no such interface the verifier knows the first test is true and
 * drops the rest: an unbound rule pays nothing for the feature. */
static __always_inline int mauth_rpf_iface(u32 iif)
{
    if (!mauth_opts.rpf_ifindex[0])
        return 0;
#pragma unroll
    for (int i = 0; i < MAUTH_MAX_RPF_IFACES; i++) {
        if (!mauth_opts.rpf_ifindex[i])
            return 0;
        if (mauth_opts.rpf_ifindex[i] == iif)
            return 1;
    }
    return 0;
}

/* Where a packet came from, for a bound rule's check: the XDP context, the
 * frame's source MAC and the source address (four words for IPv6). */
struct mauth_origin {
    struct xdp_md *ctx;
    u32 mac_hi;
    u16 mac_lo;
    const __be32 *src;
    int v6;
};

/* The verdict on a packet of `len` bytes with TTL (hop limit) `ttl` that
 * falls under `rule`: MAUTH_R_PASSED, after counting it against the rule,
 * or the reason to drop it. */
static __always_inline u32 mauth_rule_verdict(struct mauth_rule *rule, u8 ttl, u64 len,
                                              const struct mauth_origin *o)
{
    struct mauth_stats *st;
    u32 slot, bound;

    if (rule->flags & MAUTH_RULE_F_BIND) {
        bound = mauth_bound(o->ctx, rule->slot, o->mac_hi, o->mac_lo, o->src, o->v6);
        if (bound != MAUTH_R_PASSED)
            return bound;
    }
    if (mauth_rpf_iface(o->ctx->ingress_ifindex) && !mauth_rpf(o->ctx, o->src, o->v6))
        return MAUTH_R_RPF_FAIL;
    if (ttl > rule->max_ttl)
        return MAUTH_R_TTL;
    if ((rule->flags & MAUTH_RULE_F_RATE) && !mauth_within_rate(rule->slot, len))
        return MAUTH_R_RATE;
    slot = rule->slot;
    st = bpf_map_lookup_elem(&mauth_stats, &slot);
    if (st) {
        st->packets += 1;
        st->bytes += len;
        st->last_seen = mauth_now();
    }
    return MAUTH_R_PASSED;
}

static __always_inline int mauth_ipv6_ext(u8 nexthdr)
{
    return nexthdr == MAUTH_NEXTHDR_HOP || nexthdr == MAUTH_NEXTHDR_ROUTING ||
           nexthdr == MAUTH_NEXTHDR_FRAGMENT || nexthdr == MAUTH_NEXTHDR_AUTH ||
           nexthdr == MAUTH_NEXTHDR_DEST;
}

/* ------------------------------------------------------------------ receivers
 *
 * Membership reports on interfaces that inspect them (mauth.h, "Receivers":
 * the maps, the semantics, why a linear scan in bpf_loop() and why the rule
 * table is double-buffered). Everything below runs only for IGMP and MLD
 * (and, on an inspecting interface, for link-local IPv6 with an extension
 * header), inside the subprogram mauth_recv(): the data path is untouched.
 */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, struct mauth_recv_cfg);
    __uint(max_entries, MAUTH_RECV_IFACES);
} mauth_recv_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, struct mauth_recv_state);
    __uint(max_entries, MAUTH_RECV_IFACES);
} mauth_recv_state SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_recv_gen);
    __uint(max_entries, 1);
} mauth_recv_gen SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_recv_rule);
    __uint(max_entries, 2 * MAUTH_MAX_RECV_RULES);
} mauth_recv_rules SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_recv_hits);
    __uint(max_entries, MAUTH_MAX_RECV_RULES);
} mauth_recv_hits SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct mauth_recv_gkey);
    __type(value, struct mauth_recv_group);
    __uint(max_entries, MAUTH_RECV_JOINED);
} mauth_recv_joined SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, struct mauth_recv_dkey);
    __type(value, struct mauth_recv_denied);
    __uint(max_entries, MAUTH_RECV_DENIED);
} mauth_recv_denied SEC(".maps");

#define MAUTH_RECV_MASK (MAUTH_RECV_BUF - 1)

/* One report's judgement in progress, per CPU, not pinned. Every loop's
 * state is here rather than on the stack: the verifier knows nothing of a
 * map value's contents, so each callback is verified once, for any state. */
struct mauth_recv_work {
    u64 now;
    u64 sum;           /* checksum accumulator */
    u32 ifindex;
    u32 family;        /* 4 or 6 */
    u32 mode;          /* the interface's MAUTH_RECV_* */
    u32 limit;
    u64 freed;         /* the interface's recv_cfg.freed */
    u32 base;          /* first index of recv_rules' live half */
    u32 nrules;
    u32 end;           /* length of the IP packet in buf */
    u32 rd, wr;        /* next record to read, where the next kept one goes */
    u32 hdr, width;    /* record header and address sizes: 8, 4 or 20, 16 */
    u32 srd, swr;      /* first source of the record, where its kept ones go */
    u32 kept;          /* sources of the record kept so far */
    u32 cp_from, cp_to;
    u32 c_off;         /* where the checksum's words start */
    u32 hit;           /* slot + 1 of the rule that allowed the join; 0: none */
    u32 has_src;
    u32 version;
    u32 nh, frag, later;  /* the IPv6 walk */
    u32 refused, limited, allowed, leaves, bad, records, removed, err;
    struct mauth_recv_gkey gkey;
    struct mauth_recv_dkey dkey;
    struct mauth_recv_group gval;
    struct mauth_recv_denied dval;
    u8 buf[MAUTH_RECV_BUF + 64];  /* the IP packet; 64 bytes of slack for masked reads */
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct mauth_recv_work);
    __uint(max_entries, 1);
} mauth_recv_work SEC(".maps");

#define MAUTH_RB(w, o) ((w)->buf[(o) & MAUTH_RECV_MASK])

static __always_inline struct mauth_recv_work *mauth_work(void)
{
    u32 zero = 0;

    return bpf_map_lookup_elem(&mauth_recv_work, &zero);
}

static __always_inline u32 mauth_rb16(struct mauth_recv_work *w, u32 o)
{
    u8 *p = &w->buf[o & MAUTH_RECV_MASK];

    return (u32)p[0] << 8 | p[1];
}

static __always_inline __be32 mauth_rb32(struct mauth_recv_work *w, u32 o)
{
    return *(__be32 *)&w->buf[o & MAUTH_RECV_MASK];
}

static __always_inline void mauth_wb16(struct mauth_recv_work *w, u32 o, u32 v)
{
    u8 *p = &w->buf[o & MAUTH_RECV_MASK];

    p[0] = v >> 8;
    p[1] = v;
}

static __always_inline u32 mauth_fold(u64 sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum & 0xffff;
}

static long mauth_sum_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();

    if (!w)
        return 1;
    w->sum += mauth_rb32(w, w->c_off + i * 4);
    return 0;
}

/* The one's complement sum of n bytes of buf from `off` (a multiple of 4),
 * as 32-bit words loaded as the host loads them; bytes after the end count
 * as zero. */
static __always_inline u64 mauth_recv_sum(struct mauth_recv_work *w, u32 off, u32 n)
{
    u32 e = off + n;

    MAUTH_RB(w, e) = 0;
    MAUTH_RB(w, e + 1) = 0;
    MAUTH_RB(w, e + 2) = 0;
    w->c_off = off;
    w->sum = 0;
    bpf_loop((n + 3) / 4, mauth_sum_cb, NULL, 0);
    return w->sum;
}

/* The IPv6 pseudo-header's sum (RFC 8200 8.1) for an ICMPv6 message of `n` bytes. */
static __always_inline u64 mauth_pseudo6(struct mauth_recv_work *w, u32 n)
{
    u64 sum = 0;

#pragma unroll
    for (int k = 0; k < 8; k++)
        sum += *(__be32 *)&w->buf[8 + 4 * k];
    return sum + __builtin_bswap32(n) + __builtin_bswap32(MAUTH_NEXTHDR_ICMP);
}

static long mauth_copy_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();

    if (!w)
        return 1;
    *(__be32 *)&w->buf[(w->cp_to + i * 4) & MAUTH_RECV_MASK] = mauth_rb32(w, w->cp_from + i * 4);
    return 0;
}

/* Move n bytes (a multiple of 4) of buf from `from` down to `to` (to <= from). */
static __always_inline void mauth_recv_move(struct mauth_recv_work *w, u32 from, u32 to, u32 n)
{
    if (from == to || !n)
        return;
    w->cp_from = from;
    w->cp_to = to;
    bpf_loop(n / 4, mauth_copy_cb, NULL, 0);
}

/* Whether rule i of the live half allows the join in w (dkey: receiver,
 * group, source if has_src): the first that does ends the scan. */
static long mauth_rule_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();
    struct mauth_recv_rule *r;
    u32 idx;

    if (!w)
        return 1;
    idx = w->base + i;
    r = bpf_map_lookup_elem(&mauth_recv_rules, &idx);
    if (!r)
        return 1;
    if (r->family != w->family || (r->ifindex && r->ifindex != w->ifindex))
        return 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        if ((w->dkey.rcv[k] & r->rcv_mask[k]) != r->rcv[k] || (w->dkey.grp[k] & r->grp_mask[k]) != r->grp[k])
            return 0;
    }
    if (r->flags & MAUTH_RECV_F_SOURCE) {
        if (!w->has_src)
            return 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (w->dkey.src[k] != r->src[k])
                return 0;
        }
    }
    w->hit = r->slot + 1;
    return 1;
}

/* Record a refused join in recv_denied. */
static __always_inline void mauth_recv_refuse(struct mauth_recv_work *w, u8 reason)
{
    struct mauth_recv_denied *d = bpf_map_lookup_elem(&mauth_recv_denied, &w->dkey);

    if (d) {
        __sync_fetch_and_add(&d->records, 1);
        d->last_seen = w->now;
        d->reason = reason;
        d->version = w->version;
        return;
    }
    w->dval.records = 1;
    w->dval.last_seen = w->now;
    w->dval.reason = reason;
    w->dval.version = w->version;
    bpf_map_update_elem(&mauth_recv_denied, &w->dkey, &w->dval, BPF_ANY);
}

/* Judge the join in w (dkey: receiver, group and, with has_src, source):
 * 0 allowed (its group inserted or refreshed), 1 refused by the rules,
 * 2 refused by the limit. Inlined, not a subprogram: 6.1's verifier counts
 * every frame of the deepest chain (the program, mauth_recv(), a record, a
 * source, a rule) at 32 bytes or more against the 512 of the stack, and
 * the program's own frame takes 384. */
static __always_inline long mauth_recv_judge(u64 has_src)
{
    struct mauth_recv_work *w = mauth_work();
    struct mauth_recv_group *e;
    struct mauth_recv_state *st;
    struct mauth_recv_hits *h;
    u32 slot;

    if (!w)
        return 1;
    w->has_src = has_src;
    w->hit = 0;
    if (w->mode != MAUTH_RECV_OPEN) {
        bpf_loop(w->nrules, mauth_rule_cb, NULL, 0);
        if (!w->hit) {
            mauth_recv_refuse(w, MAUTH_R_JOIN_REFUSED);
            w->refused += 1;
            return 1;
        }
    }
    e = bpf_map_lookup_elem(&mauth_recv_joined, &w->gkey);
    if (!e) {
        st = bpf_map_lookup_elem(&mauth_recv_state, &w->ifindex);
        if (w->limit && (!st || st->added - w->freed >= w->limit))
            goto limit;
        w->gval.first_seen = w->now;
        w->gval.last_seen = w->now;
        w->gval.left = 0;
        w->gval.reports = 1;
        __builtin_memcpy(w->gval.reporter, w->dkey.rcv, sizeof(w->gval.reporter));
        if (bpf_map_update_elem(&mauth_recv_joined, &w->gkey, &w->gval, BPF_NOEXIST) == 0) {
            if (st)
                __sync_fetch_and_add(&st->added, 1);
        } else if (w->limit && !bpf_map_lookup_elem(&mauth_recv_joined, &w->gkey)) {
            goto limit;  /* the table is full: no place for the group */
        }
    } else {
        e->last_seen = w->now;
        e->left = 0;
        __sync_fetch_and_add(&e->reports, 1);
        __builtin_memcpy(e->reporter, w->dkey.rcv, sizeof(e->reporter));
    }
    if (w->hit) {
        slot = w->hit - 1;
        h = bpf_map_lookup_elem(&mauth_recv_hits, &slot);
        if (h) {
            h->matched += 1;
            h->last_seen = w->now;
        }
    }
    w->allowed += 1;
    return 0;
limit:
    mauth_recv_refuse(w, MAUTH_R_JOIN_LIMIT);
    w->limited += 1;
    return 2;
}

static __always_inline void mauth_recv_left(struct mauth_recv_work *w)
{
    struct mauth_recv_group *e = bpf_map_lookup_elem(&mauth_recv_joined, &w->gkey);

    if (e)
        e->left = w->now;
    w->leaves += 1;
}

/* Whether the group in w is of link scope: 224.0.0.0/24, or IPv6 scope <= 2. */
static __always_inline int mauth_recv_link_scope(struct mauth_recv_work *w)
{
    u8 *g = (u8 *)w->dkey.grp;

    if (w->family == 4)
        return g[0] == 224 && g[1] == 0 && g[2] == 0;
    return g[0] == 0xff && (g[1] & 0x0f) <= 2;
}

/* The group at buf[o] into both keys (IPv4: word 0, the others 0). */
static __always_inline void mauth_recv_group_at(struct mauth_recv_work *w, u32 o)
{
#pragma unroll
    for (int k = 0; k < 4; k++) {
        __be32 v = k * 4 < w->width ? mauth_rb32(w, o + k * 4) : 0;

        w->dkey.grp[k] = v;
        w->gkey.grp[k] = v;
    }
}

/* Source j of the record being judged: judged alone, moved down if kept. */
static long mauth_src_cb(u32 j, void *unused)
{
    struct mauth_recv_work *w = mauth_work();
    u32 from, to;

    if (!w)
        return 1;
    from = w->srd + j * w->width;
#pragma unroll
    for (int k = 0; k < 4; k++)
        w->dkey.src[k] = k * 4 < w->width ? mauth_rb32(w, from + k * 4) : 0;
    if (mauth_recv_judge(1)) {
        w->removed = 1;
        return 0;
    }
    w = mauth_work();  /* the verifier forgets map values across a call */
    if (!w)
        return 1;
    to = w->swr + w->kept * w->width;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        if (k * 4 < w->width)
            *(__be32 *)&w->buf[(to + k * 4) & MAUTH_RECV_MASK] = w->dkey.src[k];
    }
    w->kept += 1;
    return 0;
}

#define MAUTH_REC_IS_IN  1
#define MAUTH_REC_IS_EX  2
#define MAUTH_REC_TO_IN  3
#define MAUTH_REC_TO_EX  4
#define MAUTH_REC_ALLOW  5
#define MAUTH_REC_BLOCK  6

/* Group record i of an IGMPv3 or MLDv2 report, at w->rd: only its length
 * checked, so that a report that does not hold together is refused before
 * any of its joins leaves a trace. */
static long mauth_rec_len_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();
    u32 rd, o, rlen;

    if (!w)
        return 1;
    rd = w->rd;
    if (rd + w->hdr > w->end) {
        w->err = 1;
        return 1;
    }
    o = rd & MAUTH_RECV_MASK;
    rlen = w->hdr + mauth_rb16(w, o + 2) * w->width + MAUTH_RB(w, o + 1) * 4;
    if (rd + rlen > w->end) {
        w->err = 1;
        return 1;
    }
    w->rd = rd + rlen;
    return 0;
}

/* Group record i of an IGMPv3 or MLDv2 report, at w->rd: judged, and kept
 * (moved down to w->wr, sources refused taken out) or removed. */
static long mauth_rec_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();
    u32 rd, o, rtype, aux, nsrc, rlen, wr, kept;

    if (!w)
        return 1;
    rd = w->rd;
    if (rd + w->hdr > w->end) {
        w->err = 1;
        return 1;
    }
    o = rd & MAUTH_RECV_MASK;
    rtype = w->buf[o];
    aux = w->buf[(o + 1) & MAUTH_RECV_MASK];
    nsrc = mauth_rb16(w, o + 2);
    rlen = w->hdr + nsrc * w->width + aux * 4;
    if (rd + rlen > w->end) {
        w->err = 1;
        return 1;
    }
    mauth_recv_group_at(w, o + 4);
    w->rd = rd + rlen;
    if (rtype == 0 || rtype > MAUTH_REC_BLOCK) {  /* not a join of any group, link scope or not */
        w->bad += 1;
        goto removed;
    }
    if (mauth_recv_link_scope(w) || rtype == MAUTH_REC_BLOCK)
        goto keep;
    if ((rtype == MAUTH_REC_IS_IN || rtype == MAUTH_REC_TO_IN) && !nsrc) {
        mauth_recv_left(w);
        goto keep;
    }
    if (rtype == MAUTH_REC_IS_EX || rtype == MAUTH_REC_TO_EX) {
        __builtin_memset(w->dkey.src, 0, sizeof(w->dkey.src));
        if (mauth_recv_judge(0))
            goto removed;
        goto keep;
    }
    /* IS_IN, TO_IN, ALLOW with sources: each one judged. */
    wr = w->wr;
    mauth_recv_move(w, rd, wr, w->hdr);
    w->srd = rd + w->hdr;
    w->swr = wr + w->hdr;
    w->kept = 0;
    bpf_loop(nsrc, mauth_src_cb, NULL, 0);
    w = mauth_work();
    if (!w)
        return 1;
    kept = w->kept;
    if (kept == nsrc) {
        mauth_recv_move(w, w->srd + nsrc * w->width, w->swr + kept * w->width, aux * 4);
        w->wr = wr + rlen;
        w->records += 1;
        return 0;
    }
    w->removed = 1;
    if (!kept && rtype != MAUTH_REC_TO_IN)
        return 0;  /* nothing left of it */
    if (!kept)
        mauth_recv_left(w);  /* TO_IN with no source: a leave */
    mauth_wb16(w, wr + 2, kept);
    mauth_recv_move(w, w->srd + nsrc * w->width, w->swr + kept * w->width, aux * 4);
    w->wr = wr + w->hdr + kept * w->width + aux * 4;
    w->records += 1;
    return 0;

keep:
    w = mauth_work();
    if (!w)
        return 1;
    mauth_recv_move(w, rd, w->wr, rlen);
    w->wr += rlen;
    w->records += 1;
    return 0;
removed:
    w = mauth_work();
    if (w)
        w->removed = 1;
    return 0;
}

/* One extension header of the IPv6 walk (as mauth_ipv6()'s, in buf). */
static long mauth_walk_cb(u32 i, void *unused)
{
    struct mauth_recv_work *w = mauth_work();
    u32 nh, off, o, hl;

    if (!w)
        return 1;
    nh = w->nh;
    if (!mauth_ipv6_ext(nh))
        return 1;
    off = w->rd;
    if ((nh == MAUTH_NEXTHDR_HOP && i > 0) || off + 8 > w->end) {
        w->err = 1;
        return 1;
    }
    o = off & MAUTH_RECV_MASK;
    if (nh == MAUTH_NEXTHDR_FRAGMENT) {
        hl = 8;
        w->frag = 1;
        w->later = (mauth_rb16(w, o + 2) & 0xfff8) != 0;
    } else if (nh == MAUTH_NEXTHDR_AUTH) {
        hl = ((u32)MAUTH_RB(w, o + 1) + 2) * 4;
    } else {
        hl = ((u32)MAUTH_RB(w, o + 1) + 1) * 8;
    }
    if (off + hl > w->end) {
        w->err = 1;
        return 1;
    }
    w->nh = w->buf[o];
    w->rd = off + hl;
    if (w->later)  /* a non-first fragment: what follows is not a header */
        return 1;
    return 0;
}

/* The interface's counters for a report judged in w, plus `extra` (a
 * MAUTH_RC_* index, or MAUTH_RC_MAX for none). */
static __always_inline void mauth_recv_count(struct mauth_recv_work *w, u32 extra)
{
    struct mauth_recv_state *st = bpf_map_lookup_elem(&mauth_recv_state, &w->ifindex);

    if (!st)
        return;
    __sync_fetch_and_add(&st->counters[MAUTH_RC_REPORTS], 1);
    if (w->allowed)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_KEPT], w->allowed);
    if (w->refused)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_REFUSED], w->refused);
    if (w->limited)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_LIMITED], w->limited);
    if (w->leaves)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_LEAVES], w->leaves);
    if (w->bad)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_MALFORMED], 1);
    if (extra == MAUTH_RC_REWRITTEN)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_REWRITTEN], 1);
    else if (extra == MAUTH_RC_DROPPED)
        __sync_fetch_and_add(&st->counters[MAUTH_RC_DROPPED], 1);
}

#define MAUTH_MLD(t) ((t) == 130 || (t) == 131 || (t) == 132 || (t) == 143)

/* A possible membership report (IGMP; ICMPv6 or an extension header on the
 * link-local branch; MLD on the routable one) of a frame of `len` bytes
 * whose IP header is at `l3off`: judged if its interface inspects, else
 * counted under `old` exactly as before. */
static __noinline int mauth_recv(struct xdp_md *ctx, u32 l3off, u32 old, u32 family, u64 len)
{
    u32 zero = 0, ifindex = ctx->ingress_ifindex, end, moff, mlen, t, word, reason, monitor;
    struct mauth_recv_gen *gen = bpf_map_lookup_elem(&mauth_recv_gen, &zero);
    struct mauth_recv_cfg *pol;
    struct mauth_recv_work *w;
    struct mauth_cfg *cfg;
    u64 sum;

    if (!gen || !gen->inspecting)
        return mauth_count(old, len);
    pol = bpf_map_lookup_elem(&mauth_recv_cfg, &ifindex);
    if (!pol || (pol->mode == MAUTH_RECV_OPEN && !pol->limit))
        return mauth_count(old, len);
    w = mauth_work();
    if (!w)
        return mauth_count(old, len);
    cfg = bpf_map_lookup_elem(&mauth_cfg, &zero);
    monitor = pol->mode == MAUTH_RECV_MONITOR || (cfg && cfg->mode == MAUTH_MODE_MONITOR);
    word = gen->word;
    w->mode = pol->mode;
    w->limit = pol->limit;
    w->freed = pol->freed;
    w->base = word & MAUTH_RECV_GEN_HALF ? MAUTH_MAX_RECV_RULES : 0;
    w->nrules = word & MAUTH_RECV_GEN_COUNT;
    if (w->nrules > MAUTH_MAX_RECV_RULES)
        w->nrules = MAUTH_MAX_RECV_RULES;
    w->ifindex = ifindex;
    w->family = family;
    w->refused = w->limited = w->allowed = w->leaves = w->bad = w->records = w->removed = w->err = 0;

    /* The fixed header, then the whole packet. */
    if (family == 4) {
        if (bpf_xdp_load_bytes(ctx, l3off, w->buf, 20))
            goto malformed;
        end = mauth_rb16(w, 2);
        moff = (w->buf[0] & 0x0f) * 4;
        w->hdr = 8;
        w->width = 4;
    } else {
        if (bpf_xdp_load_bytes(ctx, l3off, w->buf, 40))
            goto malformed;
        end = 40 + mauth_rb16(w, 4);
        moff = 40;
        w->hdr = 20;
        w->width = 16;
        if (w->buf[6] == MAUTH_NEXTHDR_ICMP) {  /* NDP and the like: look at the type only */
            if (bpf_xdp_load_bytes(ctx, l3off + 40, &w->buf[40], 1))
                goto malformed;
            if (!MAUTH_MLD(w->buf[40]))
                return mauth_count(old, len);
        }
    }
    if (end > MAUTH_RECV_BUF || end < moff || l3off + end > len)
        goto malformed;
    asm volatile("" : "+r"(end));
    end &= MAUTH_RECV_BUF * 2 - 1;
    if (end < 20 || end > MAUTH_RECV_BUF)
        goto malformed;
    if (bpf_xdp_load_bytes(ctx, l3off, w->buf, end))
        goto malformed;
    w = mauth_work();
    if (!w)
        return mauth_count(old, len);
    w->end = end;
    if (family == 4) {
        if (mauth_rb16(w, 6) & 0x3fff)  /* a fragment */
            goto malformed;
        w->dkey.rcv[0] = mauth_rb32(w, 12);
        w->dkey.rcv[1] = w->dkey.rcv[2] = w->dkey.rcv[3] = 0;
    } else {
        w->nh = w->buf[6];
        w->rd = 40;
        w->frag = w->later = 0;
        bpf_loop(MAUTH_IPV6_MAX_EXT, mauth_walk_cb, NULL, 0);
        w = mauth_work();
        if (!w)
            return mauth_count(old, len);
        if (w->later)  /* a non-first fragment: not known to be MLD */
            return mauth_count(old, len);
        if (w->err || mauth_ipv6_ext(w->nh))
            goto malformed;
        if (w->nh != MAUTH_NEXTHDR_ICMP)
            return mauth_count(old, len);
        moff = w->rd;
        if (moff + 4 > end)
            goto malformed;
        if (!MAUTH_MLD(MAUTH_RB(w, moff)))
            return mauth_count(old, len);
        if (w->frag)
            goto malformed;
#pragma unroll
        for (int k = 0; k < 4; k++)
            w->dkey.rcv[k] = *(__be32 *)&w->buf[8 + 4 * k];
    }
    if (moff > end)
        goto malformed;
    mlen = end - moff;
    t = MAUTH_RB(w, moff);
    if (t == 0x11 || t == 130 || (family == 4 && t != 0x12 && t != 0x16 && t != 0x17 && t != 0x22))
        return mauth_count(old, len);  /* queries, and what is not a report, untouched */

    w->now = mauth_now();
    w->gkey.ifindex = w->dkey.ifindex = ifindex;
    w->gkey.family = w->dkey.family = family;
    if (mlen < (family == 4 || t == 143 ? 8 : 24))
        goto malformed;
    sum = mauth_recv_sum(w, moff, mlen);
    if (family == 6)
        sum += mauth_pseudo6(w, mlen);
    if (mauth_fold(sum) != 0xffff)
        goto malformed;

    if (t != 0x22 && t != 143) {
        /* IGMPv1/v2 report or leave, MLDv1 report or done: one group. */
        w->version = t == 0x12 || family == 6 ? 1 : 2;
        mauth_recv_group_at(w, moff + (family == 4 ? 4 : 8));
        if (t == 0x17 || t == 132) {
            if (!mauth_recv_link_scope(w))
                mauth_recv_left(w);
        } else if (!mauth_recv_link_scope(w)) {
            __builtin_memset(w->dkey.src, 0, sizeof(w->dkey.src));
            if (mauth_recv_judge(0)) {
                w = mauth_work();
                if (!w)
                    return XDP_DROP;
                reason = w->refused ? MAUTH_R_JOIN_REFUSED : MAUTH_R_JOIN_LIMIT;
                mauth_recv_count(w, MAUTH_RC_DROPPED);
                mauth_count(reason, len);
                return monitor ? XDP_PASS : XDP_DROP;
            }
            w = mauth_work();
            if (!w)
                return mauth_count(old, len);
        }
        mauth_recv_count(w, MAUTH_RC_MAX);
        return mauth_count(old, len);
    }

    /* IGMPv3, MLDv2: the records in order, kept ones moved down. */
    w->version = family == 4 ? 3 : 2;
    w->rd = moff + 8;
    bpf_loop(mauth_rb16(w, moff + 6), mauth_rec_len_cb, NULL, 0);
    w = mauth_work();
    if (!w)
        return XDP_DROP;
    if (w->err || w->rd != end)  /* a record past the end, or bytes after the last */
        goto malformed;
    w->rd = w->wr = moff + 8;
    bpf_loop(mauth_rb16(w, moff + 6), mauth_rec_cb, NULL, 0);
    w = mauth_work();
    if (!w)
        return XDP_DROP;
    if (w->err)
        goto malformed;
    if (!w->removed) {
        mauth_recv_count(w, MAUTH_RC_MAX);
        return mauth_count(old, len);
    }
    reason = w->refused ? MAUTH_R_JOIN_REFUSED : w->limited ? MAUTH_R_JOIN_LIMIT : MAUTH_R_MALFORMED;
    mauth_count(reason, len);
    if (!w->records) {
        mauth_recv_count(w, MAUTH_RC_DROPPED);
        return monitor ? XDP_PASS : XDP_DROP;
    }
    mauth_recv_count(w, MAUTH_RC_REWRITTEN);
    if (monitor)
        return XDP_PASS;

    /* The report as kept: count, lengths, checksums; then the frame. */
    end = w->wr;
    if (end > MAUTH_RECV_BUF || end < moff + 8 || moff > MAUTH_RECV_BUF)
        return XDP_DROP;
    mlen = end - moff;
    mauth_wb16(w, moff + 6, w->records);
    mauth_wb16(w, moff + 2, 0);
    if (family == 4) {
        u16 old_len = *(u16 *)&w->buf[2], new_len, *hc = (u16 *)&w->buf[10];
        u32 s;

        mauth_wb16(w, 2, end);
        new_len = *(u16 *)&w->buf[2];
        s = (u16)~*hc + (u16)~old_len + new_len;  /* RFC 1624, eqn. 3 */
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        *hc = ~s;
        sum = mauth_recv_sum(w, moff, mlen);
    } else {
        mauth_wb16(w, 4, end - 40);
        sum = mauth_recv_sum(w, moff, mlen) + mauth_pseudo6(w, mlen);
    }
    w = mauth_work();
    if (!w)
        return XDP_DROP;
    *(u16 *)&w->buf[(moff + 2) & MAUTH_RECV_MASK] = ~mauth_fold(sum);
    asm volatile("" : "+r"(end));
    end &= MAUTH_RECV_BUF * 2 - 1;
    if (end < 8 || end > MAUTH_RECV_BUF)
        return XDP_DROP;
    if (bpf_xdp_store_bytes(ctx, l3off, w->buf, end))
        return XDP_DROP;
    if (l3off + end < len && bpf_xdp_adjust_tail(ctx, (int)(l3off + end) - (int)len))
        return XDP_DROP;
    return XDP_PASS;

malformed:
    w = mauth_work();
    if (w) {
        w->bad = 1;
        mauth_recv_count(w, MAUTH_RC_DROPPED);
    }
    mauth_count(MAUTH_R_MALFORMED, len);
    return monitor ? XDP_PASS : XDP_DROP;
}

#define MAUTH_SAP6_IS(n, w)                                                      \
    ((w)[0] == mauth_opts.sap6[n][0] && (w)[1] == mauth_opts.sap6[n][1] &&       \
     (w)[2] == mauth_opts.sap6[n][2] && (w)[3] == mauth_opts.sap6[n][3])

/* The IPv6 half of the policy (the table at the top of this file). */
static __always_inline int mauth_ipv6(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *data_end,
                                      u64 len)
{
    struct ipv6hdr *ip6 = l3;
    struct mauth_key6 key;
    struct mauth_cfg *cfg = NULL;
    struct mauth_rule *rule;
    struct udphdr *udp;
    u32 zero = 0, reason, end, off = sizeof(*ip6), hlen, walk;
    u8 nexthdr, frag = 0, later = 0, ttl;
    u8 *h;

    if ((void *)(ip6 + 1) > data_end)
        return mauth_count(MAUTH_R_MALFORMED, len);
    if (ip6->version != 6)
        return mauth_count(MAUTH_R_MALFORMED, len);
    if (ip6->daddr.s6_addr[0] != 0xff)
        return mauth_count(MAUTH_R_NOT_MULTICAST, len);
    if ((ip6->daddr.s6_addr[1] & 0x0f) <= 2) {
        /* MLDv2 reports go to ff02::16: a report may hide here. */
        if (ip6->nexthdr == MAUTH_NEXTHDR_ICMP || mauth_ipv6_ext(ip6->nexthdr))
            return mauth_recv(ctx, l3 - (void *)eth, MAUTH_R_LINK_LOCAL, 6, len);
        return mauth_count(MAUTH_R_LINK_LOCAL, len);
    }

    /* Routable multicast: every header up to the upper layer must be
     * inside the payload, and the payload inside the frame. */
    end = sizeof(*ip6) + mauth_len16(ip6->payload_len);
    if (l3 + end > data_end)
        goto malformed;
    nexthdr = ip6->nexthdr;
#pragma unroll
    for (int i = 0; i < MAUTH_IPV6_MAX_EXT; i++) {
        if (!mauth_ipv6_ext(nexthdr))
            goto walked;
        if (nexthdr == MAUTH_NEXTHDR_HOP && i > 0)
            goto malformed;
        h = l3 + off;
        if ((void *)(h + 8) > data_end)  /* every extension header has 8 bytes or more */
            goto malformed;
        if (nexthdr == MAUTH_NEXTHDR_FRAGMENT) {
            hlen = 8;
            frag = 1;
            later = (*(__be16 *)(h + 2) & MAUTH_BE16(0xfff8)) != 0;
        } else if (nexthdr == MAUTH_NEXTHDR_AUTH) {
            hlen = ((u32)h[1] + 2) * 4;
        } else {
            hlen = ((u32)h[1] + 1) * 8;
        }
        if (off + hlen > end)
            goto malformed;
        nexthdr = h[0];
        off += hlen;
        if (later)  /* a non-first fragment: what follows is not a header */
            goto walked;
    }
    if (mauth_ipv6_ext(nexthdr))
        goto malformed;
walked:
    /* The walk can end in dozens of ways, each with its own exactly known
     * offsets, and the verifier would check everything below once for each
     * (666,000 instructions and 1.6 s of every load). Its result goes
     * through mauth_forget(), so everything below sees one unknown word and
     * is checked once; the bounds the code below needs are checked again. */
    walk = mauth_forget(off | (u32)nexthdr << 16 | (u32)frag << 24 | (u32)later << 25);
    off = walk & 0xffff;
    nexthdr = walk >> 16;
    frag = (walk >> 24) & 1;
    later = (walk >> 25) & 1;
    if (off > sizeof(*ip6) + MAUTH_IPV6_MAX_EXT * 2048 || off > end)
        goto malformed;
    ttl = ip6->hop_limit;
    h = l3 + off;
    if (nexthdr == MAUTH_NEXTHDR_ICMP && !later && ttl == 1 && off < end && (void *)(h + 1) <= data_end) {
        u32 mld = MAUTH_MLD(h[0]);

        /* The barrier keeps clang from testing the type again after the
         * call, on a path where the packet pointers are gone (mauth_recv()
         * may change the packet, so the verifier forgets them). */
        asm volatile("" : "+r"(mld));
        if (mld)
            return mauth_recv(ctx, l3 - (void *)eth, MAUTH_R_MLD, 6, len);
    }

    __builtin_memcpy(key.src, &ip6->saddr, sizeof(key.src));
    __builtin_memcpy(key.grp, &ip6->daddr, sizeof(key.grp));
    rule = bpf_map_lookup_elem(&mauth_rules6, &key);
    if (!rule) {
        cfg = bpf_map_lookup_elem(&mauth_cfg, &zero);
        if (cfg && (cfg->prefixes & (MAUTH_CFG_SRC_PREFIXES6 | MAUTH_CFG_GRP_PREFIXES6)))
            rule = mauth_prefix_rule6(&key, cfg->prefixes);
    }
    if (rule) {
        struct mauth_origin o = {
            .ctx = ctx, .mac_hi = *(u32 *)&eth->h_source[0], .mac_lo = *(u16 *)&eth->h_source[4],
            .src = key.src, .v6 = 1,
        };

        reason = mauth_rule_verdict(rule, ttl, len, &o);
    } else {
        reason = MAUTH_R_UNAUTHORIZED;
    }
    if (reason == MAUTH_R_PASSED)
        return mauth_count(MAUTH_R_PASSED, len);

    if (!cfg)  /* looked up already when the exact rule was missing */
        cfg = bpf_map_lookup_elem(&mauth_cfg, &zero);
    udp = l3 + off;
    if (nexthdr == IPPROTO_UDP && !frag && off + sizeof(*udp) <= end && (void *)(udp + 1) <= data_end &&
        udp->dest == MAUTH_BE16(MAUTH_SAP_PORT) &&
        (MAUTH_SAP6_IS(0, key.grp) || MAUTH_SAP6_IS(1, key.grp) ||
         MAUTH_SAP6_IS(2, key.grp) || MAUTH_SAP6_IS(3, key.grp))) {
        if (ttl > 1 && !(cfg && cfg->mode == MAUTH_MODE_MONITOR))
            ip6->hop_limit = 1;
        return mauth_count(MAUTH_R_SAP_LOCAL, len);
    }
    mauth_note_denied6(&key, cfg ? cfg->denied_seed : 0, ttl, reason, len);
    return mauth_deny(cfg, reason, len);

malformed:
    return mauth_deny(bpf_map_lookup_elem(&mauth_cfg, &zero), MAUTH_R_MALFORMED, len);
}


/* The IPv4 half of the policy (the table at the top of this file). */
static __always_inline int mauth_ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *l3, void *data_end,
                                      u64 len)
{
    struct iphdr *ip = l3;
    struct mauth_key4 key = {};
    struct mauth_cfg *cfg;
    struct mauth_rule *rule;
    u32 zero = 0, reason, ihl, tot;
    u8 ttl, *dst;

    if ((void *)(ip + 1) > data_end)
        return mauth_count(MAUTH_R_MALFORMED, len);
    ihl = ip->ihl;
    if (ip->version != 4 || ihl < 5)
        return mauth_count(MAUTH_R_MALFORMED, len);
    if (l3 + ihl * 4 > data_end)
        return mauth_count(MAUTH_R_MALFORMED, len);
    tot = mauth_len16(ip->tot_len);
    if (tot < ihl * 4 || l3 + tot > data_end)
        return mauth_count(MAUTH_R_MALFORMED, len);

    dst = (u8 *)&ip->daddr;
    if ((dst[0] & 0xf0) != 0xe0)
        return mauth_count(MAUTH_R_NOT_MULTICAST, len);
    if (dst[0] == 224 && dst[1] == 0 && dst[2] == 0) {
        if (ip->protocol == IPPROTO_IGMP)  /* IGMPv3 reports go to 224.0.0.22 */
            return mauth_recv(ctx, l3 - (void *)eth, MAUTH_R_LINK_LOCAL, 4, len);
        return mauth_count(MAUTH_R_LINK_LOCAL, len);
    }
    if (ip->protocol == IPPROTO_IGMP)
        return mauth_recv(ctx, l3 - (void *)eth, MAUTH_R_IGMP, 4, len);

    ttl = ip->ttl;
    key.src = ip->saddr;
    key.grp = ip->daddr;
    rule = bpf_map_lookup_elem(&mauth_rules4, &key);
    if (!rule) {
        cfg = bpf_map_lookup_elem(&mauth_cfg, &zero);
        if (cfg && cfg->prefixes)
            rule = mauth_prefix_rule(&key, cfg->prefixes);
        if (!rule) {
            reason = MAUTH_R_UNAUTHORIZED;
            goto deny;
        }
    }
    {
        struct mauth_origin o = {
            .ctx = ctx, .mac_hi = *(u32 *)&eth->h_source[0], .mac_lo = *(u16 *)&eth->h_source[4],
            .src = &key.src, .v6 = 0,
        };

        reason = mauth_rule_verdict(rule, ttl, len, &o);
    }
    if (reason == MAUTH_R_PASSED)
        return mauth_count(MAUTH_R_PASSED, len);
    cfg = bpf_map_lookup_elem(&mauth_cfg, &zero);
deny:
    if (mauth_is_sap(ip, l3, ihl, data_end)) {
        if (ttl > 1 && !(cfg && cfg->mode == MAUTH_MODE_MONITOR))
            mauth_ttl_to_one(ip);
        return mauth_count(MAUTH_R_SAP_LOCAL, len);
    }
    mauth_note_denied(&key, cfg ? cfg->denied_seed : 0, ttl, reason, len);
    return mauth_deny(cfg, reason, len);
}

SEC("xdp")
int mauth_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u64 len = data_end - data;
    struct ethhdr *eth = data;
    struct mauth_vlan_hdr *vh;
    void *l3;
    u16 proto;

    if ((void *)(eth + 1) > data_end)
        return mauth_count(MAUTH_R_MALFORMED, len);
    proto = eth->h_proto;
    l3 = eth + 1;

#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != MAUTH_BE16(ETH_P_8021Q) && proto != MAUTH_BE16(ETH_P_8021AD))
            break;
        vh = l3;
        if ((void *)(vh + 1) > data_end)
            return mauth_count(MAUTH_R_MALFORMED, len);
        proto = vh->encap_proto;
        l3 = vh + 1;
    }

    if (proto == MAUTH_BE16(ETH_P_IP))
        return mauth_ipv4(ctx, eth, l3, data_end, len);
    if (proto == MAUTH_BE16(ETH_P_IPV6))
        return mauth_ipv6(ctx, eth, l3, data_end, len);
    return mauth_count(MAUTH_R_NOT_IP, len);
}

char LICENSE[] SEC("license") = "GPL";
